"""LSP / LSPET joints.mat -> TFRecords: both layouts, flags, coordinates, ranges, bad files."""

from __future__ import annotations

import dataclasses
import json
import os

import cv2
import numpy as np
import pytest
import scipy.io

from keras_pose.cli import convert_main
from keras_pose.data import lsp as lsp_lib
from keras_pose.data.convert import ConversionError, convert_lsp
from keras_pose.data.dataset import make_dataset
from keras_pose.keypoints import LSP14
from keras_pose.pipeline import load_pipeline
from keras_pose.targets import keypoint_weights
from keras_pose.training import inputs
from keras_pose.training.errors import RunError

K = LSP14.num_keypoints
HEAD_TOP = LSP14.index("head_top")
SIZES = [(64, 48), (72, 56), (80, 60), (56, 70)]  # (width, height) of images 1..4
CROP = 128


# ---------------------------------------------------------------------------------------------
# Fixture builders


def make_joints(seed: int = 0) -> np.ndarray:
    """[N, 14, 2] 0-based pixel coordinates inside each image (fractional, as LSPET's are)."""
    rng = np.random.default_rng(seed)
    return np.stack([
        np.stack([rng.uniform(8, w - 8, K), rng.uniform(8, h - 8, K)], axis=-1)
        for w, h in SIZES
    ])


def blob_image(width: int, height: int, centre_xy) -> np.ndarray:
    """Black image with a Gaussian blob (sigma 1.5 px) at a continuous point."""
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    d2 = (cols - centre_xy[0]) ** 2 + (rows - centre_xy[1]) ** 2
    gray = np.round(255 * np.exp(-d2 / (2 * 1.5 ** 2))).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def write_lsp(tmp_path, joints, flags, layout="lspet", skip_images=(), mat_extra=None):
    """joints.mat in a release's layout and images im0001.jpg / im00001.jpg beside it.

    Each image has a blob at its head top (0-based index + 0.5: the pixel centre). The images
    are PNG bytes under .jpg names (the decoder reads the content): lossless.
    """
    root = tmp_path / layout
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    table = np.concatenate([joints, flags[..., None]], axis=-1)  # [N, 14, 3]
    stored = table.transpose(1, 2, 0) if layout == "lspet" else table.transpose(2, 1, 0)
    scipy.io.savemat(root / "joints.mat", {"joints": stored, **(mat_extra or {})})
    for i, (w, h) in enumerate(SIZES[: len(joints)]):
        if i + 1 in skip_images:
            continue
        ok, png = cv2.imencode(".png", blob_image(w, h, joints[i, HEAD_TOP] + 0.5))
        assert ok
        (images / lsp_lib.IMAGE_NAMES[layout].format(i + 1)).write_bytes(png.tobytes())
    return root / "joints.mat", images


def lspet_flags() -> np.ndarray:
    """LSPET flags (1 = visible, 0 = not annotated), head top always visible."""
    flags = np.ones((len(SIZES), K))
    flags[0, [0, 5]] = 0
    flags[2, [6, 7, 11]] = 0
    return flags


def lspet_set(tmp_path, **kwargs):
    joints = make_joints()
    flags = lspet_flags()
    # Unannotated joints carry junk, as in the real file (and a NaN, which is allowed there).
    junk = joints.copy()
    junk[flags == 0] = (0.0, -26.1)
    junk[2, 11] = (np.nan, np.nan)
    mat, images = write_lsp(tmp_path, junk, flags, "lspet", **kwargs)
    return joints, flags, mat, images


def convert(mat, images, out, split="val", **kwargs):
    messages: list[str] = []
    kwargs.setdefault("workers", 1)
    kwargs.setdefault("crop_size", CROP)
    manifest = convert_lsp(mat, images, out, split, progress=False, log=messages.append,
                           **kwargs)
    return manifest, messages


def read_records(out, split="val"):
    batches = list(make_dataset(str(out / f"{split}-*.tfrecord"), batch_size=16,
                                num_keypoints=K, training=False))
    records = {k: np.concatenate([b[k].numpy() for b in batches]) for k in batches[0]}
    order = np.argsort(records["annotation_id"])
    return {k: v[order] for k, v in records.items()}


def expected_box(points_xy: np.ndarray, labeled: np.ndarray) -> np.ndarray:
    low, high = points_xy[labeled].min(axis=0), points_xy[labeled].max(axis=0)
    pad = 0.075 * (high - low).max()
    return np.array([*(low - pad), *(high - low + 2 * pad)])


def blob_centroid(crop: np.ndarray, xy, radius: int = 6) -> np.ndarray:
    """Intensity centroid (continuous crop coordinates) of the blob near ``xy``."""
    gray = crop.astype(np.float64).mean(axis=-1)
    x0, y0 = int(xy[0]) - radius, int(xy[1]) - radius
    window = np.clip(gray[y0:y0 + 2 * radius + 1, x0:x0 + 2 * radius + 1] - 8.0, 0, None)
    rows, cols = np.mgrid[0:window.shape[0], 0:window.shape[1]]
    total = window.sum()
    return np.array([(window * (cols + x0 + 0.5)).sum() / total,
                     (window * (rows + y0 + 0.5)).sum() / total])


# ---------------------------------------------------------------------------------------------
# Both layouts: coordinates, flags, boxes


def test_lspet_records_round_trip_and_mask_unannotated_joints(tmp_path):
    joints, flags, mat, images = lspet_set(tmp_path)
    manifest, messages = convert(mat, images, tmp_path / "out")
    assert messages == [] and manifest.num_records == 4
    assert manifest.keypoint_set == "lsp14"
    assert manifest.source["format"] == "lspet" and manifest.source["image_range"] is None
    assert manifest.source["array_shape"] == [14, 3, 4]
    records = read_records(tmp_path / "out")
    assert records["annotation_id"].tolist() == [1, 2, 3, 4]
    assert [f.decode() for f in records["filename"]] == [f"im{i:05d}.jpg" for i in range(1, 5)]
    assert records["image_size"].tolist() == [[h, w] for w, h in SIZES]
    labeled = flags == 1
    np.testing.assert_array_equal(records["visibility"], np.where(labeled, 2, 0))
    truth = joints + 0.5  # 0-based pixel index -> pixel centre
    for r in range(4):
        on = labeled[r]
        np.testing.assert_allclose(records["image_keypoints"][r][on], truth[r][on], atol=1e-3)
        box = records["crop_box"][r]
        back = box[:2] + records["keypoints"][r] * box[2] / CROP
        np.testing.assert_allclose(back[on], truth[r][on], atol=1e-3)
        # Unannotated joints: (0, 0) in both frames, whatever junk the file held.
        assert np.all(records["keypoints"][r][~on] == 0)
        assert np.all(records["image_keypoints"][r][~on] == 0)
        np.testing.assert_allclose(records["bbox"][r], expected_box(truth[r], on), atol=1e-3)
    # ... and so weight 0 in the trainer's targets; annotated ones (inside the crop) weight 1.
    weights = np.asarray(keypoint_weights(records["keypoints"], records["visibility"], CROP))
    np.testing.assert_array_equal(weights, labeled.astype(np.float32))


def test_keypoints_land_on_the_pixels_they_name(tmp_path):
    # Each image has a blob centred on the head top's pixel centre; in the crop the blob's
    # centroid must sit on the recorded keypoint. A half-pixel convention slip (0.5 image px =
    # ~0.8 crop px at these scales) fails this.
    joints, _, mat, images = lspet_set(tmp_path)
    convert(mat, images, tmp_path / "out")
    records = read_records(tmp_path / "out")
    for r in range(4):
        point = records["keypoints"][r][HEAD_TOP]
        assert CROP / records["crop_box"][r][2] > 1.2  # upscaled: crop px finer than image px
        np.testing.assert_allclose(blob_centroid(records["image"][r], point), point, atol=0.25)


def test_lsp_layout_inverted_flag_means_occluded_but_labeled(tmp_path):
    joints = make_joints(seed=1)
    flags = np.zeros((4, K))  # LSP: 0 = visible ...
    flags[1, [2, 9]] = 1  # ... 1 = occluded, still annotated
    mat, images = write_lsp(tmp_path, joints, flags, "lsp")
    manifest, _ = convert(mat, images, tmp_path / "out")
    assert manifest.source["format"] == "lsp"
    assert manifest.source["array_shape"] == [3, 14, 4]
    records = read_records(tmp_path / "out")
    assert [f.decode() for f in records["filename"]] == [f"im{i:04d}.jpg" for i in range(1, 5)]
    np.testing.assert_array_equal(records["visibility"], np.where(flags == 1, 1, 2))
    # Occluded joints keep their coordinates (and weight 1: they are labeled).
    np.testing.assert_allclose(records["image_keypoints"], joints + 0.5, atol=1e-3)
    weights = np.asarray(keypoint_weights(records["keypoints"], records["visibility"], CROP))
    assert np.all(weights == 1)


def test_layout_override_applies_the_other_release_flag_sense(tmp_path):
    joints = make_joints()
    flags = np.zeros((4, K))
    flags[0, 3] = 1
    # An LSP table saved in LSPET's axis order: forcing "lsp" reads 1 as occluded.
    mat, images = write_lsp(tmp_path, joints, flags, "lspet")
    points = lsp_lib.read_joints(mat, layout="lsp").points
    assert points[0, 3, 2] == 1 and points[0, 0, 2] == 2 and np.all(points[1:, :, 2] == 2)
    auto = lsp_lib.read_joints(mat).points  # LSPET sense: 0 = not annotated
    assert auto[0, 3, 2] == 2 and auto[0, 0, 2] == 0 and np.all(auto[0, 0, :2] == 0)


def test_ground_truth_file_holds_the_converted_persons(tmp_path):
    joints, flags, mat, images = lspet_set(tmp_path)
    manifest, _ = convert(mat, images, tmp_path / "out", image_range="2-4")
    assert manifest.ground_truth["path"] == "val.annotations.json"
    assert "COCO's pixel indices" in manifest.ground_truth["coordinates"]
    truth = json.loads((tmp_path / "out" / "val.annotations.json").read_text())
    assert [i["id"] for i in truth["images"]] == [2, 3, 4]
    assert [(i["width"], i["height"]) for i in truth["images"]] == SIZES[1:]
    assert truth["categories"][0]["keypoints"] == list(LSP14.names)
    for ann in truth["annotations"]:
        i = ann["id"] - 1
        points = np.asarray(ann["keypoints"]).reshape(K, 3)
        np.testing.assert_array_equal(points[:, 2], np.where(flags[i] == 1, 2, 0))
        on = flags[i] == 1
        # COCO's pixel-index convention: LSP's 0-based indices come back as they are (the
        # records hold them + 0.5).
        np.testing.assert_allclose(points[on, :2], joints[i][on], atol=1e-9)
        assert np.all(points[~on] == 0) and ann["num_keypoints"] == on.sum()


# ---------------------------------------------------------------------------------------------
# Ranges


def test_ranges_select_images(tmp_path):
    _, _, mat, images = lspet_set(tmp_path)
    manifest, _ = convert(mat, images, tmp_path / "out", split="train", image_range="1-3")
    assert manifest.source["image_range"] == [1, 3]
    assert read_records(tmp_path / "out", "train")["image_id"].tolist() == [1, 2, 3]
    manifest, _ = convert(mat, images, tmp_path / "out", image_range=(4, 4))
    records = read_records(tmp_path / "out")
    assert records["image_id"].tolist() == [4]
    assert records["filename"][0].decode() == "im00004.jpg"
    with pytest.raises(ConversionError, match=r"joints\.mat: range 3-5 reaches past the "
                                              r"file's 4 images"):
        convert(mat, images, tmp_path / "bad", image_range="3-5")
    with pytest.raises(ValueError, match="range must be 'A-B'"):
        convert(mat, images, tmp_path / "bad", image_range="3:5")


# ---------------------------------------------------------------------------------------------
# Bad files and input


def _bad_mat(tmp_path, case: str):
    path = tmp_path / "joints.mat"
    table = np.concatenate([make_joints(), lspet_flags()[..., None]], -1).transpose(1, 2, 0)
    if case == "missing_variable":
        scipy.io.savemat(path, {"points": table})
    elif case == "wrong_shape":
        scipy.io.savemat(path, {"joints": table[:, :2]})
    elif case == "nan":
        table[4, 1, 1] = np.nan  # image 2, joint 4 (left_knee), y; flagged visible
        scipy.io.savemat(path, {"joints": table})
    elif case == "bad_flag":
        table[7, 2, 2] = 0.5
        scipy.io.savemat(path, {"joints": table})
    else:
        path.write_bytes(b"MATLAB 5.0 MAT-file, but not really" + bytes(100))
    return path


BAD_MATS = {
    "missing_variable": "no variable 'joints' (found ['points'])",
    "wrong_shape": "variable 'joints' has shape (14, 2, 4); expected (3, 14, N) (LSP) or "
                   "(14, 3, N) (LSPET)",
    "nan": "labeled joint 4 (left_knee) of image im00002.jpg (image index 2) is not finite",
    "bad_flag": "joint 7 (right_elbow) of image im00003.jpg has flag 0.5",
    "not_matlab": "is not a MATLAB .mat file",
}


@pytest.mark.parametrize("case", sorted(BAD_MATS))
def test_bad_mat_is_an_error_naming_the_file_and_problem(tmp_path, case, capsys):
    path = _bad_mat(tmp_path, case)
    (tmp_path / "images").mkdir()
    with pytest.raises(ConversionError) as error:
        convert(path, tmp_path / "images", tmp_path / "out")
    assert str(path) in str(error.value) and BAD_MATS[case] in str(error.value)
    assert not (tmp_path / "out").exists()

    status = convert_main([
        "--format", "lspet", "--joints", str(path), "--output", str(tmp_path / "out"),
        "--split", "val", "--quiet"])
    err = capsys.readouterr().err
    assert status == 2
    assert "convert.py: error:" in err and BAD_MATS[case] in err and "Traceback" not in err


def test_missing_image_is_skipped_or_fatal_with_strict(tmp_path, capsys):
    _, _, mat, images = lspet_set(tmp_path, skip_images=(3,))
    manifest, messages = convert(mat, images, tmp_path / "out")
    assert manifest.num_records == 3
    assert manifest.skipped["reasons"] == {"missing_image": 1}
    assert len(messages) == 1 and "im00003.jpg" in messages[0]
    assert "image file not found" in messages[0]

    with pytest.raises(ConversionError, match=r"im00003\.jpg.*image file not found"):
        convert(mat, images, tmp_path / "strict", strict=True)
    assert os.listdir(tmp_path / "strict") == []
    status = convert_main([
        "--format", "lspet", "--joints", str(mat), "--output", str(tmp_path / "strict"),
        "--split", "val", "--strict", "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and "strict mode" in err and "im00003.jpg" in err


# ---------------------------------------------------------------------------------------------
# The CLI


def test_cli_converts_lspet_and_notes_a_detected_layout(tmp_path, capsys):
    _, _, mat, _ = lspet_set(tmp_path)
    status = convert_main(["--format", "lsp", "--joints", str(mat), "--range", "2-3",
                           "--output", str(tmp_path / "out"), "--split", "train",
                           "--crop-size", "64", "--workers", "1", "--quiet"])
    captured = capsys.readouterr()
    assert status == 0
    assert "wrote 2 records from 2 images" in captured.out and "lsp14" in captured.out
    assert "has the LSPET layout (14, 3, 4)" in captured.err  # --format lsp, LSPET data
    manifest = json.loads((tmp_path / "out" / "train.manifest.json").read_text())
    assert manifest["crop_size"] == 64 and manifest["source"]["image_range"] == [2, 3]

    # Options of other formats are refused (exit 2, argparse's message).
    with pytest.raises(SystemExit) as exit_info:
        convert_main(["--format", "lspet", "--joints", str(mat), "--head-boxes", "x.mat",
                      "--output", str(tmp_path / "o"), "--split", "val"])
    assert exit_info.value.code == 2
    assert "--head-boxes is for --format mpii" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The real LSPET annotations (fast: no images decoded)


def test_real_lspet_joints(lspet_data):
    loaded = lsp_lib.read_joints(lspet_data / "joints.mat")
    assert loaded.layout == "lspet" and loaded.shape == (14, 3, 9500)
    points = loaded.points
    assert points.shape == (9500, 14, 3)
    labeled = points[:, :, 2] > 0
    assert set(np.unique(points[:, :, 2])) == {0.0, 2.0}
    assert labeled.mean() == pytest.approx(0.88, abs=0.005)  # "88 % of joints visible"
    assert np.all(points[~labeled] == 0)  # junk such as (0, -26) is gone
    assert labeled.sum(axis=1).min() >= 4  # one annotated person per image
    source = lsp_lib.load_lsp(lspet_data / "joints.mat", lspet_data / "images", "9001-9500")
    anns = source.dataset["annotations"]
    assert len(anns) == 500 and anns[0]["id"] == 9001
    assert source.dataset["images"][-1]["file_name"] == "im09500.jpg"
    assert (lspet_data / "images" / "im09500.jpg").exists()


# ---------------------------------------------------------------------------------------------
# The pipeline step


def _pipeline(tmp_path, *extra):
    return load_pipeline(None, [
        "data.source.format=lspet", f"data.source.path={tmp_path / 'lspet'}",
        f"data.source.directory={tmp_path / 'records'}", "data.source.train_range=1-3",
        "data.source.val_range=4-4", "data.source.workers=1", "data.crop_size=64", *extra])


def test_pipeline_step_converts_once_and_points_data_at_records(tmp_path, monkeypatch):
    lspet_set(tmp_path)
    pipeline = _pipeline(tmp_path)
    prepared = inputs.prepare_source_data(pipeline)
    records = tmp_path / "records" / "records-64"
    assert prepared.data.train_records == str(records / "train-*.tfrecord")
    assert prepared.data.val_records == str(records / "val-*.tfrecord")
    assert prepared.data.keypoint_set == "lsp14"  # from the records, not the coco17 default
    assert read_records(records, "train")["image_id"].tolist() == [1, 2, 3]
    assert read_records(records, "val")["image_id"].tolist() == [4]
    manifest = json.loads((records / "val.manifest.json").read_text())
    assert manifest["source"]["image_range"] == [4, 4]

    # Second call: cached (the converter is not called).
    def fail(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(inputs.converter, "convert_lsp", fail)
    again = inputs.prepare_source_data(pipeline)
    assert dataclasses.asdict(again.data) == dataclasses.asdict(prepared.data)
    # A different range is a different split: converted again.
    with pytest.raises(AssertionError, match="converted again"):
        inputs.prepare_source_data(_pipeline(tmp_path, "data.source.val_range=3-4"))
    # Records of another converter version (another pixel convention) are not reused.
    manifest["version"] = 2
    (records / "val.manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AssertionError, match="converted again"):
        inputs.prepare_source_data(pipeline)


def test_pipeline_step_missing_folder_or_range_is_a_clear_error(tmp_path):
    with pytest.raises(RunError, match=r"does not exist; set it with --set "
                                           r"data\.source\.path="):
        inputs.prepare_source_data(_pipeline(tmp_path))
    lspet_set(tmp_path)
    with pytest.raises(RunError, match=r"val_range is empty"):
        inputs.prepare_source_data(_pipeline(tmp_path, 'data.source.val_range=""'))
