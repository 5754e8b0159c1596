"""Records with context around the crop: exact keypoints, real surroundings, old records, checks."""

from __future__ import annotations

import json
import math
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf
from tiny_pose import TinyHeatmapPose

from keras_pose import augment
from keras_pose.data import coco as coco_lib
from keras_pose.data import tfrecord
from keras_pose.data.convert import convert_coco
from keras_pose.data.dataset import make_dataset
from keras_pose.data.manifest import MANIFEST_VERSION, Manifest
from keras_pose.keypoints import COCO17
from keras_pose.pipeline import DataSection, load_pipeline
from keras_pose.training import inputs, run
from keras_pose.training.errors import RunError
from keras_pose.training.trainer import PoseTrainer

REPO = pathlib.Path(__file__).resolve().parents[1]
K = COCO17.num_keypoints
CROP = 256
# What the poster's ranges reach (augment.context_needed of the defaults: 2.093), rounded up
# as the shipped pipelines set it.
CONTEXT = 2.1


def _convert(coco_sample, out, context):
    return convert_coco(coco_sample / "person_keypoints_sample.json", coco_sample / "images",
                        out, "train", shards=1, workers=1, crop_size=CROP, context=context,
                        progress=False, log=lambda message: None)


def _batch(out, context):
    dataset = make_dataset(str(out / "train-*.tfrecord"), batch_size=64, num_keypoints=K,
                           training=False, deterministic=True, context=context)
    return next(iter(dataset))


@pytest.fixture(scope="module")
def sample_records(coco_sample, tmp_path_factory):
    """The COCO sample converted without context (as before) and with the poster's context."""
    root = tmp_path_factory.mktemp("context")
    plain = _convert(coco_sample, root / "plain", 1.0)
    wide = _convert(coco_sample, root / "wide", CONTEXT)
    return {"plain": (root / "plain", plain), "wide": (root / "wide", wide)}


def test_converter_stores_the_context_and_exact_keypoints(sample_records):
    plain_dir, plain = sample_records["plain"]
    wide_dir, wide = sample_records["wide"]
    pad = math.ceil((CONTEXT - 1) * CROP / 2)  # 140.8 -> 141 pixels a side
    assert wide.version == MANIFEST_VERSION
    assert (wide.context, wide.context_pad, wide.stored_size) == (CONTEXT, pad, 538)
    assert (plain.context, plain.context_pad, plain.stored_size) == (1.0, 0, CROP)
    old, new, stored = _batch(plain_dir, False), _batch(wide_dir, False), _batch(wide_dir, True)
    assert old["annotation_id"].numpy().tolist() == new["annotation_id"].numpy().tolist()
    assert new["context_pad"].numpy().tolist() == [pad] * 12
    assert tuple(stored["image"].shape) == (12, 538, 538, 3)
    # Keypoints, crop box and box are the crop's, bit for bit the same as without context.
    for key in ("keypoints", "image_keypoints", "crop_box", "bbox", "visibility"):
        np.testing.assert_array_equal(new[key].numpy(), old[key].numpy(), err_msg=key)
    # The reader without context decodes the stored image's crop window ...
    window = stored["image"].numpy()[:, pad:pad + CROP, pad:pad + CROP]
    np.testing.assert_array_equal(new["image"].numpy(), window)
    # ... which shows what the old crop showed (JPEG blocks and the area pre-shrink sit on
    # another grid: measured mean 2.5 grey levels apart).
    difference = np.abs(window.astype(np.float64) - old["image"].numpy())
    assert difference.mean() < 4.0

    # The no-op augmentation puts the keypoints where the old path put them.
    def resize(batch, crop_size):
        return augment.augment_batch(
            batch["image"], batch["keypoints"], batch["visibility"], input_size=128,
            config=None, flip_permutation=COCO17.flip_permutation, training=False,
            crop_size=crop_size)

    before, after = resize(old, None), resize(stored, CROP)
    np.testing.assert_allclose(after["keypoints"], before["keypoints"], atol=1e-3)
    centre = np.abs(np.asarray(after["images"]) - np.asarray(before["images"]))
    assert centre.mean() < 4.0


def test_stored_pixels_are_the_crop_pixels_at_the_same_scale():
    # A linear ramp: every stored pixel must hold the ramp at the image point it maps to.
    height, width = 300, 400
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.stack([xs * 0.5, ys * 0.5, np.full_like(xs, 100.0)], -1).astype(np.uint8)
    crop_box = coco_lib.crop_box_for_bbox(np.array([150.0, 100.0, 60.0, 80.0]), 1.25)
    crop_size, pad = 64, 16
    stored = coco_lib.crop_image(image, coco_lib.context_box(crop_box, crop_size, pad),
                                 crop_size + 2 * pad)
    crop = coco_lib.crop_image(image, crop_box, crop_size)
    assert stored.shape == (96, 96, 3)
    window = stored[pad:pad + crop_size, pad:pad + crop_size].astype(int)
    assert np.abs(window - crop).max() <= 1  # uint8 rounding of the same bilinear sample
    # A context pixel: stored pixel (2, 2) is crop coordinate 2.5 - pad, i.e. this image point.
    point = crop_box[:2] + (2.5 - pad) * crop_box[2] / crop_size
    assert stored[2, 2, 0] == pytest.approx(0.5 * (point[0] - 0.5), abs=1.0)
    assert stored[2, 2, 1] == pytest.approx(0.5 * (point[1] - 0.5), abs=1.0)


def test_zoom_out_shows_real_surroundings_where_old_records_were_black(sample_records):
    size = 128

    def zoomed(directory, context, crop_size):
        batch = _batch(directory, context)
        out = augment.augment_batch(
            batch["image"], batch["keypoints"], batch["visibility"], input_size=size,
            config=augment.AugmentConfig(), flip_permutation=COCO17.flip_permutation,
            seed=0, training=True, crop_size=crop_size,
            fixed={"scales": 0.7, "angles": 0.0, "translations": 0.0, "flips": False})
        return np.asarray(out["images"]), np.asarray(out["keypoints"])

    old_images, old_points = zoomed(sample_records["plain"][0], False, None)
    new_images, new_points = zoomed(sample_records["wide"][0], True, CROP)
    np.testing.assert_allclose(new_points, old_points, atol=1e-3)
    # At zoom 0.7 the crop fills the centre 0.7 of the input; the ring outside it came from
    # past the crop's edge: black in the old records, the photograph in the new ones.
    ring = np.ones((size, size), bool)
    inner = int(size * 0.15) - 1  # the crop's edge lies at 19.2 px; bilinear reads 1 px more
    ring[inner:size - inner, inner:size - inner] = False
    assert old_images[:, ring].max() == 0.0
    # Which ring pixels show the photograph: their image point (input -> crop -> image)
    # lies inside it, 2 px clear of its edge.
    batch = _batch(sample_records["wide"][0], False)
    centres = np.arange(size) + 0.5
    crop_x = ((centres - size / 2) / 0.7 + size / 2) * CROP / size
    in_photo, past_photo, lit = [], [], []
    for r in range(len(new_images)):
        x0, y0, side, _ = batch["crop_box"][r].numpy()
        height, width = batch["image_size"][r].numpy()
        xs, ys = x0 + crop_x * side / CROP, y0 + crop_x * side / CROP
        inside = ((ys[:, None] > 2) & (ys[:, None] < height - 2)
                  & (xs[None, :] > 2) & (xs[None, :] < width - 2))
        outside = ((ys[:, None] < -2) | (ys[:, None] > height + 2)
                   | (xs[None, :] < -2) | (xs[None, :] > width + 2))
        in_photo.append(inside[ring])
        past_photo.append(outside[ring])
        lit.append(new_images[r][ring].max(axis=-1))
    in_photo, past_photo = np.concatenate(in_photo), np.concatenate(past_photo)
    lit = np.concatenate(lit)
    assert in_photo.mean() > 0.5  # most of the ring lies inside the photographs
    assert np.mean(lit[in_photo] > 0) > 0.99  # ... and shows them
    # Black past the photograph's own edge (but for JPEG ringing of a few grey levels).
    assert np.mean(lit[past_photo] > 12) < 0.01


def _strip_context_field(directory):
    """Rewrite shards as records written before ``image/context_pad`` existed."""
    for path in directory.glob("train-*.tfrecord"):
        examples = []
        for serialized in tf.data.TFRecordDataset(str(path)):
            example = tf.train.Example.FromString(serialized.numpy())
            del example.features.feature["image/context_pad"]
            examples.append(example.SerializeToString())
        with tf.io.TFRecordWriter(str(path)) as writer:
            for data in examples:
                writer.write(data)


def test_old_records_without_context_still_read_and_train_as_before(sample_records, tmp_path):
    old_dir = tmp_path / "old"
    shutil.copytree(sample_records["plain"][0], old_dir)
    _strip_context_field(old_dir)
    example = tf.train.Example.FromString(
        next(iter(tf.data.TFRecordDataset(str(next(old_dir.glob("train-*.tfrecord")))))).numpy())
    assert "image/context_pad" not in example.features.feature
    old = _batch(old_dir, True)  # the trainer's reading: context, which old records lack
    assert tuple(old["image"].shape) == (12, CROP, CROP, 3)
    assert old["context_pad"].numpy().tolist() == [0] * 12
    np.testing.assert_array_equal(old["image"], _batch(sample_records["plain"][0], False)["image"])

    def prepared(crop_size):
        trainer = PoseTrainer(TinyHeatmapPose(num_keypoints=K, input_size=64),
                              keypoint_set=COCO17, augment_config=augment.AugmentConfig(),
                              seed=3, crop_size=crop_size)
        return trainer.prepare(old, training=True, step=5)

    with_crop, without = prepared(CROP), prepared(None)
    for key in ("images", "keypoints", "targets", "weights"):
        np.testing.assert_array_equal(np.asarray(with_crop[key]), np.asarray(without[key]))


def test_context_needed_is_the_farthest_point_any_draw_reaches():
    config = augment.AugmentConfig()  # the poster: 40 deg, zoom 0.7-1.3, shift 2 %
    needed = augment.context_needed(config)
    assert needed == pytest.approx(1.04 * (math.cos(math.radians(40)) +
                                           math.sin(math.radians(40))) / 0.7)
    # Brute force over the extreme draws: map the input's corners back into the crop.
    crop, size = 256, 256
    angles, shifts = np.radians(np.linspace(-40, 40, 81)), [-0.02 * size, 0.0, 0.02 * size]
    reach = 0.0
    for tx in shifts:
        for ty in shifts:
            n = len(angles)
            matrices = augment.compose_matrices(
                angles, np.full(n, 0.7), np.tile([[tx, ty]], (n, 1)), np.zeros(n, bool),
                crop_size=crop, input_size=size)
            corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float32)
            back = augment.apply_affine(np.tile(corners[None], (n, 1, 1)),
                                        augment.invert_affine(matrices))
            reach = max(reach, float(np.abs(np.asarray(back) - crop / 2).max()))
    assert 2 * reach / crop == pytest.approx(needed, rel=1e-4)
    hourglass = augment.AugmentConfig(distribution="clipped_normal", rotation=30, scale=0.25,
                                      scale_mode="log2", translation=0.0)
    assert augment.context_needed(hourglass) == pytest.approx(2.0)  # sqrt 2 / 2 ** -0.5
    assert augment.context_needed(augment.AugmentConfig(rotation=0, scale=0,
                                                        translation=0)) == 1.0


@pytest.mark.parametrize("name", ["chained_prediction_coco", "chained_prediction_resnet50_coco",
                                  "deeppose_coco", "lspet", "residual_stacked_hourglass_coco",
                                  "stacked_hourglass_coco", "stacked_hourglass_poster_coco"])
def test_shipped_pipelines_store_the_context_their_augmentation_reaches(name):
    pipeline = load_pipeline(REPO / "pipelines" / f"{name}.toml")
    needed = augment.context_needed(run.augment_config(pipeline))
    assert needed <= pipeline.data.context <= needed + 0.01


def _manifest(tmp_path, **values):
    path = tmp_path / "train.manifest.json"
    _records_manifest(**values).write(path)
    return path


def _records_manifest(**values) -> Manifest:
    fields = dict(split="train", num_records=1, num_images=1, shards=("train-00000-of-00001",),
                  records_per_shard=(1,), skipped={"count": 0, "reasons": {}, "messages": []},
                  keypoint_set="coco17", num_keypoints=17, keypoint_names=("nose",) * 17,
                  crop_size=256, margin=1.25, context=1.0, context_pad=0, stored_size=256,
                  min_keypoints=1, jpeg_quality=95, seed=0, source={"sha256": "abc"},
                  head_size={}, ground_truth={}, created="2026-01-01T00:00:00+00:00")
    return Manifest(**{**fields, **values})


def test_records_of_another_margin_or_crop_size_are_refused(tmp_path):
    data = DataSection(crop_size=256, margin=1.25)
    with pytest.raises(RunError, match=r"margin = 1\.5 .* \[data\] margin = 1\.25"):
        inputs.check_records_crop(_records_manifest(margin=1.5), data, "train_records")
    with pytest.raises(RunError, match=r"crop_size = 128 .* \[data\] crop_size = 256"):
        inputs.check_records_crop(_records_manifest(crop_size=128), data, "val_records")
    inputs.check_records_crop(_records_manifest(), data, "train_records")
    # The cache rule reconverts records of another context.
    data = DataSection(crop_size=256, margin=1.25, context=2.1)
    assert inputs._reusable_manifest(_manifest(tmp_path), "abc", data) is None
    assert inputs._reusable_manifest(_manifest(tmp_path, context=2.1), "abc", data) is not None


def test_a_run_on_records_of_another_margin_stops_before_training(tmp_path, coco_sample):
    records = tmp_path / "records"
    for split in ("train", "val"):
        convert_coco(coco_sample / "person_keypoints_sample.json", coco_sample / "images",
                     records, split, shards=1, workers=1, crop_size=32, margin=1.5,
                     progress=False, log=lambda message: None)
    pipeline = load_pipeline(None, [f'data.train_records="{records}/train-*.tfrecord"',
                                    f'data.val_records="{records}/val-*.tfrecord"',
                                    "data.crop_size=32"])
    with pytest.raises(RunError, match=r"margin = 1\.5 .*\[data\] margin = 1\.25"):
        run.train(pipeline, tmp_path / "run")


def test_record_schema_round_trips_the_pad():
    record = tfrecord.PersonRecord(
        image_jpeg=b"x", crop_size=8, image_id=1, filename="a.jpg", image_height=8,
        image_width=8, crop_box=np.zeros(4), keypoints_crop=np.zeros((K, 2)),
        keypoints_image=np.zeros((K, 2)), visibility=np.zeros(K), bbox=np.zeros(4), area=1.0,
        annotation_id=7, context_pad=5)
    parsed = tfrecord.parse_batch(tf.constant([tfrecord.serialize_person(record)]), K)
    assert parsed["context_pad"].numpy().tolist() == [5]


def test_trainer_reads_the_crop_inside_the_context(sample_records):
    def prepared(directory, context, crop_size):
        trainer = PoseTrainer(TinyHeatmapPose(num_keypoints=K, input_size=64),
                              keypoint_set=COCO17, augment_config=augment.AugmentConfig(),
                              crop_size=crop_size)
        return trainer.prepare(_batch(directory, context), training=False)

    crop = prepared(sample_records["wide"][0], False, CROP)
    stored = prepared(sample_records["wide"][0], True, CROP)
    for key in ("keypoints", "targets", "weights", "matrices"):
        np.testing.assert_allclose(np.asarray(stored[key]), np.asarray(crop[key]), atol=1e-5)
    # The same pixels, read through the stored image's crop window (resampling at 64 px of a
    # 256 px window touches the window's pixels only).
    np.testing.assert_allclose(np.asarray(stored["images"]), np.asarray(crop["images"]),
                               atol=1e-3)


@pytest.mark.slow
def test_a_run_converts_and_trains_on_records_with_context(tmp_path):
    from test_training import run_train, write_pipeline

    pipeline = write_pipeline(tmp_path, epochs=1, steps=2)
    out = tmp_path / "runs" / "tiny"
    result = run_train(["--pipeline", str(pipeline), "--output", str(out),
                        "--set", "data.context=1.5"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "synthetic" / "records-64" /
                           "train.manifest.json").read_text())
    assert (manifest["context"], manifest["context_pad"], manifest["stored_size"]) == (
        1.5, 16, 96)
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["val_pck_torso@0.2"] <= 1.0
