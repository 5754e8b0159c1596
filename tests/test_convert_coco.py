"""COCO -> TFRecord converter: counts, exact coordinates, bad input, atomic output."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import cv2
import numpy as np
import pytest

from keras_pose.cli import convert_coco_main
from keras_pose.data import coco as coco_lib
from keras_pose.data.convert import ConversionError, convert_coco
from keras_pose.data.dataset import make_dataset
from keras_pose.keypoints import COCO17

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = COCO17.num_keypoints


# ---------------------------------------------------------------------------------------------
# Fixture builders


def keypoints_flat(points: dict[int, tuple[float, float]], v: int = 2) -> list[float]:
    flat = [0.0] * (3 * K)
    for k, (x, y) in points.items():
        flat[3 * k: 3 * k + 3] = [x, y, v]
    return flat


def person(ann_id, image_id, bbox, points=None, **extra) -> dict:
    if points is None:
        x, y, w, h = bbox
        points = {0: (x + w / 2, y + h / 4), 5: (x + w / 3, y + h / 2)}
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "bbox": list(bbox), "area": bbox[2] * bbox[3], "keypoints": keypoints_flat(points),
            "num_keypoints": len(points), **extra}


def write_coco(tmp_path, images: dict[str, tuple[int, int, object]], annotations: list[dict]):
    """images: file_name -> (width, height, content); content is an array, bytes or None."""
    image_dir = tmp_path / "images"
    image_dir.mkdir(exist_ok=True)
    entries = []
    for image_id, (file_name, (width, height, content)) in enumerate(images.items(), start=1):
        entries.append({"id": image_id, "file_name": file_name, "width": width,
                        "height": height})
        if isinstance(content, bytes):
            (image_dir / file_name).write_bytes(content)
        elif content is not None:
            assert cv2.imwrite(str(image_dir / file_name), content)
    data = {"images": entries, "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17.names),
                            "skeleton": []}]}
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    return path, image_dir


def good_image(width=80, height=60, color=(40, 120, 200)):
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = color
    return image


def run_convert(ann, image_dir, out, **kwargs):
    messages = []
    kwargs.setdefault("workers", 1)
    manifest = convert_coco(ann, image_dir, out, "val", progress=False, log=messages.append,
                            **kwargs)
    return manifest, messages


def read_records(out, split="val", batch_size=64):
    batches = list(make_dataset(str(out / f"{split}-*.tfrecord"), batch_size=batch_size,
                                num_keypoints=K, training=False))
    return {k: np.concatenate([b[k].numpy() for b in batches]) for k in batches[0]}


def assert_nothing_written(out):
    leftovers = sorted(os.listdir(out)) if os.path.isdir(out) else []
    assert leftovers == [], leftovers


# ---------------------------------------------------------------------------------------------
# The COCO sample


def test_coco_sample_records_map_back_to_annotations(coco_sample, tmp_path):
    ann_path = coco_sample / "person_keypoints_sample.json"
    data = json.loads(ann_path.read_text())
    # Counted by hand from the json: 14 person annotations, none crowd, 2 with no labeled
    # keypoint (ids 1202706 and 508900) -> 12 records.
    expected = [a for a in data["annotations"]
                if not a["iscrowd"] and sum(v > 0 for v in a["keypoints"][2::3]) >= 1]
    assert len(expected) == 12

    manifest, messages = run_convert(ann_path, coco_sample / "images", tmp_path / "out",
                                     shards=2, workers=2)
    assert messages == []
    assert manifest.num_records == 12
    assert sum(manifest.records_per_shard) == 12 and len(manifest.shards) == 2
    assert manifest.skipped["count"] == 2
    assert manifest.skipped["reasons"] == {"too_few_keypoints": 2}
    assert manifest.keypoint_set == "coco17" and manifest.crop_size == 256
    assert manifest.source["sha256"] == hashlib.sha256(ann_path.read_bytes()).hexdigest()
    assert sorted(os.listdir(tmp_path / "out")) == [
        "val-00000-of-00002.tfrecord", "val-00001-of-00002.tfrecord", "val.manifest.json"]

    records = read_records(tmp_path / "out")
    by_id = {a["id"]: a for a in expected}
    assert sorted(records["annotation_id"].tolist()) == sorted(by_id)
    images = {i["id"]: i for i in data["images"]}
    labeled_total = 0
    for r in range(12):
        ann = by_id[int(records["annotation_id"][r])]
        points = np.asarray(ann["keypoints"], np.float64).reshape(K, 3)
        labeled = points[:, 2] > 0
        labeled_total += int(labeled.sum())
        np.testing.assert_array_equal(records["visibility"][r], points[:, 2])
        # COCO's keypoints are pixel indices: the records hold them continuous, index + 0.5.
        np.testing.assert_allclose(records["image_keypoints"][r][labeled],
                                   points[labeled, :2] + 0.5, atol=1e-3)
        box = records["crop_box"][r]
        mapped = box[:2] + records["keypoints"][r] * box[2] / 256.0
        np.testing.assert_allclose(mapped[labeled], points[labeled, :2] + 0.5, atol=1e-3)
        np.testing.assert_allclose(records["bbox"][r], ann["bbox"], atol=1e-3)
        x, y, w, h = ann["bbox"]
        np.testing.assert_allclose(box, [x + w / 2 - 0.625 * max(w, h),
                                         y + h / 2 - 0.625 * max(w, h),
                                         1.25 * max(w, h), 1.25 * max(w, h)], rtol=1e-5)
        info = images[ann["image_id"]]
        assert records["image_id"][r] == ann["image_id"]
        assert records["filename"][r].decode() == info["file_name"]
        assert records["image_size"][r].tolist() == [info["height"], info["width"]]
        assert records["area"][r] == pytest.approx(ann["area"], rel=1e-5)
    assert labeled_total == sum(a["num_keypoints"] for a in expected)
    assert records["image"].shape == (12, 256, 256, 3) and records["image"].dtype == np.uint8


def test_synthetic_dataset_converts_exactly(tmp_path):
    from keras_pose.data import synthetic

    ann_path = synthetic.make_synthetic_dataset(tmp_path / "synth", 6, seed=3, image_size=128,
                                                workers=1, progress=False)
    data = json.loads(ann_path.read_text())
    expected = {a["id"]: a for a in data["annotations"]
                if not a["iscrowd"] and sum(v > 0 for v in a["keypoints"][2::3]) >= 1}
    manifest, messages = run_convert(ann_path, ann_path.parent / "images", tmp_path / "out",
                                     crop_size=64)
    assert messages == [] and manifest.num_records == len(expected) > 0
    records = read_records(tmp_path / "out")
    assert sorted(records["annotation_id"].tolist()) == sorted(expected)
    for r, ann_id in enumerate(records["annotation_id"]):
        points = np.asarray(expected[int(ann_id)]["keypoints"], np.float64).reshape(K, 3)
        labeled = points[:, 2] > 0
        box = records["crop_box"][r]
        mapped = box[:2] + records["keypoints"][r] * box[2] / 64.0
        # The file's indices + 0.5: the continuous positions the generator drew at.
        np.testing.assert_allclose(mapped[labeled], points[labeled, :2] + 0.5, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Crop geometry


@pytest.mark.parametrize("box", [
    (10.3, 7.6, 20.0, 20.0),   # upscale 3.2x
    (5.0, 3.25, 45.7, 45.7),   # downscale 0.7x: bilinear only
    (2.5, 4.0, 96.3, 96.3),    # downscale 0.33x: integer area pre-pass, then bilinear
])
def test_crop_is_exact_on_a_linear_image(box):
    # A linear image f(x, y) = a x + b y sampled at pixel centres: area averaging and bilinear
    # interpolation reproduce it exactly, so any coordinate slip shows as a value error.
    height, width, a, b = 120, 110, 1.5, 0.75
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    image = (a * cols + b * rows).astype(np.float32)[:, :, None]
    crop_size = 32
    crop = coco_lib.crop_image(image, np.asarray(box), crop_size)[:, :, 0]
    centres = np.arange(crop_size) + 0.5
    xs = box[0] + centres * box[2] / crop_size
    ys = box[1] + centres * box[3] / crop_size
    expected = a * xs[None, :] + b * ys[:, None]
    inner = slice(2, crop_size - 2)  # away from the image border taps
    np.testing.assert_allclose(crop[inner, inner], expected[inner, inner], atol=2e-3)


def test_crop_outside_image_is_black():
    image = np.full((40, 40, 3), 200, np.uint8)
    crop = coco_lib.crop_image(image, np.array([-40.0, 0.0, 80.0, 80.0]), 16)
    assert crop.shape == (16, 16, 3)
    assert np.all(crop[:, :7] == 0)          # image x < 0
    assert np.all(crop[:8, 9:] == 200)       # inside the image
    assert np.all(crop[9:, :] == 0)          # image y > 40


# ---------------------------------------------------------------------------------------------
# Image formats that are converted, not skipped


def _crop_centre_rgb(records, r=0):
    return records["image"][r][100:156, 100:156].reshape(-1, 3).mean(axis=0)


def test_grayscale_and_png_images_are_converted_to_rgb(tmp_path):
    gray = np.full((60, 80), 90, np.uint8)
    blue_bgr = good_image(color=(255, 0, 0))
    ann, images = write_coco(tmp_path, {
        "gray.jpg": (80, 60, gray), "blue.png": (80, 60, blue_bgr)},
        [person(1, 1, (20, 10, 30, 40)), person(2, 2, (20, 10, 30, 40))])
    manifest, messages = run_convert(ann, images, tmp_path / "out")
    assert messages == [] and manifest.num_records == 2
    records = read_records(tmp_path / "out")
    order = {int(a): i for i, a in enumerate(records["annotation_id"])}
    np.testing.assert_allclose(_crop_centre_rgb(records, order[1]), [90, 90, 90], atol=2)
    np.testing.assert_allclose(_crop_centre_rgb(records, order[2]), [0, 0, 255], atol=3)


def cmyk_jpeg(blocks_cmyk: np.ndarray) -> bytes:
    """A baseline 4-component (Adobe CMYK) JPEG of constant 8x8 blocks.

    ``blocks_cmyk`` uint8 [rows, cols, 4] holds the ink per block; the file stores
    Photoshop's inverted values (255 - ink) with an Adobe marker, as CMYK JPEGs in the wild do.
    No encoder here writes CMYK, so this writes DC-only blocks by hand.
    """
    rows, cols, _ = blocks_cmyk.shape
    stored = 255 - blocks_cmyk.astype(np.int64)

    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">HH", marker, len(payload) + 2) + payload

    out = b"\xff\xd8"
    out += segment(0xFFEE, b"Adobe" + struct.pack(">HHHB", 100, 0, 0, 0))
    out += segment(0xFFDB, b"\x00" + bytes([1] * 64))
    out += segment(0xFFC0, struct.pack(">BHHB", 8, rows * 8, cols * 8, 4)
                   + b"".join(bytes([c + 1, 0x11, 0]) for c in range(4)))
    dc_bits = [0] * 16
    dc_bits[3] = 12  # twelve 4-bit codes: symbol s (the DC category) has code s
    out += segment(0xFFC4, b"\x00" + bytes(dc_bits) + bytes(range(12)))
    out += segment(0xFFC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00")  # EOB = "0"
    scan_components = b"".join(bytes([c + 1, 0]) for c in range(4))
    out += segment(0xFFDA, b"\x04" + scan_components + b"\x00\x3f\x00")
    bits = []
    previous = [0, 0, 0, 0]
    for r in range(rows):
        for c in range(cols):
            for comp in range(4):
                dc = 8 * (int(stored[r, c, comp]) - 128)
                diff = dc - previous[comp]
                previous[comp] = dc
                category = abs(diff).bit_length()
                bits += [int(b) for b in format(category, "04b")]
                if category:
                    value = diff if diff > 0 else diff + (1 << category) - 1
                    bits += [int(b) for b in format(value, f"0{category}b")]
                bits.append(0)  # end of block: every AC coefficient is zero
    bits += [1] * (-len(bits) % 8)
    entropy = bytearray()
    for i in range(0, len(bits), 8):
        byte = int("".join(map(str, bits[i:i + 8])), 2)
        entropy.append(byte)
        if byte == 0xFF:
            entropy.append(0)
    return out + bytes(entropy) + b"\xff\xd9"


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    ink = np.zeros((8, 10, 4), np.uint8)
    ink[:] = (0, 255, 255, 0)            # red everywhere ...
    ink[:, 5:] = (255, 0, 0, 51)         # ... and a darker cyan right half
    ann, images = write_coco(tmp_path, {"cmyk.jpg": (80, 64, cmyk_jpeg(ink))},
                             [person(1, 1, (2, 2, 30, 30)), person(2, 1, (45, 30, 30, 30))])
    manifest, messages = run_convert(ann, images, tmp_path / "out")
    assert messages == [] and manifest.num_records == 2
    records = read_records(tmp_path / "out")
    order = {int(a): i for i, a in enumerate(records["annotation_id"])}
    np.testing.assert_allclose(_crop_centre_rgb(records, order[1]), [255, 0, 0], atol=4)
    # RGB = (255 - C)(255 - K) / 255 per channel: K = 51 -> 204.
    np.testing.assert_allclose(_crop_centre_rgb(records, order[2]), [0, 204, 204], atol=4)


def add_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 EXIF segment holding only the Orientation tag after SOI."""
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def test_exif_rotated_jpeg_matches_annotation_frame(tmp_path):
    # Stored 40 rows x 64 cols with a white 3x3 mark centred at (row 5, col 10); orientation
    # 6 (rotate 90 degrees clockwise to display) puts it at displayed row 10, col 40 - 1 - 5.
    stored = np.zeros((40, 64, 3), np.uint8)
    stored[4:7, 9:12] = 255
    ok, encoded = cv2.imencode(".jpg", stored, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    jpeg = add_exif_orientation(encoded.tobytes(), 6)
    mark = (34, 10)  # displayed pixel (col, row): COCO's pixel-index convention
    ann, images = write_coco(tmp_path, {"exif.jpg": (40, 64, jpeg)},
                             [person(1, 1, (24, 2, 14, 20), points={0: mark})])
    manifest, messages = run_convert(ann, images, tmp_path / "out", crop_size=64)
    assert messages == [] and manifest.num_records == 1
    records = read_records(tmp_path / "out")
    assert records["image_size"][0].tolist() == [64, 40]
    x, y = records["keypoints"][0][0]
    assert records["image"][0][int(y), int(x)].min() > 200  # the mark, in the crop
    assert records["image"][0].mean() < 30  # the rest of the crop is (nearly) black


# ---------------------------------------------------------------------------------------------
# Bad input: skipped with a message naming it, or fatal with strict; nothing partial


def _truncated_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    ok, encoded = cv2.imencode(".jpg", rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    assert ok
    return encoded.tobytes()[: len(encoded) // 2]


BAD_CASES = {
    # name: (images, bad annotation, reason, text in the message)
    "missing_file": ({"gone.jpg": (80, 60, None)}, person(7, 2, (10, 10, 20, 20)),
                     "missing_image", "image file not found"),
    "truncated_jpeg": ({"cut.jpg": (80, 60, _truncated_jpeg())}, person(7, 2, (10, 10, 20, 20)),
                       "unreadable_image", "truncated JPEG"),
    "undecodable": ({"junk.jpg": (80, 60, b"this is not an image" * 10)},
                    person(7, 2, (10, 10, 20, 20)), "unreadable_image", "cannot decode"),
    "size_mismatch": ({"small.jpg": (99, 60, good_image())}, person(7, 2, (10, 10, 20, 20)),
                      "image_size_mismatch", "differs from the annotation file's 60x99"),
    "bbox_outside": ({"b.jpg": (80, 60, good_image())}, person(7, 2, (85, 10, 20, 20),
                                                               points={0: (1, 1)}),
                     "bad_bbox", "lies outside the 80x60 image"),
    "bbox_zero": ({"b.jpg": (80, 60, good_image())}, person(7, 2, (10, 10, 0, 20)),
                  "bad_bbox", "zero size"),
    "bbox_nan": ({"b.jpg": (80, 60, good_image())},
                 person(7, 2, (10, 10, 20, 20)) | {"bbox": [10, float("nan"), 20, 20]},
                 "bad_bbox", "4 finite numbers"),
    "keypoint_nan": ({"b.jpg": (80, 60, good_image())},
                     person(7, 2, (10, 10, 20, 20), points={3: (float("nan"), 12)}),
                     "bad_keypoints", "keypoint 3 is not finite"),
    "keypoint_negative": ({"b.jpg": (80, 60, good_image())},
                          person(7, 2, (10, 10, 20, 20), points={4: (-3, 12)}),
                          "bad_keypoints", "keypoint 4 has a negative coordinate"),
    "bbox_negative": ({"b.jpg": (80, 60, good_image())}, person(7, 2, (-5, 10, 20, 20)),
                      "bad_bbox", "negative corner"),
    "keypoints_short": ({"b.jpg": (80, 60, good_image())},
                        person(7, 2, (10, 10, 20, 20)) | {"keypoints": [1, 2, 2]},
                        "bad_keypoints", "keypoints must be 51 numbers"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_skipped_with_a_message(tmp_path, case):
    bad_images, bad_ann, reason, text = BAD_CASES[case]
    images = {"ok.jpg": (80, 60, good_image()), **bad_images}
    ann, image_dir = write_coco(tmp_path, images, [person(1, 1, (10, 10, 30, 30)), bad_ann])
    manifest, messages = run_convert(ann, image_dir, tmp_path / "out")
    assert manifest.num_records == 1
    assert manifest.skipped["reasons"] == {reason: 1}
    assert len(messages) == 1
    assert "annotation 7" in messages[0] or "image 2" in messages[0]
    assert text in messages[0], messages
    assert manifest.skipped["messages"] == [messages[0].removeprefix("skipped: ")]
    assert read_records(tmp_path / "out")["annotation_id"].tolist() == [1]

    with pytest.raises(ConversionError, match=reason) as error:
        run_convert(ann, image_dir, tmp_path / "strict", strict=True)
    assert text in str(error.value)
    assert_nothing_written(tmp_path / "strict")


def test_min_keypoints_and_crowd_filters(tmp_path):
    anns = [person(1, 1, (10, 10, 30, 30)),
            person(2, 1, (10, 10, 30, 30), points={0: (15, 15)}),
            person(3, 1, (10, 10, 30, 30), iscrowd=1),
            person(4, 1, (10, 10, 30, 30), points={})]
    ann, images = write_coco(tmp_path, {"a.jpg": (80, 60, good_image())}, anns)
    manifest, messages = run_convert(ann, images, tmp_path / "out", min_keypoints=2,
                                     strict=True)
    assert messages == []  # filters are not bad input, not even with strict
    assert manifest.num_records == 1 and manifest.min_keypoints == 2
    assert manifest.skipped["reasons"] == {"iscrowd": 1, "too_few_keypoints": 2}


@pytest.mark.parametrize("content, text", [
    ('{"images": [', "is not valid JSON"),
    ("[1, 2, 3]", "the top level is a list"),
    ('{"foo": 1}', "missing key(s) ['images', 'annotations', 'categories']"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}]}',
     "no category has a 'keypoints' list"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "person", '
     '"keypoints": ["head", "tail"]}]}', "unknown keypoint set"),
    ('{"images": [{"id": 1}], "annotations": [], "categories": []}',
     "images[0] must be an object with 'id' and 'file_name'"),
])
def test_malformed_or_non_coco_json_is_fatal(tmp_path, content, text, capsys):
    path = tmp_path / "bad.json"
    path.write_text(content)
    (tmp_path / "images").mkdir()
    with pytest.raises(ConversionError) as error:
        run_convert(path, tmp_path / "images", tmp_path / "out")
    assert text in str(error.value) and str(path) in str(error.value)
    assert_nothing_written(tmp_path / "out")

    status = convert_coco_main(["--annotations", str(path), "--images", str(tmp_path / "images"),
                                "--output", str(tmp_path / "out"), "--split", "val", "--quiet"])
    err = capsys.readouterr().err
    assert status == 2
    assert "convert_coco.py: error:" in err and text in err and "Traceback" not in err


def test_cli_help_describes_the_options(capsys):
    # tests/test_cli.py runs the tools/convert_coco.py wrapper itself.
    with pytest.raises(SystemExit) as exit_info:
        convert_coco_main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: convert_coco.py ")
    for option in ("--annotations", "--images", "--output", "--split", "--shards", "--workers",
                   "--strict", "--crop-size", "--margin", "--min-keypoints", "--overwrite"):
        assert option in out
    assert "manifest" in out


# ---------------------------------------------------------------------------------------------
# Atomic output


def _small_set(tmp_path, num_images=3):
    images = {f"{i}.jpg": (80, 60, good_image()) for i in range(num_images)}
    anns = [person(10 + i, i + 1, (10, 10, 30, 30)) for i in range(num_images)]
    return write_coco(tmp_path, images, anns)


@pytest.mark.parametrize("error", [RuntimeError("worker bug"), KeyboardInterrupt()])
def test_failure_mid_run_leaves_nothing(tmp_path, monkeypatch, error):
    ann, images = _small_set(tmp_path)
    real = coco_lib.process_image
    calls = []

    def failing(task):
        calls.append(task["image_id"])
        if len(calls) == 2:
            raise error
        return real(task)

    monkeypatch.setattr(coco_lib, "process_image", failing)
    with pytest.raises(type(error)):
        run_convert(ann, images, tmp_path / "out", shards=2)
    assert len(calls) == 2
    assert_nothing_written(tmp_path / "out")


def test_existing_split_needs_overwrite_and_is_replaced(tmp_path):
    ann, images = _small_set(tmp_path)
    out = tmp_path / "out"
    run_convert(ann, images, out, shards=3)
    with pytest.raises(ConversionError, match="already holds split 'val'"):
        run_convert(ann, images, out, shards=1)
    manifest, _ = run_convert(ann, images, out, shards=1, overwrite=True)
    assert sorted(os.listdir(out)) == ["val-00000-of-00001.tfrecord", "val.manifest.json"]
    assert manifest.num_records == 3


@pytest.mark.parametrize("signum", [
    signal.SIGKILL, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_killed_cli_leaves_no_final_shard(tmp_path, signum):
    ann, images = _small_set(tmp_path, num_images=6)
    out = tmp_path / "out"
    # The child slows each image down so the signal lands while shards are being written.
    script = textwrap.dedent(f"""
        import sys, time
        from keras_pose.data import coco
        real = coco.process_image
        def slow(task):
            time.sleep(0.5)
            return real(task)
        coco.process_image = slow
        from keras_pose.cli import convert_coco_main
        sys.exit(convert_coco_main(["--annotations", {str(ann)!r}, "--images", {str(images)!r},
                                    "--output", {str(out)!r}, "--split", "val", "--shards", "2",
                                    "--workers", "1", "--quiet"]))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    child = subprocess.Popen([sys.executable, "-c", script], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while not (out.is_dir() and any(".tmp-" in n for n in os.listdir(out))):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never started writing"
            time.sleep(0.05)
        child.send_signal(signum)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    names = os.listdir(out)
    assert not any(n.endswith(".tfrecord") or n.endswith(".json") for n in names), names
    if signum == signal.SIGTERM:
        assert child.returncode == 130 and b"interrupted" in err
        assert names == []  # temporary files removed too
    else:
        assert child.returncode == -signal.SIGKILL
        # A later run removes the dead run's temporary files and completes.
        manifest, _ = run_convert(ann, images, out, shards=2)
        assert manifest.num_records == 6
        assert sorted(os.listdir(out)) == ["val-00000-of-00002.tfrecord",
                                           "val-00001-of-00002.tfrecord", "val.manifest.json"]


def test_coco_index_round_trip_through_records_and_results(coco_sample, tmp_path):
    """A COCO keypoint at pixel index x lands at continuous x + 0.5 in the records and comes
    back as x in COCO results; ground truth written back that way scores AP 1.0."""
    from keras_pose import evaluate

    ann_path = coco_sample / "person_keypoints_sample.json"
    data = json.loads(ann_path.read_text())
    by_id = {a["id"]: a for a in data["annotations"]}
    run_convert(ann_path, coco_sample / "images", tmp_path / "out", crop_size=64, workers=0)
    records = read_records(tmp_path / "out")
    predictions = {"keypoints": records["image_keypoints"],
                   "scores": np.ones(records["visibility"].shape, np.float32),
                   "image_id": records["image_id"], "annotation_id": records["annotation_id"]}
    results = evaluate.to_coco_results(predictions)
    for r, result in enumerate(results):
        points = np.asarray(by_id[result["annotation_id"]]["keypoints"], np.float64).reshape(K, 3)
        labeled = points[:, 2] > 0
        np.testing.assert_allclose(records["image_keypoints"][r][labeled],
                                   points[labeled, :2] + 0.5, atol=1e-4)
        back = np.asarray(result["keypoints"]).reshape(K, 3)
        np.testing.assert_allclose(back[labeled, :2], points[labeled, :2], atol=1e-3)
    report = evaluate.coco_keypoint_ap(ann_path, results, keypoint_set=COCO17)
    assert report["AP"] == pytest.approx(1.0)


def test_keypoints_within_half_a_pixel_of_the_image_are_kept(tmp_path):
    # COCO pixel indices: -0.5 and W - 0.5 are the image's edges; half a pixel past them is
    # tolerated (annotators' border clicks), further is bad input.
    ann, images = write_coco(tmp_path, {"b.jpg": (80, 60, good_image())}, [
        person(1, 1, (10, 10, 20, 20), points={0: (-1.0, 12), 1: (80, 59)}),
        person(2, 1, (10, 10, 20, 20), points={0: (81, 12)}),
        person(3, 1, (10, 10, 20, 20), points={0: (-1.5, 12)}),
    ])
    manifest, messages = run_convert(ann, images, tmp_path / "out", crop_size=32)
    assert manifest.num_records == 1 and manifest.skipped["reasons"] == {
        "bad_keypoints": 2}
    assert any("keypoint 0 [81.0, 12.0] (pixel indices) lies outside" in m for m in messages)
    records = read_records(tmp_path / "out")
    np.testing.assert_allclose(records["image_keypoints"][0][[0, 1]], [[-0.5, 12.5],
                                                                       [80.5, 59.5]])


def test_mirror_symmetric_annotation_stays_symmetric_in_the_records(tmp_path):
    """MMPose's mirror of COCO index x is W - 1 - x: a pair annotated that way about a box
    centred on the image is symmetric about the crop's centre line in the records (read as
    they were before, x and W - 1 - x would sit half a pixel left of it), so a horizontal flip
    (continuous W - x, tests/test_augment.py) maps each onto its partner exactly."""
    width = 80
    left, right = COCO17.index("left_shoulder"), COCO17.index("right_shoulder")
    ann, images = write_coco(tmp_path, {"b.jpg": (width, 60, good_image())}, [
        person(1, 1, (20, 10, 40, 40),
               points={left: (30, 20), right: (width - 1 - 30, 20), 0: (39.5, 15)}),
    ])
    manifest, messages = run_convert(ann, images, tmp_path / "out", crop_size=64)
    assert messages == [] and manifest.num_records == 1
    records = read_records(tmp_path / "out")
    crop = records["keypoints"][0]
    assert crop[left, 0] + crop[right, 0] == pytest.approx(64.0, abs=1e-4)
    assert crop[0, 0] == pytest.approx(32.0, abs=1e-4)  # index 39.5: the centre line
    np.testing.assert_allclose(records["image_keypoints"][0][[left, right], 0], [30.5, 49.5])
