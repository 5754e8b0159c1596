"""Scoring predictions: the named metrics overall and per keypoint, COCO AP where the keypoint
set allows it, with and without the flip test, and the printed report."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_pose import metrics
from keras_pose.evaluate.coco import coco_keypoint_ap, to_coco_results
from keras_pose.keypoints import KeypointSet


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _per_keypoint(result: metrics.PCKResult, keypoint_set: KeypointSet) -> dict:
    return {name: _finite_or_none(v) for name, v in zip(keypoint_set.names,
                                                        result.per_keypoint, strict=True)}


def metric_report(predictions: Mapping[str, np.ndarray], keypoint_set: KeypointSet,
                  metric_names: Sequence[str] = metrics.DEFAULT_METRICS) -> dict:
    """Named metrics (``keras_pose.metrics``) for predictions from :func:`predict_records`.

    Args:
        predictions: arrays as from :func:`predict_records` or :func:`match_results`.
        keypoint_set: the keypoint set (names, torso and head pairs).
        metric_names: the metrics, headline first (default ``pck_torso@0.2``,
            ``pck_bbox@0.05``).

    Returns:
        A JSON-ready dict: ``"metrics"`` (canonical names, headline first), one value per
        name (``report["pck_torso@0.2"]``), ``"per_keypoint"`` (``{name: {keypoint name:
        value}}``), ``"num_scored"`` (``{name: persons that entered it}``: PCK leaves out
        persons without a size), ``"num_persons"`` and ``"num_labeled"`` (labeled keypoints).
        Undefined values are ``None``.

    Raises:
        ValueError: an unknown name, or a metric undefined for this keypoint set or these
            predictions.
    """
    specs = metrics.parse_metrics(metric_names)
    metrics.check_metrics(specs, keypoint_set)
    pred = np.asarray(predictions["keypoints"], np.float64)
    if pred.shape[1:] != (keypoint_set.num_keypoints, 2):
        raise ValueError(
            f"predictions have shape {pred.shape}, expected [N, {keypoint_set.num_keypoints}, 2] "
            f"for keypoint set {keypoint_set.name!r}"
        )
    results = {spec.name: metrics.compute_metric(spec, predictions, keypoint_set)
               for spec in specs}
    report: dict[str, Any] = {"metrics": list(results)}
    report.update({name: _finite_or_none(r.overall) for name, r in results.items()})
    report["per_keypoint"] = {name: _per_keypoint(r, keypoint_set) for name, r in results.items()}
    report["num_scored"] = {name: r.num_persons for name, r in results.items()}
    report["num_persons"] = int(pred.shape[0])
    report["num_labeled"] = int(np.sum(np.asarray(predictions["visibility"]) > 0))
    return report


def coco_ap_skip_reason(keypoint_set: KeypointSet) -> str | None:
    """Why COCO keypoint AP cannot be computed for a keypoint set, or ``None``."""
    if keypoint_set.oks_sigmas is None:
        return (f"keypoint set {keypoint_set.name!r} has no OKS sigmas (COCO AP weighs each "
                "keypoint's error by its sigma)")
    return None


def score_predictions(predictions: Mapping[str, np.ndarray], annotations=None, *,
                      keypoint_set: KeypointSet,
                      metric_names: Sequence[str] = metrics.DEFAULT_METRICS,
                      results: Sequence[Mapping] | None = None) -> dict:
    """The named metrics, and COCO AP when annotations are given, for one set of predictions.

    Args:
        predictions: arrays as from :func:`predict_records` or :func:`match_results`.
        annotations: COCO ground truth (path, dict or ``COCO``), or ``None`` to skip AP.
        keypoint_set: the keypoint set.
        metric_names: the metrics, headline first (see :func:`metric_report`).
        results: the COCO results to score for AP (default: made from ``predictions``).

    Returns:
        ``{"metrics": metric_report(...), "coco": coco_keypoint_ap(...) or None}``, plus
        ``"coco_skipped"`` (the reason) when annotations were given but the keypoint set has
        no OKS sigmas.
    """
    report: dict[str, Any] = {
        "metrics": metric_report(predictions, keypoint_set, metric_names), "coco": None}
    if annotations is None:
        return report
    skipped = coco_ap_skip_reason(keypoint_set)
    if skipped:
        report["coco_skipped"] = skipped
        return report
    if results is None:
        finite = np.all(np.isfinite(predictions["keypoints"]), axis=(1, 2))
        subset = {key: np.asarray(value)[finite] for key, value in predictions.items()}
        results = to_coco_results(subset)
    report["coco"] = coco_keypoint_ap(annotations, results, keypoint_set=keypoint_set)
    return report


def score_with_and_without_flip(predictions: Mapping[str, np.ndarray],
                                flipped: Mapping[str, np.ndarray] | None, annotations=None, *,
                                keypoint_set: KeypointSet,
                                metric_names: Sequence[str] = metrics.DEFAULT_METRICS,
                                note: str | None = None) -> dict:
    """Scores without the flip test (the report's top level) and with it (``"flip_test"``).

    The papers report flip-tested figures; the plain ones show what the flip test adds.

    Args:
        predictions: predictions without the flip test (or a SavedModel's, as exported).
        flipped: the same persons predicted with the flip test, or ``None`` (then ``note``
            says why).
        annotations, keypoint_set, metric_names: as :func:`score_predictions`.

    Returns:
        :func:`score_predictions`' report of ``predictions`` plus ``"flip_test"``: the report
        of ``flipped`` (``"metrics"``, ``"coco"``) or ``None``, and ``"flip_test_note"``.
    """
    report = score_predictions(predictions, annotations, keypoint_set=keypoint_set,
                               metric_names=metric_names)
    report["flip_test"] = None if flipped is None else score_predictions(
        flipped, annotations, keypoint_set=keypoint_set, metric_names=metric_names)
    report["flip_test_note"] = note
    return report


def flip_comparison(report: Mapping) -> list[str]:
    """The headline and COCO AP without and with the flip test, one line each."""
    def fmt(value):
        return "n/a" if value is None else f"{value:.4f}"

    scores = report["metrics"]
    headline = scores["metrics"][0]
    flipped = report.get("flip_test")
    if not flipped:
        note = report.get("flip_test_note")
        return [f"{headline}: {fmt(scores[headline])}" + (f" ({note})" if note else "")]
    lines = [f"{headline}: {fmt(scores[headline])} without flip test, "
             f"{fmt(flipped['metrics'][headline])} with flip test (the papers report with)"]
    if report.get("coco") and flipped.get("coco"):
        lines.append(f"COCO AP: {fmt(report['coco']['AP'])} without flip test, "
                     f"{fmt(flipped['coco']['AP'])} with flip test")
    return lines


def format_report(report: Mapping) -> str:
    """Human-readable lines for a report from :func:`score_predictions` (or
    :func:`score_with_and_without_flip`: the comparison first, then both reports)."""
    if "flip_test" in report and isinstance(report.get("flip_test"), (Mapping, type(None))):
        plain = {k: v for k, v in report.items() if k not in ("flip_test", "flip_test_note")}
        lines = [*flip_comparison(report), "", "without flip test:", format_report(plain)]
        if report.get("flip_test"):
            lines += ["", "with flip test:", format_report(report["flip_test"])]
        return "\n".join(lines)
    scores = report["metrics"]

    def fmt(value):
        return "n/a" if value is None else f"{value:.4f}"

    lines = [f"persons: {scores['num_persons']}  labeled keypoints: {scores['num_labeled']}"]
    for name in scores["metrics"]:
        lines.append(f"{name:>16}: {fmt(scores[name])}  ({scores['num_scored'][name]} persons)")
    names = scores["metrics"]
    lines.append(f"{'keypoint':>16}  " + "  ".join(f"{m:>14}" for m in names))
    for keypoint in scores["per_keypoint"][names[0]]:
        values = "  ".join(f"{fmt(scores['per_keypoint'][m][keypoint]):>14}" for m in names)
        lines.append(f"{keypoint:>16}  {values}")
    if report.get("coco"):
        coco = report["coco"]
        lines.append("COCO keypoints (" + f"{coco['num_images']} images, "
                     f"{coco['num_results']} results):")
        lines.append(coco["summary"])
    elif report.get("coco_skipped"):
        lines.append(f"COCO AP skipped: {report['coco_skipped']}")
    return "\n".join(lines)
