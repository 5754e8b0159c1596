"""tools/predict.py on a real COCO image, a directory and a small video, with a real network."""

from __future__ import annotations

import json
import pathlib
import shutil

import cv2
import numpy as np
import pytest

from keras_pose import export
from keras_pose.cli import predict_main
from keras_pose.cli.predict import PANEL_HEIGHT


def test_predict_image_writes_overlay_and_keypoints(hourglass_file, coco_sample, tmp_path):
    image_path = coco_sample / "images" / "000000000785.jpg"
    box = [280.79, 44.73, 218.7, 346.68]  # the annotated person
    out = tmp_path / "out"
    status = predict_main(["--model", str(hourglass_file), "--input", str(image_path),
                           "--output", str(out), "--box", ",".join(map(str, box))])
    assert status == 0
    report = json.loads((out / "keypoints.json").read_text())
    assert report["keypoint_set"] == "coco17" and len(report["images"]) == 1
    points = np.asarray(report["images"][0]["keypoints"])
    expected = export.load_predictor(hourglass_file).predict(
        cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB), box)["keypoints"][0]
    np.testing.assert_allclose(points, expected, atol=1e-3)
    # Every keypoint lies in the square crop around the box (1.25 x its longer side).
    centre = np.array([box[0] + box[2] / 2, box[1] + box[3] / 2])
    assert np.all(np.abs(points - centre) <= 1.25 * max(box[2:]) / 2 + 1)
    overlay = cv2.imread(str(out / "000000000785.png"))
    source = cv2.imread(str(image_path))
    assert overlay.shape == source.shape
    changed = np.any(overlay != source, axis=-1)
    assert changed.sum() > 200  # skeleton and box were drawn ...
    assert not changed[:, :160].any()  # ... only in the crop around the box (x >= 173)


@pytest.mark.slow
def test_predict_directory_and_video(hourglass_file, coco_sample, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("000000040083.jpg", "000000196141.jpg"):
        shutil.copy(coco_sample / "images" / name, inputs / name)
    video = inputs / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 80))
    rng = np.random.default_rng(0)
    for _ in range(11):
        writer.write(rng.integers(0, 255, size=(80, 96, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / "out"
    assert predict_main(["--model", str(hourglass_file), "--input", str(inputs), "--output",
                         str(out), "--batch-size", "4"]) == 0
    report = json.loads((out / "keypoints.json").read_text())
    assert [pathlib.Path(i["image"]).name for i in report["images"]] == [
        "000000040083.jpg", "000000196141.jpg"]
    assert (out / "000000040083.png").exists() and (out / "000000196141.png").exists()
    frames = report["videos"][0]["frames"]
    assert len(frames) == 11 and len(frames[10]["keypoints"]) == 17
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert count == 11
    assert not list(out.glob(".*tmp*"))  # the temporary video was renamed


def test_predict_reports_bad_input(hourglass_file, tmp_path, capsys):
    assert predict_main(["--model", str(hourglass_file), "--input", str(tmp_path / "none.jpg"),
                         "--output", str(tmp_path / "o")]) == 2
    assert "input not found" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("x")
    assert predict_main(["--model", str(hourglass_file), "--input", str(tmp_path),
                         "--output", str(tmp_path / "o")]) == 2
    assert "no images" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_with_ground_truth_draws_pairs_and_a_grid(hourglass_file, coco_sample, tmp_path,
                                                          capsys):
    annotations = coco_sample / "person_keypoints_sample.json"
    truth = json.loads(annotations.read_text())
    names = {image["id"]: image["file_name"] for image in truth["images"]}
    persons: dict[str, list[dict]] = {}
    for ann in truth["annotations"]:
        persons.setdefault(names[ann["image_id"]], []).append(ann)
    out = tmp_path / "out"
    grid = tmp_path / "grid.png"
    assert predict_main(["--model", str(hourglass_file), "--input", str(coco_sample / "images"),
                         "--annotations", str(annotations), "--output", str(out),
                         "--grid", str(grid), "--grid-columns", "3", "--limit", "3"]) == 0
    report = json.loads((out / "keypoints.json").read_text())
    shown = [pathlib.Path(entry["image"]).name for entry in report["images"]]
    assert shown == sorted(names.values())[:3]
    predictor = export.load_predictor(hourglass_file)
    pairs = 0
    for entry, name in zip(report["images"], shown):
        assert len(entry["persons"]) == len(persons[name])
        image = cv2.cvtColor(cv2.imread(str(coco_sample / "images" / name)), cv2.COLOR_BGR2RGB)
        for person, ann in zip(entry["persons"], persons[name]):
            assert person["box"] == pytest.approx(ann["bbox"])
            # The file's pixel indices come back continuous (+0.5 where labeled), as drawn.
            file_points = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
            labeled = file_points[:, 2:3] > 0
            expected_gt = np.where(labeled, file_points + [0.5, 0.5, 0.0], file_points)
            np.testing.assert_allclose(np.asarray(person["ground_truth"]), expected_gt)
            expected = predictor.predict(image, ann["bbox"])["keypoints"][0]
            np.testing.assert_allclose(person["keypoints"], expected, atol=1e-3)
        # One row per person: ground truth | prediction, each a square panel.
        panel = PANEL_HEIGHT
        overlay = cv2.imread(str(out / f"{pathlib.Path(name).stem}.png"))
        assert overlay.shape == (panel * len(persons[name]), 2 * panel, 3)
        pairs += len(persons[name])
    columns = min(3, pairs)
    rows = -(-pairs // columns)
    assert cv2.imread(str(grid)).shape == (rows * (panel + 4) + 4, columns * (2 * panel + 4) + 4,
                                           3)
    assert f"({pairs} persons)" in capsys.readouterr().out
    # A grid needs ground truth to pair the predictions with.
    with pytest.raises(SystemExit):
        predict_main(["--model", str(hourglass_file), "--input", str(coco_sample / "images"),
                      "--output", str(out), "--grid", str(grid)])
