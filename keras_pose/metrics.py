"""Keypoint accuracy metrics in numpy, and a registry that names them.

PCK, the project's definition (used by the training callback, ``tools/evaluate.py`` and the
tests): for each labeled ground-truth keypoint (visibility > 0) of each person, in original-image
pixels, the prediction is correct if ``||pred - gt||_2 <= alpha * size``. PCK is the number of
correct keypoints over the number of labeled keypoints, over the persons whose size is defined
(finite and > 0). Sizes:

- torso: distance between the keypoint set's torso pair (COCO and LSP: left shoulder to right
  hip); the person is left out when either is unlabeled (:func:`torso_sizes`);
- bbox: ``max(width, height)`` of the ground-truth box (:func:`bbox_sizes`);
- head (MPII's PCKh): ``0.6 x`` the head-box diagonal where the record knows it, else the
  distance between the keypoint set's head pair (:func:`head_sizes`).

The poster's accuracy (:func:`poster_accuracy`) is the figure the public PyTorch code of the
Residual Stacked Hourglass poster prints while training: an integer-argmax PCK measured on the
heatmap grid against the argmax of the target heatmaps.

OKS follows ``pycocotools.cocoeval.COCOeval.computeOks`` for the labeled keypoints.

Metrics by name (:func:`parse_metric`, :func:`compute_metric`): ``<kind>@<threshold>``, with
the kinds of :data:`METRICS` (``pck_torso@0.2``, ``pck_bbox@0.05``, ``pckh@0.5``,
``poster_acc@0.5``); a bare kind takes its usual threshold (``pckh`` = ``pckh@0.5``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from keras_pose.keypoints import KeypointSet

# MPII's PCKh size: 0.6 x the diagonal of the annotated head box.
HEAD_SIZE_FACTOR = 0.6
# The stand-in without a head box: the head pair's distance (upper neck or neck to head top)
# times this factor. MPII's head box is roughly a square whose side is that distance ``d``, so
# 0.6 x its diagonal would be about 0.85 d; the common stand-in (PCKh on LSP-style sets) is
# ``d`` itself, slightly more lenient, and that is the one definition used here.
HEAD_STANDIN_FACTOR = 1.0


@dataclasses.dataclass(frozen=True)
class PCKResult:
    """The outcome of :func:`pck` (and of :func:`poster_accuracy`, which fills it alike).

    Attributes:
        overall: correct / labeled over all keypoints of the persons with a defined size
            (``nan`` when nothing was labeled); for the poster's accuracy the mean of the
            per-keypoint values of its first 16 keypoints instead.
        per_keypoint: [K] the same ratio per keypoint index (``nan`` where none was labeled).
        correct: [K] int counts of correct keypoints.
        labeled: [K] int counts of labeled keypoints (the denominators).
        num_persons: persons that entered the metric (size defined).
        num_skipped: persons left out because their size was undefined.
        alpha: the threshold factor used.
    """

    overall: float
    per_keypoint: np.ndarray
    correct: np.ndarray
    labeled: np.ndarray
    num_persons: int
    num_skipped: int
    alpha: float


def _as_points(name: str, value, num_keypoints: int | None = None) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 3 or array.shape[-1] != 2:
        raise ValueError(f"{name} must have shape [N, K, 2], received shape {array.shape}")
    if num_keypoints is not None and array.shape[1] != num_keypoints:
        raise ValueError(
            f"{name} has {array.shape[1]} keypoints, expected {num_keypoints} "
            f"(shape {array.shape})"
        )
    return array


def _as_visibility(value, shape: tuple[int, int]) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != shape:
        raise ValueError(f"visibility must have shape {list(shape)}, received {array.shape}")
    return array


def pck(pred, gt, visibility, sizes, alpha: float) -> PCKResult:
    """Percentage of correct keypoints.

    Args:
        pred: [N, K, 2] predicted keypoints (image pixels).
        gt: [N, K, 2] ground-truth keypoints (image pixels).
        visibility: [N, K] COCO visibility; keypoints with ``visibility > 0`` are counted.
        sizes: [N] per-person normalizing size in pixels; persons with a non-finite or
            non-positive size are left out (see :func:`torso_sizes`).
        alpha: threshold factor, ``> 0``.

    Returns:
        A :class:`PCKResult`.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, received alpha={alpha}")
    gt = _as_points("gt", gt)
    pred = _as_points("pred", pred, gt.shape[1])
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    n, k = gt.shape[:2]
    visibility = _as_visibility(visibility, (n, k))
    sizes = np.asarray(sizes, dtype=np.float64)
    if sizes.shape != (n,):
        raise ValueError(f"sizes must have shape [{n}], received {sizes.shape}")
    valid = np.isfinite(sizes) & (sizes > 0)
    labeled = (visibility > 0) & valid[:, None]
    distance = np.linalg.norm(pred - gt, axis=-1)
    # A nan prediction is never correct; nan <= x is False.
    with np.errstate(invalid="ignore"):
        correct = labeled & (distance <= alpha * np.where(valid, sizes, 0.0)[:, None])
    correct_k = correct.sum(axis=0).astype(np.int64)
    labeled_k = labeled.sum(axis=0).astype(np.int64)
    total = int(labeled_k.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        per_keypoint = np.where(labeled_k > 0, correct_k / np.maximum(labeled_k, 1), np.nan)
    overall = float(correct_k.sum() / total) if total else float("nan")
    return PCKResult(
        overall=overall,
        per_keypoint=per_keypoint,
        correct=correct_k,
        labeled=labeled_k,
        num_persons=int(valid.sum()),
        num_skipped=int(n - valid.sum()),
        alpha=float(alpha),
    )


def torso_sizes(gt, visibility, keypoint_set: KeypointSet) -> np.ndarray:
    """Per-person torso size: distance between ``keypoint_set.torso``'s two keypoints.

    Args:
        gt: [N, K, 2] ground-truth keypoints.
        visibility: [N, K] COCO visibility.
        keypoint_set: the layout; its ``torso`` pair must be defined.

    Returns:
        [N] float64 sizes, ``nan`` where either torso keypoint is unlabeled.
    """
    if keypoint_set.torso is None:
        raise ValueError(f"Keypoint set {keypoint_set.name!r} defines no torso pair")
    gt = _as_points("gt", gt, keypoint_set.num_keypoints)
    visibility = _as_visibility(visibility, gt.shape[:2])
    a, b = keypoint_set.torso
    size = np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)
    both = (visibility[:, a] > 0) & (visibility[:, b] > 0)
    return np.where(both, size, np.nan)


def bbox_sizes(bbox) -> np.ndarray:
    """Per-person bbox size ``max(w, h)`` of COCO boxes [N, 4] (x, y, w, h)."""
    bbox = np.asarray(bbox, dtype=np.float64)
    if bbox.ndim != 2 or bbox.shape[-1] != 4:
        raise ValueError(f"bbox must have shape [N, 4] (x, y, w, h), received {bbox.shape}")
    return np.maximum(bbox[:, 2], bbox[:, 3])


def head_sizes(head_boxes=None, *, gt=None, visibility=None,
               keypoint_set: KeypointSet | None = None, head_size=None) -> np.ndarray:
    """Per-person PCKh size.

    Args:
        head_boxes: [N, 4] head boxes ``x1, y1, x2, y2`` (MPII's annotated head rectangle); the
            size is ``0.6 x`` its diagonal, the MPII benchmark's definition.
        gt: with ``visibility`` and ``keypoint_set``, used where no head box or head size is
            known: the distance between ``keypoint_set.head`` (neck to head top) times
            :data:`HEAD_STANDIN_FACTOR` (1: see there); ``nan`` where either is unlabeled.
        visibility: [N, K] COCO visibility (only with ``gt``).
        keypoint_set: the layout (only with ``gt``).
        head_size: optional [N] sizes the records carry (pixels, already ``0.6 x`` the
            diagonal); where finite and > 0 they replace the stand-in, where 0 (unknown) the
            stand-in is used.

    Returns:
        [N] float64 sizes.
    """
    if head_boxes is not None:
        boxes = np.asarray(head_boxes, dtype=np.float64)
        if boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise ValueError(
                f"head_boxes must have shape [N, 4] (x1, y1, x2, y2), received {boxes.shape}"
            )
        diagonal = np.linalg.norm(boxes[:, 2:] - boxes[:, :2], axis=-1)
        return HEAD_SIZE_FACTOR * diagonal
    if gt is None or visibility is None or keypoint_set is None:
        raise ValueError("head_sizes needs head_boxes, or gt, visibility and keypoint_set")
    if keypoint_set.head is None:
        raise ValueError(f"Keypoint set {keypoint_set.name!r} defines no head pair")
    gt = _as_points("gt", gt, keypoint_set.num_keypoints)
    visibility = _as_visibility(visibility, gt.shape[:2])
    a, b = keypoint_set.head
    size = HEAD_STANDIN_FACTOR * np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)
    both = (visibility[:, a] > 0) & (visibility[:, b] > 0)
    sizes = np.where(both, size, np.nan)
    if head_size is None:
        return sizes
    known = np.asarray(head_size, dtype=np.float64)
    if known.shape != sizes.shape:
        raise ValueError(f"head_size must have shape [{sizes.shape[0]}], received {known.shape}")
    with np.errstate(invalid="ignore"):
        carried = np.isfinite(known) & (known > 0)
    return np.where(carried, known, sizes)


def oks(pred, gt, visibility, areas, sigmas) -> np.ndarray:
    """COCO object keypoint similarity between predictions and ground truths.

    Same formula as ``COCOeval.computeOks`` for persons with labeled keypoints:
    ``mean over labeled k of exp(-d_k^2 / (2 * area * (2 sigma_k)^2))``. Inputs broadcast, so
    ``oks(pred[:, None], gt[None], vis[None], areas[None], sigmas)`` gives a [D, G] matrix.

    Args:
        pred: [..., K, 2] predicted keypoints.
        gt: [..., K, 2] ground-truth keypoints.
        visibility: [..., K] COCO visibility of the ground truth.
        areas: [...] ground-truth segmentation areas (pixels^2).
        sigmas: [K] per-keypoint sigmas (``KeypointSet.oks_sigmas``).

    Returns:
        [...] OKS in [0, 1]; ``nan`` for persons without labeled keypoints.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    visibility = np.asarray(visibility)
    if sigmas is None:
        raise ValueError("OKS needs per-keypoint sigmas; this keypoint set defines none")
    sigmas = np.asarray(sigmas, dtype=np.float64)
    if pred.shape[-1] != 2 or gt.shape[-1] != 2:
        raise ValueError(f"pred and gt must end in [K, 2], received {pred.shape}, {gt.shape}")
    k = sigmas.shape[0]
    if pred.shape[-2] != k or gt.shape[-2] != k or visibility.shape[-1] != k:
        raise ValueError(
            f"sigmas has {k} keypoints but pred {pred.shape}, gt {gt.shape}, "
            f"visibility {visibility.shape}"
        )
    variances = (2.0 * sigmas) ** 2
    squared = np.sum((pred - gt) ** 2, axis=-1)
    areas = np.asarray(areas, dtype=np.float64)[..., None]
    e = squared / variances / (areas + np.spacing(1)) / 2.0
    labeled = visibility > 0
    labeled, e = np.broadcast_arrays(labeled, e)
    count = labeled.sum(axis=-1)
    total = np.where(labeled, np.exp(-e), 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# -- the poster's accuracy ------------------------------------------------------------------

# The poster's code averages the per-joint accuracies of the first 16 joints (its MPII joints).
POSTER_NUM_JOINTS = 16
# Its distances are measured in units of output_res / 10 (output_res = heatmap width).
POSTER_NORMALIZER = 10.0


def heatmap_argmax(heatmaps) -> np.ndarray:
    """1-based integer ``(x, y)`` of each heatmap's maximum, ``(0, 0)`` where it is <= 0.

    The reference code's ``get_preds``: the first maximum in row-major order (``x = col + 1``,
    ``y = row + 1``), zeroed where the peak value is not positive (an all-zero target heatmap,
    i.e. an unlabeled or out-of-frame joint, becomes ``(0, 0)``).

    Args:
        heatmaps: [N, h, w, K] (channels last, as keras-pose models output them).

    Returns:
        [N, K, 2] float64.
    """
    heatmaps = np.asarray(heatmaps)
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [N, h, w, K], received shape {heatmaps.shape}")
    n, h, w, k = heatmaps.shape
    flat = np.moveaxis(heatmaps, -1, 1).reshape(n, k, h * w)
    index = np.argmax(flat, axis=-1)
    peak = np.take_along_axis(flat, index[..., None], axis=-1)[..., 0]
    cells = np.stack([index % w + 1, index // w + 1], axis=-1).astype(np.float64)
    return np.where((peak > 0)[..., None], cells, 0.0)


def _poster_from_cells(pred_cells: np.ndarray, gt_cells: np.ndarray, width: int,
                       threshold: float, num_joints: int) -> PCKResult:
    """The reference's ``calc_dists``, ``dist_acc`` and ``accuracy`` on 1-based cells."""
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, received threshold={threshold}")
    # A joint counts only where the target's argmax has both 1-based coordinates > 1: the
    # reference uses (0, 0) for "no target" and its test also drops row 0 and column 0.
    counted = (gt_cells[..., 0] > 1) & (gt_cells[..., 1] > 1)
    distance = np.linalg.norm(pred_cells - gt_cells, axis=-1) / (width / POSTER_NORMALIZER)
    # `dists.le(thr)` in the reference: a distance equal to the threshold is correct.
    with np.errstate(invalid="ignore"):
        correct = counted & (distance <= threshold)
    correct_k = correct.sum(axis=0).astype(np.int64)
    counted_k = counted.sum(axis=0).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_keypoint = np.where(counted_k > 0, correct_k / np.maximum(counted_k, 1), np.nan)
    # Joints with nothing counted are left out of the mean (the reference's -1).
    first = per_keypoint[:min(num_joints, per_keypoint.shape[0])]
    first = first[np.isfinite(first)]
    return PCKResult(
        overall=float(first.mean()) if first.size else float("nan"),
        per_keypoint=per_keypoint,
        correct=correct_k,
        labeled=counted_k,
        num_persons=int(gt_cells.shape[0]),
        num_skipped=0,
        alpha=float(threshold),
    )


def poster_accuracy(pred_heatmaps, target_heatmaps, threshold: float = 0.5, *,
                    num_joints: int = POSTER_NUM_JOINTS) -> PCKResult:
    """The accuracy printed by the Residual Stacked Hourglass poster's public PyTorch code.

    As ``evaluation.accuracy`` of bearpaw/pytorch-pose computes it: the 1-based integer argmax
    of each predicted and each target heatmap (:func:`heatmap_argmax`); a joint counts only
    where the target's argmax has both coordinates > 1; its normalised distance is
    ``||pred - gt|| / (w / 10)`` with ``w`` the heatmap width; it is correct if that is
    ``<= threshold``. Per joint: correct / counted (``nan`` where nothing counted); overall: the
    mean of the per-joint values of the first ``num_joints`` joints (all when K is smaller),
    leaving out joints with nothing counted.

    The per-joint values here are pooled over all N persons; the reference's training log
    averages per-batch figures instead, which differs when batches count different joints.

    Args:
        pred_heatmaps: [N, h, w, K] predicted heatmaps (a model's final output).
        target_heatmaps: [N, h, w, K] the training targets for the same crops.
        threshold: the reference's ``thr``.
        num_joints: joints in the overall mean (the reference passes 16 joint indices).

    Returns:
        A :class:`PCKResult`; ``labeled`` holds the counted joints.
    """
    pred = np.asarray(pred_heatmaps)
    target = np.asarray(target_heatmaps)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target heatmaps differ in shape: {pred.shape} vs "
                         f"{target.shape}")
    return _poster_from_cells(heatmap_argmax(pred), heatmap_argmax(target), pred.shape[2],
                              threshold, num_joints)


def poster_accuracy_keypoints(pred_points, gt_points, visibility, heatmap_size,
                              threshold: float = 0.5, *, pred_scores=None,
                              num_joints: int = POSTER_NUM_JOINTS) -> PCKResult:
    """:func:`poster_accuracy` from keypoints on the heatmap grid instead of heatmaps.

    Predictions: the cell containing each point (``floor``), which is the argmax cell when the
    points come from ``decode.decode_heatmaps`` (``refine="none"`` gives its centre, the
    quarter-pixel step stays inside it); where ``pred_scores`` (the heatmap peaks) is <= 0 the
    prediction is ``(0, 0)``, the reference's mask.

    Ground truth: the cell containing each labeled keypoint inside the grid, else ``(0, 0)``.
    That is the target heatmap's argmax: the target (``targets.render_heatmaps``) is zero for
    unlabeled and out-of-frame keypoints, and otherwise a Gaussian centred on the keypoint's
    continuous position, largest at the pixel whose centre is nearest, i.e. index
    ``floor(coord)``. The two differ only where a coordinate is an exact integer (two pixel
    centres tie and argmax takes the first, ``coord - 1``).

    Args:
        pred_points: [N, K, 2] predicted (x, y) in heatmap coordinates.
        gt_points: [N, K, 2] ground truth in heatmap coordinates (the input-pixel keypoints
            divided by the stride).
        visibility: [N, K] COCO visibility of the ground truth.
        heatmap_size: the grid, an int or (height, width).
        threshold: as in :func:`poster_accuracy`.
        pred_scores: optional [N, K] predicted heatmap peaks.
        num_joints: as in :func:`poster_accuracy`.

    Returns:
        A :class:`PCKResult`.
    """
    gt = _as_points("gt_points", gt_points)
    pred = _as_points("pred_points", pred_points, gt.shape[1])
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {pred.shape} vs {gt.shape}")
    visibility = _as_visibility(visibility, gt.shape[:2])
    if isinstance(heatmap_size, (int, np.integer)):
        heatmap_size = (heatmap_size, heatmap_size)
    height, width = (int(v) for v in heatmap_size)
    pred_cells = np.floor(pred) + 1.0
    if pred_scores is not None:
        scores = _as_visibility(pred_scores, gt.shape[:2])
        pred_cells = np.where((scores > 0)[..., None], pred_cells, 0.0)
    with np.errstate(invalid="ignore"):
        inside = ((gt[..., 0] >= 0) & (gt[..., 0] < width) & (gt[..., 1] >= 0)
                  & (gt[..., 1] < height))
    gt_cells = np.where(((visibility > 0) & inside)[..., None], np.floor(gt) + 1.0, 0.0)
    return _poster_from_cells(pred_cells, gt_cells, width, threshold, num_joints)


# -- metrics by name ------------------------------------------------------------------------

# What a metric reads from the prediction arrays (``keras_pose.evaluate.predict_records``):
# ``keypoints``, ``gt_keypoints`` [N, K, 2] image pixels and ``visibility`` [N, K] always;
# ``bbox`` [N, 4] for pck_bbox; optionally ``head_size`` [N] for pckh; ``heatmap_keypoints``
# (argmax cell centres), ``heatmap_gt`` [N, K, 2] heatmap coordinates, ``heatmap_size``
# [N, 2] (h, w) and ``scores`` [N, K] (heatmap peaks) for poster_acc.
MetricFunction = Callable[[Mapping[str, np.ndarray], KeypointSet, float], PCKResult]

NO_HEATMAPS = "the predictions carry no heatmap-grid keypoints"


def _truth(predictions: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(predictions["gt_keypoints"], np.float64),
            np.asarray(predictions["visibility"]))


def _pck_torso(predictions, keypoint_set: KeypointSet, threshold: float) -> PCKResult:
    gt, visibility = _truth(predictions)
    return pck(predictions["keypoints"], gt, visibility,
               torso_sizes(gt, visibility, keypoint_set), threshold)


def _pck_bbox(predictions, keypoint_set: KeypointSet, threshold: float) -> PCKResult:
    gt, visibility = _truth(predictions)
    return pck(predictions["keypoints"], gt, visibility, bbox_sizes(predictions["bbox"]),
               threshold)


def _pckh(predictions, keypoint_set: KeypointSet, threshold: float) -> PCKResult:
    gt, visibility = _truth(predictions)
    sizes = head_sizes(gt=gt, visibility=visibility, keypoint_set=keypoint_set,
                       head_size=predictions.get("head_size"))
    return pck(predictions["keypoints"], gt, visibility, sizes, threshold)


def _poster_acc(predictions, keypoint_set: KeypointSet, threshold: float) -> PCKResult:
    missing = [key for key in ("heatmap_keypoints", "heatmap_gt", "heatmap_size")
               if key not in predictions]
    if missing:
        raise ValueError(f"poster_acc needs heatmaps: {NO_HEATMAPS} ({', '.join(missing)})")
    sizes = np.unique(np.asarray(predictions["heatmap_size"]).reshape(-1, 2), axis=0)
    if sizes.shape[0] != 1:
        raise ValueError(f"poster_acc needs one heatmap size, found {sizes.tolist()}")
    return poster_accuracy_keypoints(
        predictions["heatmap_keypoints"], predictions["heatmap_gt"],
        predictions["visibility"], tuple(sizes[0]), threshold,
        pred_scores=predictions.get("scores"))


# name -> function(predictions, keypoint_set, threshold).
METRICS: dict[str, MetricFunction] = {
    "pck_torso": _pck_torso,
    "pck_bbox": _pck_bbox,
    "pckh": _pckh,
    "poster_acc": _poster_acc,
}
DEFAULT_THRESHOLDS = {"pck_torso": 0.2, "pck_bbox": 0.05, "pckh": 0.5, "poster_acc": 0.5}
LABELS = {"pck_torso": "PCK@{} torso", "pck_bbox": "PCK@{} bbox", "pckh": "PCKh@{}",
          "poster_acc": "poster acc@{}"}
DEFAULT_METRICS = ("pck_torso@0.2", "pck_bbox@0.05")
# Epoch-log names these two had before metrics could be chosen; best-checkpoint records,
# early stopping and TensorBoard runs made since keep reading them.
LEGACY_LOG_NAMES = {"pck_torso@0.2": "val_pck", "pck_bbox@0.05": "val_pck_bbox"}


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """One metric by name: a kind of :data:`METRICS` and its threshold.

    Attributes:
        kind: ``"pck_torso"``, ``"pck_bbox"``, ``"pckh"`` or ``"poster_acc"``.
        threshold: PCK's alpha, or the poster accuracy's normalised-distance threshold.
    """

    kind: str
    threshold: float

    def __post_init__(self):
        # A plain float, so names read "0.2" whatever number type was passed.
        object.__setattr__(self, "threshold", float(self.threshold))

    @property
    def name(self) -> str:
        """The canonical name, ``kind@threshold`` (``pck_torso@0.2``)."""
        return f"{self.kind}@{self.threshold!r}"

    @property
    def log_name(self) -> str:
        """The key in Keras epoch logs (TensorBoard: ``validation/epoch_<log_name - val_>``)."""
        return LEGACY_LOG_NAMES.get(self.name, f"val_{self.name}")

    @property
    def label(self) -> str:
        """How a person reads it (``PCK@0.2 torso``)."""
        return LABELS[self.kind].format(repr(self.threshold))


def valid_metric_names() -> str:
    """The valid names, for error messages."""
    return ", ".join(f"{kind}@<threshold> (bare {kind!r} = {kind}@{DEFAULT_THRESHOLDS[kind]})"
                     for kind in METRICS)


def parse_metric(text: str) -> MetricSpec:
    """``"pck_torso@0.1"`` -> ``MetricSpec("pck_torso", 0.1)``; a bare kind takes its default.

    Raises:
        ValueError: unknown kind or bad threshold; the message lists the valid names.
    """
    if not isinstance(text, str):
        raise ValueError(f"a metric name must be a string, received {text!r}; valid metrics: "
                         f"{valid_metric_names()}")
    kind, at, raw = text.strip().partition("@")
    if kind not in METRICS:
        raise ValueError(f"unknown metric {text!r}; valid metrics: {valid_metric_names()}")
    if not at:
        return MetricSpec(kind, DEFAULT_THRESHOLDS[kind])
    try:
        threshold = float(raw)
    except ValueError:
        threshold = math.nan
    if not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"metric {text!r}: the threshold after '@' must be a number > 0; "
                         f"valid metrics: {valid_metric_names()}")
    return MetricSpec(kind, threshold)


def parse_metrics(names: Sequence[str]) -> list[MetricSpec]:
    """Parse a list of metric names (the first is the headline); no repeats, at least one."""
    if isinstance(names, str) or not names:
        raise ValueError(f"expected a non-empty list of metric names, received {names!r}; "
                         f"valid metrics: {valid_metric_names()}")
    specs = [parse_metric(name) for name in names]
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ValueError(f"metric {spec.name!r} is listed twice in {list(names)}")
        seen.add(spec.name)
    return specs


def unavailable_reason(spec: MetricSpec, keypoint_set: KeypointSet, *,
                       no_heatmaps: str | None = None) -> str | None:
    """Why ``spec`` cannot be computed for this keypoint set (and model), or ``None``.

    Args:
        spec: the metric.
        keypoint_set: the records' keypoint set.
        no_heatmaps: why the predictions will carry no heatmaps (a coordinate model, a
            SavedModel, a results file), or ``None`` when they will.
    """
    if spec.kind == "pck_torso" and keypoint_set.torso is None:
        return f"keypoint set {keypoint_set.name!r} defines no torso pair"
    if spec.kind == "pckh" and keypoint_set.head is None:
        # The head pair is the stand-in for records that carry no head size.
        return f"keypoint set {keypoint_set.name!r} defines no head pair"
    if spec.kind == "poster_acc" and no_heatmaps:
        return f"it needs heatmaps and {no_heatmaps}"
    return None


def check_metrics(specs: Sequence[MetricSpec], keypoint_set: KeypointSet, *,
                  no_heatmaps: str | None = None) -> None:
    """Raise ``ValueError`` naming every metric of ``specs`` that cannot be computed."""
    problems = []
    for spec in specs:
        reason = unavailable_reason(spec, keypoint_set, no_heatmaps=no_heatmaps)
        if reason:
            problems.append(f"{spec.name}: {reason}")
    if problems:
        raise ValueError("metrics undefined here: " + "; ".join(problems))


def compute_metric(spec: MetricSpec, predictions: Mapping[str, np.ndarray],
                   keypoint_set: KeypointSet) -> PCKResult:
    """Score prediction arrays (see the keys above) with one named metric."""
    return METRICS[spec.kind](predictions, keypoint_set, spec.threshold)
