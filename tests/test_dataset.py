"""tf.data reader: shapes, dtypes, determinism, file sharding, errors, manifests."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from keras_pose.data.convert import convert_coco
from keras_pose.data.dataset import list_shards, make_dataset, read_manifest
from keras_pose.keypoints import COCO17

K = COCO17.num_keypoints
NUM_IMAGES, PERSONS_PER_IMAGE, SHARDS, CROP = 8, 2, 3, 48


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """16 person records (8 images x 2) in 3 shards of 48 px crops."""
    root = tmp_path_factory.mktemp("dataset")
    (root / "images").mkdir()
    images, anns = [], []
    for i in range(NUM_IMAGES):
        image = np.full((60, 90, 3), 20 * i, np.uint8)
        cv2.imwrite(str(root / "images" / f"{i}.jpg"), image)
        images.append({"id": 100 + i, "file_name": f"{i}.jpg", "width": 90, "height": 60})
        for p in range(PERSONS_PER_IMAGE):
            x = 5 + 40 * p
            flat = [0.0] * (3 * K)
            flat[0:3] = [x + 10.0, 20.0, 2]
            flat[3 * 9: 3 * 9 + 3] = [x + 5.0, 40.0, 1]
            anns.append({"id": 1000 + 10 * i + p, "image_id": 100 + i, "category_id": 1,
                         "iscrowd": 0, "bbox": [x, 10, 30, 40], "area": 1200.0,
                         "keypoints": flat, "num_keypoints": 2})
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17.names)}]}
    (root / "ann.json").write_text(json.dumps(data))
    convert_coco(root / "ann.json", root / "images", root / "out", "train", shards=SHARDS,
                 workers=1, crop_size=CROP, progress=False, log=lambda m: None)
    return root / "out"


def all_ids():
    return sorted(1000 + 10 * i + p for i in range(NUM_IMAGES) for p in range(PERSONS_PER_IMAGE))


def ids_of(dataset, batches=None):
    dataset = dataset if batches is None else dataset.take(batches)
    return [int(i) for b in dataset for i in b["annotation_id"].numpy()]


def test_shapes_dtypes_and_values(shards):
    dataset = make_dataset(str(shards / "train-*.tfrecord"), batch_size=5, num_keypoints=K,
                           training=False)
    batches = list(dataset)
    # One pass, remainder kept. The parallel map may hand batches out of order (deterministic
    # is off), so the short batch need not come last.
    assert sorted((b["image"].shape[0] for b in batches), reverse=True) == [5, 5, 5, 1]
    first = batches[0]
    expected = {
        "image": ((5, CROP, CROP, 3), tf.uint8), "keypoints": ((5, K, 2), tf.float32),
        "visibility": ((5, K), tf.int32), "image_keypoints": ((5, K, 2), tf.float32),
        "crop_box": ((5, 4), tf.float32), "bbox": ((5, 4), tf.float32),
        "area": ((5,), tf.float32), "image_id": ((5,), tf.int64),
        "annotation_id": ((5,), tf.int64), "image_size": ((5, 2), tf.int32),
        "filename": ((5,), tf.string), "head_size": ((5,), tf.float32),
        "context_pad": ((5,), tf.int32),
    }
    assert set(first) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert tuple(first[key].shape) == shape and first[key].dtype == dtype, key
    assert sorted(ids_of(dataset)) == all_ids()
    for batch in batches:
        for r in range(batch["image"].shape[0]):
            image_index = int(batch["image_id"][r]) - 100
            assert batch["filename"][r].numpy().decode() == f"{image_index}.jpg"
            assert batch["image_size"][r].numpy().tolist() == [60, 90]
            assert batch["visibility"][r].numpy()[[0, 9]].tolist() == [2, 1]
            # The crop centre holds the image's grey level (JPEG round trips: a few levels).
            centre = batch["image"][r].numpy()[20:28, 20:28].astype(float)
            assert abs(centre.mean() - 20 * image_index) < 4


def test_training_repeats_shuffles_and_has_a_static_batch(shards):
    def three_epochs(deterministic):
        dataset = make_dataset(str(shards / "train-*.tfrecord"), batch_size=4, num_keypoints=K,
                               training=True, shuffle_buffer=64, seed=1,
                               deterministic=deterministic)
        assert dataset.element_spec["image"].shape.as_list() == [4, CROP, CROP, 3]
        return ids_of(dataset, batches=12)

    ids = three_epochs(deterministic=True)
    assert len(ids) == 48
    for epoch in range(3):  # the shuffle comes before the repeat: each epoch is a permutation
        assert sorted(ids[16 * epoch: 16 * (epoch + 1)]) == all_ids()
    assert ids[:16] != ids[16:32]  # reshuffled every epoch
    assert ids[:16] != sorted(ids[:16])
    # Training's default lets the parallel map hand batches over out of order (an epoch's last
    # batch after the next epoch's first), so there only the records read are fixed.
    fast = three_epochs(deterministic=False)
    assert len(fast) == 48 and set(fast) == set(all_ids())


def test_deterministic_mode_repeats_exactly(shards):
    def run(seed):
        dataset = make_dataset(str(shards / "train-*.tfrecord"), batch_size=4,
                               num_keypoints=K, training=True, seed=seed, deterministic=True)
        return ids_of(dataset, batches=8)

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    evaluation = [ids_of(make_dataset(str(shards / "train-*.tfrecord"), batch_size=3,
                                      num_keypoints=K, training=False, deterministic=True))
                  for _ in range(2)]
    assert evaluation[0] == evaluation[1] and sorted(evaluation[0]) == all_ids()


def test_repeat_count_and_drop_remainder(shards):
    dataset = make_dataset(str(shards / "train-*.tfrecord"), batch_size=5, num_keypoints=K,
                           training=False, repeat=2, drop_remainder=True)
    assert [b["image"].shape[0] for b in dataset] == [5] * 6  # 32 records -> 6 full batches


def test_files_are_auto_shardable(shards):
    """tf.distribute's FILE auto-sharding gives each worker whole shard files."""
    from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

    files = list_shards(str(shards / "train-*.tfrecord"))
    assert len(files) == SHARDS
    dataset = make_dataset(str(shards / "train-*.tfrecord"), batch_size=2, num_keypoints=K,
                           training=False)
    for worker in range(SHARDS):
        sharded = _AutoShardDataset(dataset, num_workers=SHARDS, index=worker,
                                    num_replicas=SHARDS)
        expected = ids_of(make_dataset(files[worker], batch_size=2, num_keypoints=K,
                                       training=False))
        assert sorted(ids_of(sharded)) == sorted(expected) and expected


def test_missing_or_empty_glob_names_the_pattern(tmp_path, shards):
    pattern = str(tmp_path / "nothing-*.tfrecord")
    with pytest.raises(FileNotFoundError, match="No TFRecord files match .*nothing-"):
        make_dataset(pattern, batch_size=2, num_keypoints=K, training=True)
    with pytest.raises(FileNotFoundError, match="is a directory"):
        make_dataset(str(shards), batch_size=2, num_keypoints=K, training=False)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        make_dataset(str(shards / "train-*"), batch_size=0, num_keypoints=K, training=False)


def test_read_manifest_from_glob_dir_or_path(shards, tmp_path):
    by_glob = read_manifest(str(shards / "train-*.tfrecord"))
    assert by_glob.num_records == NUM_IMAGES * PERSONS_PER_IMAGE
    assert by_glob.crop_size == CROP and by_glob.keypoint_set == "coco17"
    assert by_glob.num_shards == SHARDS
    assert read_manifest(str(shards)) == by_glob
    assert read_manifest(str(shards / "train.manifest.json")) == by_glob
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "val-00000-of-00001.tfrecord").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="val.manifest.json"):
        read_manifest(str(lonely / "val-*.tfrecord"))
    with pytest.raises(FileNotFoundError, match="No \\*.manifest.json"):
        read_manifest(str(lonely))
    assert os.path.basename(by_glob.path) == "train.manifest.json"
