"""Scoring: ground truth as predictions, known offsets, COCO results matching, the CLI."""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest

from keras_pose import evaluate
from keras_pose.cli import evaluate_main
from keras_pose.io import write_json_atomic
from keras_pose.keypoints import COCO17, LSP14
from keras_pose.visualize import draw_pck_chart

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def coco_truth(coco_sample):
    path = coco_sample / "person_keypoints_sample.json"
    coco = evaluate.load_coco(path)
    return path, coco, evaluate.ground_truth_arrays(coco)


def _as_predictions(truth, offset=(0.0, 0.0)):
    points = truth["gt_keypoints"] + np.asarray(offset, np.float32)
    scores = np.ones(points.shape[:2], np.float32)
    return {"keypoints": points, "scores": scores, **truth}


def test_ground_truth_as_predictions_scores_one(coco_truth):
    path, coco, truth = coco_truth
    assert truth["gt_keypoints"].shape[1:] == (17, 2)
    assert len(truth["annotation_id"]) == sum(
        1 for a in coco.dataset["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"])
    # The file's pixel indices are read continuous (+0.5) and written back as they were.
    by_id = {a["id"]: a for a in coco.dataset["annotations"]}
    results = evaluate.to_coco_results(_as_predictions(truth))
    for row, result in enumerate(results):
        points = np.asarray(by_id[result["annotation_id"]]["keypoints"], np.float64).reshape(
            17, 3)
        labeled = points[:, 2] > 0
        np.testing.assert_allclose(truth["gt_keypoints"][row][labeled], points[labeled, :2] + 0.5)
        np.testing.assert_allclose(np.reshape(result["keypoints"], (17, 3))[labeled, :2],
                                   points[labeled, :2])
    report = evaluate.score_predictions(_as_predictions(truth), path, keypoint_set=COCO17)
    assert report["metrics"]["pck_torso@0.2"] == 1.0
    assert report["metrics"]["pck_bbox@0.05"] == 1.0
    assert report["coco"]["AP"] == pytest.approx(1.0)
    assert report["coco"]["AR"] == pytest.approx(1.0)
    assert report["metrics"]["num_labeled"] == int((truth["visibility"] > 0).sum())


def test_known_offsets_give_hand_computed_pck(coco_truth):
    path, _, truth = coco_truth
    predictions = _as_predictions(truth)
    # Shift every keypoint of person i by a distance d_i; it is correct at PCK@0.05 bbox iff
    # d_i <= 0.05 * max(w, h), so the expected value is a count over persons.
    sizes = np.maximum(truth["bbox"][:, 2], truth["bbox"][:, 3]).astype(np.float64)
    factors = np.where(np.arange(len(sizes)) % 2 == 0, 0.04, 0.07)
    distance = factors * sizes
    predictions["keypoints"] = truth["gt_keypoints"] + np.stack(
        [0.6 * distance, 0.8 * distance], axis=-1)[:, None, :].astype(np.float32)
    labeled = (truth["visibility"] > 0).sum(axis=1)
    expected = labeled[factors < 0.05].sum() / labeled.sum()
    report = evaluate.metric_report(predictions, COCO17)
    assert report["pck_bbox@0.05"] == pytest.approx(expected)
    # Per keypoint: nose is correct for the even persons that have a labeled nose.
    nose = truth["visibility"][:, 0] > 0
    assert report["per_keypoint"]["pck_bbox@0.05"]["nose"] == pytest.approx(
        (nose & (factors < 0.05)).sum() / nose.sum())


def test_results_without_annotation_ids_are_matched_by_oks(coco_truth):
    path, _, truth = coco_truth
    predictions = _as_predictions(truth, offset=(1.5, -1.0))
    results = evaluate.to_coco_results(predictions)
    for result in results:
        del result["annotation_id"]
    # Drop one person's result: it must count as missed (its keypoints wrong).
    missing = results.pop(3)
    matched, info = evaluate.match_results(results, path)
    assert info["num_matched"] == len(results) and info["num_missed_persons"] == 1
    row = int(np.flatnonzero(truth["annotation_id"] == truth["annotation_id"][3])[0])
    assert np.all(np.isnan(matched["keypoints"][row]))
    others = np.arange(len(truth["annotation_id"])) != row
    np.testing.assert_allclose(matched["keypoints"][others],
                               predictions["keypoints"][others], atol=1e-3)
    assert missing["image_id"] == int(truth["image_id"][3])
    report = evaluate.metric_report(matched, COCO17)
    labeled = (truth["visibility"] > 0).sum(axis=1)
    assert report["pck_bbox@0.05"] == pytest.approx(1 - labeled[3] / labeled.sum())


def test_chart_and_json_writing(tmp_path, coco_truth):
    _, _, truth = coco_truth
    report = evaluate.metric_report(_as_predictions(truth), COCO17)
    chart = draw_pck_chart(report["per_keypoint"])
    assert chart.dtype == np.uint8 and chart.shape[0] > 17 * 20
    # Bar length is proportional to the value: halving every value halves the bar pixels of
    # the first metric's colour (less the legend swatch, which stays).
    half = {m: {k: 0.5 for k in v} for m, v in report["per_keypoint"].items()}
    color = np.array([40, 120, 200], np.uint8)  # RGB

    def bar_pixels(image):
        return int(np.all(image == color, axis=-1).sum())

    full, halved = bar_pixels(chart), bar_pixels(draw_pck_chart(half))
    legend = bar_pixels(draw_pck_chart({m: {} for m in half}))
    assert (halved - legend) / (full - legend) == pytest.approx(0.5, abs=0.02)
    path = write_json_atomic(tmp_path / "r.json", {"a": float("nan"), "b": np.float32(2)})
    assert json.loads(path.read_text()) == {"a": None, "b": 2.0}


def test_cli_scores_a_results_file(tmp_path, coco_truth, capsys):
    path, _, truth = coco_truth
    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps(evaluate.to_coco_results(_as_predictions(truth))))
    out = tmp_path / "eval"
    status = evaluate_main(["--predictions", str(results_path), "--annotations", str(path),
                            "--output", str(out)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "pck_torso@0.2" in captured.out
    report = json.loads((out / "evaluation.json").read_text())
    assert report["metrics"]["pck_torso@0.2"] == 1.0
    assert report["coco"]["AP"] == pytest.approx(1.0)
    assert (out / "pck_per_keypoint.png").stat().st_size > 1000


def test_cli_reports_bad_input_clearly(tmp_path, coco_truth, capsys):
    path, _, _ = coco_truth
    bad = tmp_path / "bad.json"
    bad.write_text('[{"image_id": 999999, "category_id": 1, "keypoints": [], "score": 1}]')
    status = evaluate_main(["--predictions", str(bad), "--annotations", str(path),
                            "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2
    assert "keypoint values" in err and "Traceback" not in err


# -- a model over records ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def records(coco_sample, tmp_path_factory):
    from keras_pose.data.convert import convert_coco

    out = tmp_path_factory.mktemp("records")
    manifest = convert_coco(coco_sample / "person_keypoints_sample.json", coco_sample / "images",
                            out, "val", shards=1, workers=0, crop_size=64, progress=False,
                            log=lambda message: None)
    return str(out / "val-*.tfrecord"), manifest


@pytest.fixture(scope="module")
def constant_run(tmp_path_factory):
    """A run directory whose network always predicts the same normalized coordinates."""
    import sys

    from keras_pose.pipeline import Pipeline, to_toml

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_pose import ConstantCoordinatePose

    offsets = np.random.default_rng(3).uniform(-0.4, 0.4, size=(17, 2))
    run = tmp_path_factory.mktemp("runs") / "constant"
    run.mkdir()
    model = ConstantCoordinatePose(offsets, input_size=(48, 40))
    model.save(run / "model.keras")
    pipeline = Pipeline(name="constant")
    (run / "pipeline.resolved.toml").write_text(to_toml(pipeline))
    return run, model, offsets


def _expected_image_points(offsets, crop_box):
    """Normalized offsets -> crop (the whole crop is the input, resized) -> image pixels."""
    crop_box = np.asarray(crop_box, np.float64)
    return crop_box[:, None, 0:2] + (offsets[None] + 0.5) * crop_box[:, None, 2:4]


def test_predict_records_maps_input_to_image_pixels(records, constant_run):
    from keras_pose.data.dataset import make_dataset

    pattern, manifest = records
    _, model, offsets = constant_run
    dataset = make_dataset(pattern, batch_size=4, num_keypoints=17, training=False,
                           deterministic=True)
    predictions = evaluate.predict_records(model, dataset, keypoint_set=COCO17)
    assert predictions["keypoints"].shape == (manifest.num_records, 17, 2)
    crop_boxes = np.concatenate([np.asarray(b["crop_box"]) for b in dataset])
    np.testing.assert_allclose(predictions["keypoints"],
                               _expected_image_points(offsets, crop_boxes), atol=1e-3)
    np.testing.assert_allclose(predictions["scores"], 1.0)
    # Flip test: the mirrored input's prediction comes back with x negated and left/right
    # swapped, and is averaged with the plain one.
    flipped = evaluate.predict_records(model, dataset, keypoint_set=COCO17, flip_test=True)
    perm = COCO17.flip_permutation
    averaged = np.stack([(offsets[:, 0] - offsets[perm, 0]) / 2,
                         (offsets[:, 1] + offsets[perm, 1]) / 2], axis=-1)
    np.testing.assert_allclose(flipped["keypoints"],
                               _expected_image_points(averaged, crop_boxes), atol=1e-3)


def test_evaluate_cli_with_a_model_and_a_saved_model(records, constant_run, coco_sample,
                                                     tmp_path, capsys):
    from keras_pose import export

    pattern, manifest = records
    run, model, offsets = constant_run
    annotations = coco_sample / "person_keypoints_sample.json"
    out = tmp_path / "keras"
    assert evaluate_main(["--model", str(run), "--records", pattern, "--annotations",
                          str(annotations), "--output", str(out), "--batch-size", "3"]) == 0
    report = json.loads((out / "evaluation.json").read_text())
    results = json.loads((out / "results.json").read_text())
    assert len(results) == manifest.num_records == report["metrics"]["num_persons"]
    assert report["coco"]["num_results"] == len(results)
    assert 0.0 <= report["coco"]["AP"] < 0.5  # a constant pose is a poor pose
    assert (out / "pck_per_keypoint.png").exists()
    printed = capsys.readouterr().out
    assert "pck_torso@0.2" in printed
    # A Keras model is scored without (top level) and with the flip test ("flip_test"), the
    # headlines side by side first; each set is what predict_records gives with that setting.
    flipped = report["flip_test"]
    assert report["flip_test_note"] is None and set(flipped) >= {"metrics", "coco"}
    headline = (f"pck_torso@0.2: {report['metrics']['pck_torso@0.2']:.4f} without flip test, "
                f"{flipped['metrics']['pck_torso@0.2']:.4f} with flip test")
    assert printed.startswith(headline) or headline in printed.splitlines()[0:3]
    assert "COCO AP:" in printed and "with flip test:" in printed
    from keras_pose.data.dataset import make_dataset

    dataset = make_dataset(pattern, batch_size=3, num_keypoints=17, training=False,
                           deterministic=True)
    for flip, scores in ((False, report["metrics"]), (True, flipped["metrics"])):
        again = evaluate.metric_report(
            evaluate.predict_records(model, dataset, keypoint_set=COCO17, flip_test=flip), COCO17)
        assert again["pck_torso@0.2"] == pytest.approx(scores["pck_torso@0.2"])
        assert again["pck_bbox@0.05"] == pytest.approx(scores["pck_bbox@0.05"])
    flip_results = json.loads((out / "results_flip_test.json").read_text())
    assert len(flip_results) == len(results)
    assert flipped["coco"]["num_results"] == len(flip_results)
    # The same through an exported SavedModel: same keypoints, same scores.
    version = export.export_saved_model(model, name="constant", base=tmp_path / "saved",
                                        update_config=False)
    out2 = tmp_path / "saved_model"
    assert evaluate_main(["--model", str(version), "--records", pattern, "--annotations",
                          str(annotations), "--output", str(out2)]) == 0
    assert evaluate_main(["--model", str(version), "--records", pattern, "--output",
                          str(tmp_path / "refused"),
                          "--metrics", "pck_torso@0.2,poster_acc@0.5"]) == 2
    assert "poster_acc@0.5: it needs heatmaps and this SavedModel's metadata gives no heatmap " \
        "stride" in capsys.readouterr().err
    results2 = json.loads((out2 / "results.json").read_text())
    by_id = {r["annotation_id"]: r for r in results}
    for result in results2:
        np.testing.assert_allclose(result["keypoints"], by_id[result["annotation_id"]]
                                   ["keypoints"], atol=2e-3)
    saved_report = json.loads((out2 / "evaluation.json").read_text())
    assert saved_report["metrics"] == report["metrics"]
    # A SavedModel exported without the flip test can only be scored as it is; it says so.
    assert saved_report["flip_test"] is None
    assert "exported without the flip test" in saved_report["flip_test_note"]
    assert not (out2 / "results_flip_test.json").exists()


# -- named metrics, keypoint sets without OKS sigmas ------------------------------------------


def test_sets_without_sigmas_get_their_metrics_and_coco_ap_skipped_with_the_reason():
    rng = np.random.default_rng(6)
    gt = rng.uniform(20, 180, size=(3, 14, 2)).astype(np.float32)
    predictions = {"keypoints": gt + 1.0, "scores": np.ones((3, 14), np.float32),
                   "gt_keypoints": gt, "visibility": np.full((3, 14), 2),
                   "bbox": np.tile(np.float32([0, 0, 200, 200]), (3, 1)),
                   "area": np.full(3, 4e4, np.float32), "image_id": np.arange(3),
                   "annotation_id": np.arange(3)}
    names = ["pckh@0.5", "pck_torso@0.2", "pck_bbox@0.05"]
    # No annotations are read: the keypoint set alone rules COCO AP out.
    report = evaluate.score_predictions(predictions, {"images": []}, keypoint_set=LSP14,
                                        metric_names=names)
    assert report["coco"] is None and "'lsp14' has no OKS sigmas" in report["coco_skipped"]
    scores = report["metrics"]
    assert scores["metrics"] == names and scores["pckh@0.5"] == 1.0
    assert set(scores["per_keypoint"]) == set(names)
    assert list(scores["per_keypoint"]["pckh@0.5"]) == list(LSP14.names)
    text = evaluate.format_report(report)
    assert "COCO AP skipped: keypoint set 'lsp14' has no OKS sigmas" in text
    assert text.index("pckh@0.5:") < text.index("pck_torso@0.2:")
    with pytest.raises(ValueError, match="defines no head pair"):
        evaluate.metric_report({**predictions, "keypoints": np.zeros((3, 17, 2))}, COCO17,
                               ["pckh@0.5"])


@pytest.fixture(scope="module")
def heatmap_model_file(tmp_path_factory):
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_pose import TinyHeatmapPose

    path = tmp_path_factory.mktemp("heatmap") / "tiny.keras"
    model = TinyHeatmapPose(num_keypoints=17, input_size=64, seed=1)
    model.save(path)
    return path, model


def _reference_poster_accuracy(model, pattern, threshold):
    """pytorch-pose's accuracy on the model's heatmaps and the training targets of the crops."""
    from keras_pose import augment, codecs, metrics, targets
    from keras_pose.data.dataset import make_dataset

    batches = list(make_dataset(pattern, batch_size=64, num_keypoints=17, training=False,
                                deterministic=True))
    assert len(batches) == 1
    batch = batches[0]
    images = batch["image"]
    matrices = augment.resize_matrices(images.shape[1], 64, images.shape[0])
    heatmaps = np.asarray(codecs.final_output(model(augment.warp_images(images, matrices, 64,
                                                                 "gather"))))
    keypoints = np.asarray(batch["keypoints"]) * 64 / images.shape[1]
    weights = targets.keypoint_weights(keypoints, batch["visibility"], 64)
    target = np.asarray(targets.render_heatmaps(keypoints, weights, 64, 16))
    return metrics.poster_accuracy(heatmaps, target, threshold)


@pytest.mark.slow
def test_evaluate_cli_metrics_option_with_a_heatmap_model(records, heatmap_model_file, tmp_path,
                                                          capsys):
    pattern, manifest = records
    path, model = heatmap_model_file
    out = tmp_path / "eval"
    assert evaluate_main(["--model", str(path), "--records", pattern, "--output", str(out),
                          "--metrics", "pck_torso@0.2, poster_acc@0.5,pck_bbox@0.1,poster_acc@3"]
                         ) == 0
    report = json.loads((out / "evaluation.json").read_text())["metrics"]
    names = ["pck_torso@0.2", "poster_acc@0.5", "pck_bbox@0.1", "poster_acc@3.0"]
    assert report["metrics"] == names and set(report["per_keypoint"]) == set(names)
    assert report["num_scored"]["poster_acc@0.5"] == manifest.num_records
    # An untrained network is rarely within half a unit; three units give a spread of values.
    for threshold in (0.5, 3.0):
        reference = _reference_poster_accuracy(model, pattern, threshold)
        name = f"poster_acc@{threshold}"
        assert report[name] == pytest.approx(reference.overall)
        expected = [None if np.isnan(v) else pytest.approx(v) for v in reference.per_keypoint]
        assert list(report["per_keypoint"][name].values()) == expected
    assert 0.2 < report["poster_acc@3.0"] < 0.9, report["poster_acc@3.0"]
    printed = capsys.readouterr().out
    assert all(name in printed for name in names)
    assert (out / "pck_per_keypoint.png").stat().st_size > 1000
    # The exported SavedModel gives the same argmax cells back from its image-pixel keypoints.
    from keras_pose import export

    version = export.export_saved_model(model, name="heatmaps", base=tmp_path / "saved",
                                        update_config=False)
    out2 = tmp_path / "eval_saved"
    assert evaluate_main(["--model", str(version), "--records", pattern, "--output", str(out2),
                          "--metrics", ",".join(names)]) == 0
    saved = json.loads((out2 / "evaluation.json").read_text())["metrics"]
    for name in ("poster_acc@0.5", "poster_acc@3.0"):
        assert saved[name] == pytest.approx(report[name]), name
        assert saved["per_keypoint"][name] == pytest.approx(report["per_keypoint"][name])


def test_evaluate_cli_refuses_metrics_it_cannot_compute(records, constant_run, coco_truth,
                                                        tmp_path, capsys):
    pattern, _ = records
    run, _, _ = constant_run
    path, _, truth = coco_truth
    common = ["--records", pattern, "--output", str(tmp_path / "o")]
    assert evaluate_main(["--model", str(run), *common, "--metrics", "pck_torso,poster_acc"]) == 2
    assert "poster_acc@0.5: it needs heatmaps and the model 'constant_coordinate_pose' " \
        "outputs coordinates" in capsys.readouterr().err
    assert evaluate_main(["--model", str(run), *common, "--metrics", "pck_tosro@0.2"]) == 2
    assert "unknown metric 'pck_tosro@0.2'; valid metrics" in capsys.readouterr().err
    assert evaluate_main(["--model", str(run), *common, "--metrics", "pckh@0.5"]) == 2
    assert "keypoint set 'coco17' defines no head pair" in capsys.readouterr().err
    results = tmp_path / "results.json"
    results.write_text(json.dumps(evaluate.to_coco_results(_as_predictions(truth))))
    assert evaluate_main(["--predictions", str(results), "--annotations", str(path), "--output",
                          str(tmp_path / "p"), "--metrics", "poster_acc"]) == 2
    assert "a COCO results file holds keypoints in image pixels only" in capsys.readouterr().err


# -- pixel convention: flip test on mirror-symmetric inputs -----------------------------------


@pytest.mark.parametrize("kind", ["heatmaps", "coordinates"])
def test_flip_test_has_no_horizontal_bias_on_mirror_symmetric_inputs(kind):
    """A mirror-symmetric crop, flip-tested: keypoint k and its mirror partner land symmetric
    about the crop's centre line exactly (x_k + x_perm(k) = 2 * box_x + side, continuous), and
    in the COCO results (pixel indices) that is MMPose's ``W - 1 - x``. A half-pixel slip
    anywhere in the chain (resize, flip, decode, crop -> image, results) would show as a bias."""
    import sys

    import tensorflow as tf

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_pose import TinyCoordinatePose, TinyHeatmapPose

    model = (TinyHeatmapPose(num_keypoints=17, input_size=64, seed=5) if kind == "heatmaps"
             else TinyCoordinatePose(num_keypoints=17, input_size=(64, 48), seed=5))
    half = np.random.default_rng(0).integers(0, 256, (3, 80, 40, 3), dtype=np.uint8)
    images = np.concatenate([half, half[:, :, ::-1]], axis=2)  # symmetric about x = 40
    boxes = np.array([[10.0, 7.0, 120.0, 120.0], [0.0, 0.0, 80.0, 80.0],
                      [-20.5, 3.25, 40.0, 40.0]], np.float32)
    batch = {"image": tf.constant(images), "crop_box": tf.constant(boxes)}
    perm = COCO17.flip_permutation
    centre = 2 * boxes[:, 0:1] + boxes[:, 2:3]  # x_k + x_mirror(k) of a symmetric prediction
    plain = evaluate.make_predict_function(model, keypoint_set=COCO17)(batch)["keypoints"]
    plain = np.asarray(plain, np.float64)
    # The untrained network itself is not symmetric: without the flip test the sum is off.
    assert np.abs(plain[..., 0] + plain[:, perm, 0] - centre).max() > 1.0
    flipped = evaluate.make_predict_function(model, keypoint_set=COCO17, flip_test=True)(batch)
    points = np.asarray(flipped["keypoints"], np.float64)
    paired = perm != np.arange(17)
    sums = points[..., 0] + points[:, perm, 0]
    np.testing.assert_allclose(sums[:, paired], np.broadcast_to(centre, sums[:, paired].shape),
                               atol=2e-3)
    np.testing.assert_allclose(points[..., 1], points[:, perm, 1], atol=2e-3)
    # A keypoint that is its own mirror (the nose) sits on the centre line for coordinates. On
    # a flip-averaged heatmap of a symmetric input its channel is itself symmetric: the maximum
    # is a tie between mirror columns, which the argmax breaks to the left (not checked).
    if kind == "coordinates":
        np.testing.assert_allclose(2 * points[:, ~paired, 0], centre, atol=2e-3)
    # Written as COCO results (pixel indices), the mirror of x is W - 1 - x (MMPose's flip).
    results = evaluate.to_coco_results({
        "keypoints": points, "scores": np.ones(points.shape[:2]),
        "image_id": np.arange(3), "annotation_id": np.arange(3)})
    index_x = np.array([r["keypoints"][0::3] for r in results])
    index_sums = (index_x + index_x[:, perm])[:, paired]
    np.testing.assert_allclose(index_sums, np.broadcast_to(centre - 1, index_sums.shape),
                               atol=3e-3)
