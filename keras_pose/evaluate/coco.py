"""COCO keypoint results and AP: writing results, reading ground truth, matching any system's
results file to the ground-truth persons, and ``COCOeval``."""

from __future__ import annotations

import contextlib
import copy
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from keras_pose import metrics
from keras_pose.io import read_json
from keras_pose.keypoints import (
    KeypointSet,
    coord_to_index,
    index_to_coord,
    infer_keypoint_set,
    keypoints_from_coco,
)

COCO_STATS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def to_coco_results(predictions: Mapping[str, np.ndarray], *, category_id: int = 1) -> list[dict]:
    """COCO keypoint results (one per person) from prediction arrays.

    Each result has ``image_id``, ``category_id``, ``keypoints`` (x, y, keypoint score
    triples; ``x, y`` in COCO's pixel indices: the continuous predictions ``- 0.5``), ``score``
    (mean keypoint score) and ``annotation_id`` (the ground-truth person the
    prediction was made for; extra keys are allowed by COCO's results format and let
    :func:`match_results` pair results with persons exactly).
    """
    points = coord_to_index(np.asarray(predictions["keypoints"], np.float64))
    scores = np.asarray(predictions["scores"], np.float64)
    results = []
    for i in range(points.shape[0]):
        triples = np.concatenate([points[i], scores[i][:, None]], axis=1)
        result = {
            "image_id": int(predictions["image_id"][i]),
            "category_id": int(category_id),
            "keypoints": [round(float(v), 3) for v in triples.ravel()],
            "score": round(float(np.mean(scores[i])), 6),
        }
        if "annotation_id" in predictions:
            result["annotation_id"] = int(predictions["annotation_id"][i])
        results.append(result)
    return results


def _quiet(function, *args):
    """Run a pycocotools call without its prints (they go to the caller's report instead)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args)


def load_coco(annotations):
    """A ``pycocotools.coco.COCO`` from a path or an already loaded dataset dict."""
    if isinstance(annotations, COCO):
        return annotations
    coco = COCO()
    if isinstance(annotations, (str, os.PathLike)):
        dataset = read_json(annotations, "COCO annotation file")
    else:
        dataset = copy.deepcopy(dict(annotations))
    for key in ("images", "annotations", "categories"):
        if key not in dataset:
            raise ValueError(f"COCO annotations lack the {key!r} list (keys: {sorted(dataset)})")
    coco.dataset = dataset
    _quiet(coco.createIndex)
    return coco


def keypoint_set_for(coco, category_id: int = 1) -> KeypointSet:
    """The keypoint set of a COCO category's keypoint names (``keypoints.infer_keypoint_set``)."""
    try:
        names = tuple(coco.loadCats([category_id])[0].get("keypoints", ()))
    except (KeyError, IndexError):
        raise ValueError(f"COCO annotations have no category with id {category_id}") from None
    try:
        return infer_keypoint_set(names=names, num_keypoints=len(names))
    except ValueError as error:
        raise ValueError(f"COCO category {category_id}: {error}") from None


def coco_keypoint_ap(annotations, results: Sequence[Mapping], *,
                     image_ids: Iterable[int] | None = None,
                     keypoint_set: KeypointSet | None = None) -> dict:
    """COCO keypoint AP/AR with ``COCOeval`` (iouType ``"keypoints"``).

    Args:
        annotations: COCO ground truth (path, dataset dict or ``COCO`` object).
        results: COCO keypoint results (see :func:`to_coco_results`).
        image_ids: images to evaluate on; default the images that have results.
        keypoint_set: supplies the OKS sigmas (default: matched from the annotations).

    Returns:
        ``{"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}`` floats
        (``None`` where COCO reports -1, i.e. no ground truth in that area range), plus
        ``"num_images"``, ``"num_results"`` and ``"summary"`` (COCOeval's printed table).
    """
    coco_gt = load_coco(annotations)
    keypoint_set = keypoint_set or keypoint_set_for(coco_gt)
    if keypoint_set.oks_sigmas is None:
        raise ValueError(
            f"Keypoint set {keypoint_set.name!r} has no OKS sigmas; COCO AP needs them")
    if not results:
        raise ValueError("No results to evaluate")
    known = set(coco_gt.getImgIds())
    unknown = sorted({int(r["image_id"]) for r in results} - known)
    if unknown:
        raise ValueError(
            f"{len(unknown)} result image ids are not in the annotations, e.g. {unknown[:5]}"
        )
    # loadRes writes into the dicts it gets; keep the caller's results untouched.
    clean = [{k: v for k, v in r.items() if k not in ("bbox", "area", "id")} for r in results]
    coco_dt = _quiet(coco_gt.loadRes, clean)
    evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
    evaluator.params.kpt_oks_sigmas = np.asarray(keypoint_set.oks_sigmas, np.float64)
    ids = sorted(set(image_ids) if image_ids is not None else {int(r["image_id"])
                                                               for r in results})
    evaluator.params.imgIds = ids
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    report: dict[str, Any] = {
        name: (None if value < 0 else float(value))
        for name, value in zip(COCO_STATS, evaluator.stats, strict=True)
    }
    report["num_images"] = len(ids)
    report["num_results"] = len(results)
    report["summary"] = "\n".join(
        line for line in summary.getvalue().splitlines() if line.lstrip().startswith("Average")
    )
    return report


def ground_truth_arrays(coco, image_ids: Iterable[int] | None = None,
                        category_id: int = 1) -> dict[str, np.ndarray]:
    """Ground-truth persons (with labeled keypoints, not crowd) as prediction-style arrays.

    ``gt_keypoints`` are continuous: the file's pixel indices ``+ 0.5`` (unlabeled stay 0).
    """
    ids = coco.getImgIds() if image_ids is None else sorted(set(image_ids))
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=ids, catIds=[category_id]))
            if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0]
    n = len(anns)
    k = len(anns[0]["keypoints"]) // 3 if anns else 0
    triples = keypoints_from_coco(
        np.asarray([a["keypoints"] for a in anns], np.float64).reshape(n, k, 3))
    return {
        "gt_keypoints": triples[..., :2].astype(np.float32),
        "visibility": triples[..., 2].astype(np.int32),
        "bbox": np.asarray([a["bbox"] for a in anns], np.float32).reshape(n, 4),
        "area": np.asarray([a.get("area", 0.0) for a in anns], np.float32),
        "image_id": np.asarray([a["image_id"] for a in anns], np.int64),
        "annotation_id": np.asarray([a["id"] for a in anns], np.int64),
    }


def match_results(results: Sequence[Mapping], annotations, *,
                  keypoint_set: KeypointSet | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Pair COCO keypoint results with ground-truth persons, for PCK.

    A result carrying ``annotation_id`` (as :func:`to_coco_results` writes) is paired with that
    person. Other results are matched per image greedily, highest score first, to the unmatched
    person with the highest OKS (mean keypoint distance when the set has no OKS sigmas).
    Ground-truth persons (labeled, not crowd) of the images that have results but no matched
    result get ``nan`` predictions, so their keypoints count as wrong.

    Result keypoints are COCO pixel indices; they are matched and returned in continuous
    coordinates (``+ 0.5``), as the ground truth from :func:`ground_truth_arrays` is.

    Returns:
        ``(predictions, info)``: prediction arrays as from :func:`predict_records`, and counts
        ``{"num_results", "num_matched", "num_unmatched_results", "num_missed_persons"}``.
    """
    coco = load_coco(annotations)
    keypoint_set = keypoint_set or keypoint_set_for(coco)
    k = keypoint_set.num_keypoints
    image_ids = sorted({int(r["image_id"]) for r in results})
    truth = ground_truth_arrays(coco, image_ids)
    n = truth["annotation_id"].shape[0]
    points = np.full((n, k, 2), np.nan, np.float32)
    scores = np.zeros((n, k), np.float32)
    row_of = {int(a): i for i, a in enumerate(truth["annotation_id"])}
    taken = np.zeros(n, bool)
    unmatched = 0
    pending: dict[int, list[tuple[np.ndarray, np.ndarray, float]]] = {}
    for number, result in enumerate(results):
        values = np.asarray(result.get("keypoints", ()), np.float64)
        if values.shape != (3 * k,):
            raise ValueError(
                f"result {number} (image {result.get('image_id')}) has {values.size} keypoint "
                f"values, expected {3 * k} (x, y, score for {k} keypoints)"
            )
        values = values.reshape(k, 3)
        values[:, :2] = index_to_coord(values[:, :2])
        row = row_of.get(int(result.get("annotation_id", -1)))
        if row is not None and not taken[row]:
            points[row], scores[row], taken[row] = values[:, :2], values[:, 2], True
        elif "annotation_id" in result and row is None:
            unmatched += 1
        else:
            pending.setdefault(int(result["image_id"]), []).append(
                (values[:, :2], values[:, 2], float(result.get("score", 0.0))))
    for image_id, candidates in pending.items():
        rows = np.flatnonzero(truth["image_id"] == image_id)
        for xy, kp_scores, _ in sorted(candidates, key=lambda c: -c[2]):
            free = rows[~taken[rows]]
            if free.size == 0:
                unmatched += 1
                continue
            if keypoint_set.oks_sigmas is not None:
                similarity = metrics.oks(xy[None], truth["gt_keypoints"][free],
                                         truth["visibility"][free], truth["area"][free],
                                         keypoint_set.oks_sigmas)
            else:
                labeled = truth["visibility"][free] > 0
                distance = np.linalg.norm(xy[None] - truth["gt_keypoints"][free], axis=-1)
                with np.errstate(invalid="ignore"):
                    similarity = -np.where(labeled, distance, 0).sum(-1) / labeled.sum(-1)
            best = free[int(np.argmax(np.nan_to_num(similarity, nan=-np.inf)))]
            points[best], scores[best], taken[best] = xy, kp_scores, True
    predictions = {"keypoints": points, "scores": scores, **truth}
    info = {
        "num_results": len(results),
        "num_matched": int(taken.sum()),
        "num_unmatched_results": int(unmatched),
        "num_missed_persons": int(n - taken.sum()),
    }
    return predictions, info
