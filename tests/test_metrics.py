"""PCK, PCKh, the poster's accuracy and OKS against hand-computed values; metric names."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from keras_pose import metrics
from keras_pose.keypoints import COCO17, LSP14, MPII16


def _two_persons():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 200, size=(2, 17, 2))
    # Torso of person 0: shoulder (5) at (0, 0), right hip (12) at (30, 40) -> 50 px.
    gt[0, 5], gt[0, 12] = (0.0, 0.0), (30.0, 40.0)
    gt[1, 5], gt[1, 12] = (100.0, 100.0), (100.0, 180.0)  # 80 px
    visibility = np.full((2, 17), 2)
    return gt, visibility


def test_torso_sizes_and_missing_torso():
    gt, visibility = _two_persons()
    np.testing.assert_allclose(metrics.torso_sizes(gt, visibility, COCO17), [50.0, 80.0])
    visibility[1, 12] = 0
    sizes = metrics.torso_sizes(gt, visibility, COCO17)
    assert sizes[0] == 50.0 and np.isnan(sizes[1])


def test_pck_with_known_offsets():
    gt, visibility = _two_persons()
    sizes = metrics.torso_sizes(gt, visibility, COCO17)  # 50, 80 -> thresholds 10, 16 at 0.2
    offsets = np.zeros_like(gt)
    # Person 0: keypoints 0..4 moved by 6, 8 (distance 10: correct, <= is inclusive),
    # keypoints 5..9 by 12 px along x (wrong), the rest exact.
    offsets[0, 0:5] = (6.0, 8.0)
    offsets[0, 5:10] = (12.0, 0.0)
    # Person 1: every keypoint 12 px away (correct at threshold 16); keypoint 16 20 px (wrong),
    # keypoint 3 unlabeled and far off (not counted).
    offsets[1, :] = (0.0, 12.0)
    offsets[1, 16] = (20.0, 0.0)
    offsets[1, 3] = (500.0, 0.0)
    visibility[1, 3] = 0
    result = metrics.pck(gt + offsets, gt, visibility, sizes, 0.2)
    # Person 0: 17 labeled, 12 correct. Person 1: 16 labeled, 15 correct.
    assert result.overall == pytest.approx(27 / 33)
    assert result.labeled.tolist() == [2, 2, 2, 1] + [2] * 13
    expected_correct = np.full(17, 2)
    expected_correct[5:10] = 1
    expected_correct[3] = 1
    expected_correct[16] = 1
    assert result.correct.tolist() == expected_correct.tolist()
    assert result.per_keypoint[16] == pytest.approx(0.5)
    assert result.num_persons == 2 and result.num_skipped == 0


def test_pck_leaves_out_persons_without_size_and_counts_nan_as_wrong():
    gt, visibility = _two_persons()
    sizes = np.array([50.0, np.nan])
    pred = gt.copy()
    pred[0, 0] = np.nan
    result = metrics.pck(pred, gt, visibility, sizes, 0.2)
    assert result.num_persons == 1 and result.num_skipped == 1
    assert result.overall == pytest.approx(16 / 17)
    assert result.labeled.sum() == 17
    assert np.isnan(metrics.pck(pred, gt, np.zeros((2, 17)), sizes, 0.2).overall)


def test_bbox_and_head_sizes():
    np.testing.assert_allclose(metrics.bbox_sizes([[0, 0, 30, 40], [5, 5, 100, 20]]), [40, 100])
    np.testing.assert_allclose(metrics.head_sizes([[10, 10, 40, 50]]), [0.6 * 50.0])
    gt = np.zeros((1, 16, 2))
    gt[0, 8], gt[0, 9] = (0, 0), (0, 25)
    np.testing.assert_allclose(
        metrics.head_sizes(gt=gt, visibility=np.ones((1, 16)), keypoint_set=MPII16), [25.0]
    )


def test_pck_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[N, K, 2\]"):
        metrics.pck(np.zeros((2, 17)), np.zeros((2, 17, 2)), np.ones((2, 17)), [1, 1], 0.2)
    with pytest.raises(ValueError, match="sizes"):
        metrics.pck(np.zeros((2, 17, 2)), np.zeros((2, 17, 2)), np.ones((2, 17)), [1], 0.2)
    with pytest.raises(ValueError, match="alpha"):
        metrics.pck(np.zeros((1, 17, 2)), np.zeros((1, 17, 2)), np.ones((1, 17)), [1], 0.0)


def test_oks_matches_pycocotools():
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(1)
    gt = rng.uniform(50, 150, size=(3, 17, 2))
    visibility = rng.integers(0, 3, size=(3, 17))
    visibility[:, 0] = 2
    areas = np.array([4000.0, 9000.0, 2500.0])
    pred = gt + rng.normal(0, 4, size=gt.shape)
    ours = metrics.oks(pred[:, None], gt[None], visibility[None], areas[None], COCO17.oks_sigmas)

    # COCOeval.computeOks on hand-made gts/dts for one image.
    def triples(points, vis):
        return np.concatenate([points, vis[:, None]], axis=1).ravel().tolist()

    evaluator = COCOeval(iouType="keypoints")
    evaluator.params.kpt_oks_sigmas = np.asarray(COCO17.oks_sigmas)
    evaluator._gts[1, 1] = [
        {"keypoints": triples(g, v), "area": a, "bbox": [0, 0, 200, 200]}
        for g, v, a in zip(gt, visibility, areas, strict=True)
    ]
    evaluator._dts[1, 1] = [
        {"keypoints": triples(p, np.ones(17)), "score": 1.0 - 0.1 * i}
        for i, p in enumerate(pred)
    ]
    reference = evaluator.computeOks(1, 1)
    np.testing.assert_allclose(ours, reference, rtol=1e-6)
    assert np.all(np.diag(ours) > 0.5)
    assert np.isnan(metrics.oks(pred[0], gt[0], np.zeros(17), 1000.0, COCO17.oks_sigmas))


# -- PCK on keypoint sets without COCO's layout -------------------------------------------------


def _lsp_person(torso_end=(60.0, 80.0)):
    gt = np.random.default_rng(2).uniform(0, 200, size=(14, 2))
    gt[9], gt[2] = (0.0, 0.0), torso_end  # left shoulder, right hip: the LSP torso
    return gt


def test_pck_torso_by_name_on_lsp14_with_a_person_without_torso():
    gt = np.stack([_lsp_person(), _lsp_person()])  # torso 100 px
    visibility = np.full((2, 14), 2)
    visibility[1, 2] = 0  # person 1: right hip unlabeled -> no torso, left out
    visibility[0, 5] = 0  # an unlabeled joint: never counted, however far off
    pred = gt.copy()
    pred[0, 0] += (12.0, 16.0)  # 20 px: correct at 0.2 x 100 (inclusive), wrong at 0.1
    pred[0, 1] += (21.0, 0.0)  # wrong at both
    pred[0, 5] += (500.0, 0.0)
    pred[1] += 1000.0  # left out with its person
    predictions = {"keypoints": pred, "gt_keypoints": gt, "visibility": visibility}
    result = metrics.compute_metric(metrics.parse_metric("pck_torso@0.2"), predictions, LSP14)
    assert (result.num_persons, result.num_skipped) == (1, 1)
    assert result.labeled.sum() == 13 and result.overall == pytest.approx(12 / 13)
    assert result.per_keypoint[0] == 1.0 and result.per_keypoint[1] == 0.0
    assert np.isnan(result.per_keypoint[5])
    tighter = metrics.compute_metric(metrics.parse_metric("pck_torso@0.1"), predictions, LSP14)
    assert tighter.overall == pytest.approx(11 / 13) and tighter.per_keypoint[0] == 0.0


def _mpii_persons():
    gt = np.random.default_rng(4).uniform(0, 200, size=(3, 16, 2))
    for person, head_top in enumerate([(0.0, 8.0), (0.0, 30.0), (0.0, 30.0)]):
        gt[person, 8], gt[person, 9] = (0.0, 0.0), head_top  # upper neck, head top
    visibility = np.full((3, 16), 2)
    visibility[2, 9] = 0  # person 2: no head top, and no head size -> left out
    pred = gt.copy()
    pred[0, 0] += (3.0, 4.0)  # 5 px
    pred[0, 1] += (6.0, 0.0)
    pred[1, 0] += (9.0, 12.0)  # 15 px
    pred[1, 1] += (16.0, 0.0)
    pred[2] += 1000.0
    return {"keypoints": pred, "gt_keypoints": gt, "visibility": visibility}


def test_pckh_uses_the_records_head_size_else_the_head_pair():
    predictions = _mpii_persons()
    spec = metrics.parse_metric("pckh@0.5")
    # Person 0 carries head size 10 (threshold 5: 5 px correct, 6 px wrong); person 1 carries 0
    # (unknown): the stand-in is its neck-head top distance 30 (threshold 15: 15 correct, 16
    # wrong); person 2 has neither.
    carried = metrics.compute_metric(spec, {**predictions, "head_size": np.array([10.0, 0, 0])},
                                     MPII16)
    assert (carried.num_persons, carried.num_skipped) == (2, 1)
    assert carried.overall == pytest.approx(30 / 32)
    assert carried.correct[0] == 2 and carried.correct[1] == 0
    # Without head sizes person 0's stand-in is 8 px (threshold 4): its 5 px joint is wrong too.
    standin = metrics.compute_metric(spec, predictions, MPII16)
    assert standin.overall == pytest.approx(29 / 32) and standin.correct[0] == 1
    np.testing.assert_allclose(
        metrics.head_sizes(gt=predictions["gt_keypoints"], visibility=predictions["visibility"],
                           keypoint_set=MPII16, head_size=[10.0, 0.0, 0.0]), [10.0, 30.0, np.nan])


# -- the poster's accuracy --------------------------------------------------------------------


def _one_hot(shape, peaks):
    """Heatmaps [N, h, w, K] that are 0 except 1 at each {(n, k): (row, col)}."""
    heatmaps = np.zeros(shape, np.float32)
    for (n, k), (row, col) in peaks.items():
        heatmaps[n, row, col, k] = 1.0
    return heatmaps


def test_poster_accuracy_by_hand():
    # Width 20: distances are in units of 20 / 10 = 2 cells, so at 0.5 a joint is correct up to
    # 1 cell (inclusive: the reference compares with <=).
    shape = (2, 20, 20, 3)
    target = _one_hot(shape, {
        (0, 0): (5, 5),
        (0, 1): (5, 5),
        (0, 2): (0, 7),  # row 0: 1-based y = 1, not > 1 -> not counted
        (1, 1): (10, 10),
        (1, 2): (3, 0),  # column 0: 1-based x = 1 -> not counted
    })  # (1, 0) all zero: unlabeled -> (0, 0) -> not counted
    pred = _one_hot(shape, {
        (0, 0): (5, 6),  # 1 cell: 0.5, correct
        (0, 1): (6, 6),  # sqrt(2) cells: 0.71, wrong
        (0, 2): (0, 7), (1, 0): (9, 9), (1, 2): (3, 0),
    })
    pred[1, :, :, 1] = -1.0  # no positive peak: the prediction is (0, 0), far off
    result = metrics.poster_accuracy(pred, target, 0.5)
    assert result.labeled.tolist() == [1, 2, 0] and result.correct.tolist() == [1, 0, 0]
    np.testing.assert_allclose(result.per_keypoint, [1.0, 0.0, np.nan])
    assert result.overall == pytest.approx(0.5)  # joints with nothing counted are left out
    assert metrics.poster_accuracy(pred, target, 0.4).per_keypoint[0] == 0.0
    # get_preds: 1-based (x, y), the first maximum in row-major order, (0, 0) without a peak.
    ties = _one_hot((1, 8, 8, 2), {(0, 0): (2, 7)})
    ties[0, 4, 1, 0] = 1.0
    ties[0, :, :, 1] = -0.5
    np.testing.assert_array_equal(metrics.heatmap_argmax(ties), [[[8, 3], [0, 0]]])


def test_poster_accuracy_averages_the_first_16_joints():
    shape = (1, 16, 16, 17)
    target = _one_hot(shape, {(0, k): (4, 4) for k in range(17)})
    pred = target.copy()
    pred[0, 4, 4, 16], pred[0, 12, 12, 16] = 0.0, 1.0  # the 17th joint is wrong
    result = metrics.poster_accuracy(pred, target)
    assert result.per_keypoint[16] == 0.0 and result.overall == 1.0
    assert metrics.poster_accuracy(pred, target, num_joints=17).overall == pytest.approx(16 / 17)
    # With fewer than 16 joints, all of them.
    assert metrics.poster_accuracy(pred[..., 10:], target[..., 10:]).overall == pytest.approx(
        6 / 7)


def test_poster_accuracy_from_keypoints_equals_the_heatmap_version():
    from keras_pose import decode, targets

    rng = np.random.default_rng(5)
    n, k, size, stride = 8, 17, 16, 4
    # Ground truth on the heatmap grid: some outside it, some in its first row or column.
    gt = rng.uniform(-1.5, size + 1.5, size=(n, k, 2))
    gt[:, :3] = rng.uniform(0.0, 1.0, size=(n, 3, 2))
    visibility = rng.integers(0, 3, size=(n, k))
    weights = targets.keypoint_weights(gt * stride, visibility, size * stride)
    target = np.asarray(targets.render_heatmaps(gt * stride, weights, size * stride, size,
                                                sigma=1.0))
    guess = gt + rng.uniform(-2.0, 2.0, size=gt.shape)
    pred = np.array(targets.render_heatmaps(guess * stride, np.ones((n, k)), size * stride,
                                             size, sigma=1.5))
    pred[0, :, :, 4:8] = -pred[0, :, :, 4:8]  # no positive peak
    for threshold in (0.5, 1.0):
        reference = metrics.poster_accuracy(pred, target, threshold)
        assert 0 < reference.labeled.sum() < n * k
        for refine in ("none", "quarter"):
            cells, peaks = decode.decode_heatmaps(pred, refine=refine)
            ours = metrics.poster_accuracy_keypoints(
                np.asarray(cells), gt, visibility, size, threshold,
                pred_scores=np.asarray(peaks))
            np.testing.assert_array_equal(ours.labeled, reference.labeled)
            np.testing.assert_array_equal(ours.correct, reference.correct)
            np.testing.assert_array_equal(ours.per_keypoint, reference.per_keypoint)
            assert ours.overall == reference.overall


# -- metrics by name --------------------------------------------------------------------------


def test_metric_names_parse_with_any_threshold():
    spec = metrics.parse_metric("pck_torso@0.1")
    assert (spec.kind, spec.threshold, spec.name) == ("pck_torso", 0.1, "pck_torso@0.1")
    assert spec.log_name == "val_pck_torso@0.1" and spec.label == "PCK@0.1 torso"
    # The defaults keep their epoch-log names; a bare kind takes its usual threshold.
    assert metrics.parse_metric(" pck_torso@0.20 ").log_name == "val_pck"
    assert metrics.parse_metric("pck_bbox").name == "pck_bbox@0.05"
    assert metrics.parse_metric("pck_bbox@0.05").log_name == "val_pck_bbox"
    assert metrics.parse_metric("pckh").log_name == "val_pckh@0.5"
    assert metrics.parse_metric("poster_acc@0.5").label == "poster acc@0.5"
    assert [s.name for s in metrics.parse_metrics(metrics.DEFAULT_METRICS)] == [
        "pck_torso@0.2", "pck_bbox@0.05"]


@pytest.mark.parametrize("names, message", [
    (["pck@0.2"], "unknown metric 'pck@0.2'; valid metrics: pck_torso@<threshold>"),
    (["pck_torso@abc"], "threshold after '@' must be a number > 0"),
    (["pckh@0"], "threshold after '@' must be a number > 0"),
    (["pckh@-1"], "threshold after '@' must be a number > 0"),
    (["pckh@nan"], "threshold after '@' must be a number > 0"),
    ([], "non-empty list"),
    ("pckh", "non-empty list"),
    (["pckh", "pckh@0.5"], "'pckh@0.5' is listed twice"),
])
def test_bad_metric_names_list_the_valid_ones(names, message):
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        metrics.parse_metrics(names)
    assert "poster_acc@<threshold>" in str(error.value) or "twice" in message


def test_metrics_undefined_for_the_keypoint_set_or_model_are_named():
    every = metrics.parse_metrics(["pck_torso", "pck_bbox", "pckh", "poster_acc"])
    metrics.check_metrics(every, LSP14)
    metrics.check_metrics(every, MPII16)
    with pytest.raises(ValueError, match="pckh@0.5: keypoint set 'coco17' defines no head pair"):
        metrics.check_metrics(every, COCO17)
    headless = dataclasses.replace(LSP14, name="no_torso", torso=None, head=None)
    with pytest.raises(ValueError) as error:
        metrics.check_metrics(every, headless, no_heatmaps="the model outputs coordinates")
    assert "pck_torso@0.2: keypoint set 'no_torso' defines no torso pair" in str(error.value)
    assert "pckh@0.5" in str(error.value)
    assert "poster_acc@0.5: it needs heatmaps and the model outputs coordinates" in str(
        error.value)
    assert "pck_bbox" not in str(error.value)
    predictions = {"keypoints": np.zeros((1, 14, 2)), "gt_keypoints": np.zeros((1, 14, 2)),
                   "visibility": np.ones((1, 14))}
    with pytest.raises(ValueError, match="poster_acc needs heatmaps"):
        metrics.compute_metric(every[3], predictions, LSP14)
