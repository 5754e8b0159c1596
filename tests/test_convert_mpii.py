"""MPII (common JSON layout) -> TFRecords: 1-based coordinates, person boxes, head sizes."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import scipy.io
import tensorflow as tf

from keras_pose.cli import convert_main
from keras_pose.data import tfrecord
from keras_pose.data.convert import ConversionError, convert_mpii
from keras_pose.data.dataset import make_dataset
from keras_pose.keypoints import MPII16

K = MPII16.num_keypoints
NECK, HEAD_TOP = MPII16.head


def convert(annotations, images, out, split="val", **kwargs):
    messages: list[str] = []
    kwargs.setdefault("workers", 1)
    kwargs.setdefault("crop_size", 64)
    manifest = convert_mpii(annotations, images, out, split, progress=False,
                            log=messages.append, **kwargs)
    return manifest, messages


def read_records(out, split="val"):
    batches = list(make_dataset(str(out / f"{split}-*.tfrecord"), batch_size=16,
                                num_keypoints=K, training=False))
    records = {k: np.concatenate([b[k].numpy() for b in batches]) for k in batches[0]}
    order = np.argsort(records["annotation_id"])
    return {k: v[order] for k, v in records.items()}


def head_box_mat(path, entries, pad=10.0, joints_of=None):
    """A gt_valid.mat-style file: head boxes around the upper neck and head top (MATLAB
    coordinates), with pos_gt_src / jnt_missing from ``joints_of`` (default: the entries)."""
    joints = np.array([e["joints"] for e in (joints_of or entries)], np.float64)  # [N, 16, 2]
    vis = np.array([e["joints_vis"] for e in (joints_of or entries)])
    head = joints[:, [NECK, HEAD_TOP]]
    low, high = head.min(axis=1) - pad, head.max(axis=1) + pad  # [N, 2]
    boxes = np.stack([low, high], axis=1)  # [N, 2 corners, 2 coords]
    scipy.io.savemat(path, {"headboxes_src": boxes.transpose(1, 2, 0),
                            "pos_gt_src": joints.transpose(1, 2, 0),
                            "jnt_missing": (1 - vis).T})
    return 0.6 * np.linalg.norm(high - low, axis=-1)


# ---------------------------------------------------------------------------------------------
# The MPII sample (real images)


def test_mpii_sample_records_use_the_minus_half_convention(mpii_sample, tmp_path):
    entries = json.loads((mpii_sample / "annotations.json").read_text())
    manifest, messages = convert(mpii_sample / "annotations.json", mpii_sample / "images",
                                 tmp_path / "out")
    assert messages == [] and manifest.num_records == len(entries) == 5
    assert manifest.keypoint_set == "mpii16" and manifest.source["format"] == "mpii"
    assert manifest.head_size["source"] == "keypoints"
    assert "upper_neck to head_top" in manifest.head_size["description"]
    records = read_records(tmp_path / "out")
    assert records["annotation_id"].tolist() == [1, 2, 3, 4, 5]
    for r, entry in enumerate(entries):
        assert records["filename"][r].decode() == entry["image"]
        labeled = np.asarray(entry["joints_vis"]) > 0
        joints = np.asarray(entry["joints"], np.float64)
        np.testing.assert_array_equal(records["visibility"][r], np.where(labeled, 2, 0))
        # MATLAB 1-based -> continuous: -0.5.
        np.testing.assert_allclose(records["image_keypoints"][r][labeled],
                                   joints[labeled] - 0.5, atol=1e-3)
        assert np.all(records["image_keypoints"][r][~labeled] == 0)
        box = records["crop_box"][r]
        back = box[:2] + records["keypoints"][r] * box[2] / 64
        np.testing.assert_allclose(back[labeled], joints[labeled] - 0.5, atol=1e-2)
        # Square of 200 * scale, 15 * scale below the centre; crop = 1.25 x that.
        scale = entry["scale"]
        cx, cy = entry["center"][0] - 0.5, entry["center"][1] - 0.5 + 15 * scale
        side = 1.25 * 200 * scale
        np.testing.assert_allclose(box, [cx - side / 2, cy - side / 2, side, side], rtol=1e-5)
        assert records["head_size"][r] == pytest.approx(
            np.linalg.norm(joints[NECK] - joints[HEAD_TOP]), rel=1e-5)
    truth = json.loads((tmp_path / "out" / "val.annotations.json").read_text())
    assert sorted((i["file_name"], i["height"]) for i in truth["images"]) == sorted(
        (e["image"], cv2.imread(str(mpii_sample / "images" / e["image"])).shape[0])
        for e in entries)


def test_head_sizes_from_a_head_box_file(mpii_sample, tmp_path, capsys):
    entries = json.loads((mpii_sample / "annotations.json").read_text())
    expected = head_box_mat(tmp_path / "gt_val.mat", entries)
    status = convert_main([
        "--format", "mpii", "--annotations", str(mpii_sample / "annotations.json"),
        "--images", str(mpii_sample / "images"), "--head-boxes", str(tmp_path / "gt_val.mat"),
        "--range", "2-4", "--output", str(tmp_path / "out"), "--split", "val",
        "--crop-size", "32", "--workers", "1", "--quiet"])
    assert status == 0 and "wrote 3 records" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "val.manifest.json").read_text())
    assert manifest["head_size"]["source"] == "head_boxes"
    assert manifest["source"]["head_boxes"]["path"] == str(tmp_path / "gt_val.mat")
    assert manifest["source"]["image_range"] == [2, 4]
    records = read_records(tmp_path / "out")
    assert records["annotation_id"].tolist() == [2, 3, 4]
    np.testing.assert_allclose(records["head_size"], expected[1:4], rtol=1e-5)
    truth = json.loads((tmp_path / "out" / "val.annotations.json").read_text())
    np.testing.assert_allclose([a["head_size"] for a in truth["annotations"]], expected[1:4])


@pytest.mark.parametrize("case, text", [
    ("wrong_count", "variable 'headboxes_src' must be a numeric array of shape (2, 2, 5)"),
    ("other_order", "differ from the annotation file's"),
    ("missing", "no variable 'headboxes_src'"),
])
def test_bad_head_box_file_is_an_error_naming_it(mpii_sample, tmp_path, case, text):
    entries = json.loads((mpii_sample / "annotations.json").read_text())
    path = tmp_path / "gt_val.mat"
    if case == "wrong_count":
        head_box_mat(path, entries[:4])
    elif case == "other_order":
        head_box_mat(path, entries, joints_of=entries[::-1])
    else:
        scipy.io.savemat(path, {"pos_gt_src": np.zeros((16, 2, 5))})
    with pytest.raises(ConversionError) as error:
        convert(mpii_sample / "annotations.json", mpii_sample / "images", tmp_path / "out",
                head_boxes=path)
    assert str(path) in str(error.value) and text in str(error.value)


# ---------------------------------------------------------------------------------------------
# Generated images: the -0.5 lands on the right pixels; bad JSON


def test_minus_half_lands_on_the_annotated_pixel(tmp_path):
    # A blob centred on the pixel MATLAB calls (41, 23) = 0-based index (40, 22) = continuous
    # (40.5, 22.5); the crop's blob centroid must sit on the recorded head top.
    width, height, centre = 80, 60, (40.5, 22.5)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    blob = 255 * np.exp(-((cols - centre[0]) ** 2 + (rows - centre[1]) ** 2) / (2 * 1.5 ** 2))
    image = np.repeat(np.round(blob).astype(np.uint8)[:, :, None], 3, axis=2)
    (tmp_path / "images").mkdir()
    ok, png = cv2.imencode(".png", image)
    (tmp_path / "images" / "a.jpg").write_bytes(png.tobytes())
    joints = [[30.0, 50.0]] * K
    joints[HEAD_TOP] = [41.0, 23.0]
    entry = {"image": "a.jpg", "joints": joints, "joints_vis": [1] * K,
             "center": [41.0, 28.0], "scale": 0.12}  # 24 px person: crop 30 px -> 64 px
    (tmp_path / "ann.json").write_text(json.dumps([entry]))
    convert(tmp_path / "ann.json", tmp_path / "images", tmp_path / "out")
    record = read_records(tmp_path / "out")
    point = record["keypoints"][0][HEAD_TOP]
    gray = record["image"][0].astype(np.float64).mean(axis=-1)
    x0, y0 = int(point[0]) - 10, int(point[1]) - 10
    assert x0 >= 0 and y0 >= 0 and x0 + 21 <= 64 and y0 + 21 <= 64
    window = np.clip(gray[y0:y0 + 21, x0:x0 + 21] - 8, 0, None)
    r, c = np.mgrid[0:21, 0:21]
    centroid = [(window * (c + x0 + 0.5)).sum() / window.sum(),
                (window * (r + y0 + 0.5)).sum() / window.sum()]
    np.testing.assert_allclose(centroid, point, atol=0.3)  # 0.5 image px = 1 crop px here


@pytest.mark.parametrize("content, text", [
    ("{", "is not valid JSON"),
    ('{"a": 1}', "the top level is a dict"),
    ('[{"image": "a.jpg"}]', "entry 0 lacks ['joints', 'joints_vis', 'center', 'scale']"),
    ('[{"image": "a.jpg", "joints": [[1, 2]], "joints_vis": [1], "center": [1, 1], '
     '"scale": 1}]', "entry 0 (image 'a.jpg'): 'joints' must be 16 [x, y] number pairs"),
])
def test_bad_json_is_an_error_naming_the_file(tmp_path, content, text):
    (tmp_path / "ann.json").write_text(content)
    (tmp_path / "images").mkdir()
    with pytest.raises(ConversionError) as error:
        convert(tmp_path / "ann.json", tmp_path / "images", tmp_path / "out")
    assert str(tmp_path / "ann.json") in str(error.value) and text in str(error.value)


# ---------------------------------------------------------------------------------------------
# The record field


def test_records_without_head_size_still_parse():
    # A record as written before the field existed: every feature but person/head_size.
    record = tfrecord.PersonRecord(
        image_jpeg=b"x", crop_size=8, image_id=1, filename="a.jpg", image_height=8,
        image_width=8, crop_box=np.zeros(4), keypoints_crop=np.zeros((K, 2)),
        keypoints_image=np.zeros((K, 2)), visibility=np.zeros(K), bbox=np.zeros(4), area=1.0,
        annotation_id=7, head_size=12.5)
    example = tf.train.Example.FromString(tfrecord.serialize_person(record))
    new = tfrecord.parse_batch(tf.constant([example.SerializeToString()]), K)
    assert new["head_size"].numpy().tolist() == [12.5]
    del example.features.feature["person/head_size"]
    old = tfrecord.parse_batch(tf.constant([example.SerializeToString()]), K)
    assert old["head_size"].numpy().tolist() == [0.0]
    assert old["annotation_id"].numpy().tolist() == [7]
