"""Evaluation: run a model over person records, score the named metrics and COCO keypoint AP.

Two entry points share one scoring path:

- :func:`predict_records` runs a Keras pose model over a dataset of records
  (``keras_pose.data.dataset.make_dataset``) and returns predictions in source-image pixels with
  their ground truth (and, for heatmap models, on the heatmap grid); the training PCK callback,
  the final evaluation of a run and ``tools/evaluate.py --model`` use it.
- :func:`match_results` turns a COCO keypoint results file (any system's output) into the same
  prediction arrays by matching each result to a ground-truth person.

:func:`metric_report` scores them with metrics named as in ``keras_pose.metrics``
(``pck_torso@0.2``, ``pck_bbox@0.05``, ``pckh@0.5``, ``poster_acc@0.5``), overall and per
keypoint; the first name is the headline. :func:`coco_keypoint_ap` runs ``pycocotools``'
``COCOeval`` (iouType ``"keypoints"``) for keypoint sets with OKS sigmas;
:func:`score_predictions` does both and says why COCO AP was skipped.

The poster's accuracy needs the heatmaps' argmax cells. Keras heatmap models give them
directly; a heatmap SavedModel gives them back too: its metadata names the heatmap stride, and
its quarter-pixel refinement keeps each keypoint inside its argmax cell, so mapping a keypoint
onto the grid and taking the cell it falls in is the argmax (exports older than the
``heatmap_stride`` entry are refused). A results file holds image-pixel keypoints alone.

Coordinates: prediction arrays are continuous (``keras_pose.keypoints``); COCO files (ground
truth and results) hold pixel indices. :func:`ground_truth_arrays` and :func:`match_results`
add ``0.5`` on reading them, :func:`to_coco_results` subtracts it on writing, so ground truth
written back as results is the ground truth exactly (AP 1.0).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from keras_pose import metrics
from keras_pose.keypoints import (
    KEYPOINT_SETS,
    KeypointSet,
    coord_to_index,
    index_to_coord,
    infer_keypoint_set,
    keypoints_from_coco,
)

COCO_STATS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")

PREDICTION_KEYS = (
    "keypoints", "scores", "gt_keypoints", "visibility", "bbox", "area", "image_id",
    "annotation_id",
)
# Batch keys copied into the predictions as they are.
RECORD_KEYS = ("visibility", "bbox", "area", "image_id", "annotation_id")
# Carried by records written since PCKh sizes were stored (0 = unknown); absent in older ones.
OPTIONAL_RECORD_KEYS = ("head_size",)
SAVED_MODEL_NO_HEATMAPS = ("this SavedModel's metadata gives no heatmap stride (a coordinate "
                           "model, or an export older than keras-pose's heatmap_stride entry); "
                           "evaluate the run directory or .keras file instead")
RESULTS_NO_HEATMAPS = "a COCO results file holds keypoints in image pixels only"


# -- running a model over records -----------------------------------------------------------


def make_predict_function(model, *, keypoint_set: KeypointSet, flip_test: bool = False,
                          sampler: str = "gather"):
    """A compiled function: a reader batch -> keypoints in source-image pixels and scores.

    Args:
        model: a ``PoseModel`` (input ``images`` float32 [B, H, W, 3] in [0, 255]).
        keypoint_set: the records' keypoint set (flip permutation for the flip test).
        flip_test: average the prediction with that of the mirrored input.
        sampler: the resize sampler of ``augment.warp_images`` (as in training).

    Returns:
        A ``tf.function`` taking a batch dict with ``image`` uint8 [B, S, S, 3] and
        ``crop_box`` [B, 4] and returning a dict: ``keypoints`` [B, K, 2] (image pixels),
        ``scores`` [B, K] and, for heatmap models, ``heatmap_keypoints`` [B, K, 2]: the centres
        of the final heatmaps' argmax cells, in heatmap coordinates (the poster's accuracy).
    """
    import tensorflow as tf
    from keras import ops

    from keras_pose import augment, codecs, decode

    input_size = model.input_size
    num_keypoints = model.num_keypoints
    if num_keypoints != keypoint_set.num_keypoints:
        raise ValueError(
            f"The model predicts {num_keypoints} keypoints but keypoint set "
            f"{keypoint_set.name!r} has {keypoint_set.num_keypoints}"
        )
    codec = codecs.codec_for(model.output_spec, input_size)
    permutation = np.asarray(keypoint_set.flip_permutation, np.int32) if flip_test else None

    def run_model(images):
        return model(images, training=False)

    @tf.function(reduce_retracing=True)
    def predict(batch):
        images = batch["image"]
        crop_size = (images.shape[1], images.shape[2])
        if None in crop_size:
            raise ValueError(f"record crops need a static size, received {images.shape}")
        # The deterministic crop -> input resize of augment_batch(training=False).
        matrices = augment.resize_matrices(crop_size, input_size, ops.shape(images)[0])
        resized = augment.warp_images(images, matrices, input_size, sampler)
        predicted = codecs.predict_keypoints(codec, run_model, resized, permutation)
        crop_points = decode.input_to_crop(predicted["keypoints"], matrices)
        image_points = decode.crop_to_image(crop_points, batch["crop_box"], float(crop_size[0]))
        result = {"keypoints": image_points, "scores": predicted["scores"]}
        cells = codec.heatmap_cells(predicted["output"])
        if cells is not None:
            result["heatmap_keypoints"] = cells
        return result

    return predict


def predict_records(
    model,
    dataset,
    *,
    keypoint_set: KeypointSet,
    flip_test: bool = False,
    max_batches: int | None = None,
    progress: bool = False,
    predict_function=None,
) -> dict[str, np.ndarray]:
    """Run a model over a dataset of person records.

    Args:
        model: a ``PoseModel``.
        dataset: batches from ``make_dataset(..., training=False)``: dicts with ``image``,
            ``crop_box``, ``image_keypoints``, ``visibility``, ``bbox``, ``area``, ``image_id``,
            ``annotation_id``.
        keypoint_set: the records' keypoint set.
        flip_test: average with the horizontally mirrored input's prediction.
        max_batches: stop after this many batches (``None`` = the whole dataset).
        progress: show a tqdm progress bar.
        predict_function: a function from :func:`make_predict_function`, to reuse its traced
            graph across calls (the training callback keeps one).

    Returns:
        Numpy arrays over the N persons: ``keypoints`` [N, K, 2] and ``gt_keypoints`` [N, K, 2]
        (source-image pixels), ``scores`` [N, K], ``visibility`` [N, K], ``bbox`` [N, 4],
        ``area`` [N], ``image_id`` [N], ``annotation_id`` [N]; ``head_size`` [N] when the
        records carry it; for heatmap models ``heatmap_keypoints`` (argmax cell centres) and
        ``heatmap_gt`` [N, K, 2] in heatmap coordinates and ``heatmap_size`` [N, 2] (h, w).
    """
    predict = predict_function or make_predict_function(
        model, keypoint_set=keypoint_set, flip_test=flip_test
    )
    gathered: dict[str, list[np.ndarray]] = {key: [] for key in PREDICTION_KEYS}
    batches: Iterable = dataset.take(max_batches) if max_batches else dataset
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="predict", unit="batch")
    for batch in batches:
        output = predict({"image": batch["image"], "crop_box": batch["crop_box"]})
        _gather_batch(gathered, batch, output["keypoints"], output["scores"])
        # Batches without crop keypoints (not from the reader) leave the grid out; the poster's
        # accuracy then says it has no heatmaps to score.
        if "heatmap_keypoints" in output and "keypoints" in batch:
            _gather_heatmap_grid(gathered, batch, output["heatmap_keypoints"], model)
    return _concatenate(gathered)


def _gather_batch(gathered: dict[str, list[np.ndarray]], batch, points, scores) -> None:
    """Append one batch's image-pixel predictions and the record fields they are scored with."""
    gathered["keypoints"].append(np.asarray(points, np.float32))
    gathered["scores"].append(np.asarray(scores, np.float32))
    gathered["gt_keypoints"].append(np.asarray(batch["image_keypoints"], np.float32))
    for key in RECORD_KEYS:
        gathered[key].append(np.asarray(batch[key]))
    for key in OPTIONAL_RECORD_KEYS:
        if key in batch:
            gathered.setdefault(key, []).append(np.asarray(batch[key], np.float32))


def _gather_heatmap_grid(gathered: dict[str, list[np.ndarray]], batch, heatmap_points,
                         model) -> None:
    """Append the argmax cells and the ground truth on the heatmap grid (poster accuracy).

    The ground truth goes crop pixels -> input pixels by the evaluation's resize
    (``augment.resize_matrices``: ``p * input / crop``) -> heatmap coordinates (``/ stride``),
    where the training targets would put it.
    """
    _gather_grid(gathered, batch, heatmap_points, model.input_size,
                 float(model.output_spec.stride))


def _gather_grid(gathered: dict[str, list[np.ndarray]], batch, heatmap_points,
                 input_size: tuple[int, int], stride: float) -> None:
    crop = np.asarray(batch["keypoints"], np.float64)
    crop_h, crop_w = batch["image"].shape[1:3]
    in_h, in_w = input_size
    scale = np.array([in_w / crop_w, in_h / crop_h]) / stride
    count = crop.shape[0]
    gathered.setdefault("heatmap_keypoints", []).append(np.asarray(heatmap_points, np.float32))
    gathered.setdefault("heatmap_gt", []).append((crop * scale).astype(np.float32))
    gathered.setdefault("heatmap_size", []).append(
        np.tile(np.array([in_h // stride, in_w // stride], np.int32), (count, 1)))


def _concatenate(gathered: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    if not gathered["keypoints"]:
        raise ValueError("The dataset yielded no records to evaluate")
    return {key: np.concatenate(values, axis=0) for key, values in gathered.items()}


def predict_saved_model_records(predictor, dataset, *, max_batches: int | None = None,
                                progress: bool = False) -> dict[str, np.ndarray]:
    """Like :func:`predict_records` for an exported SavedModel (``export.Predictor``).

    The stored crop is the whole square the export would cut, so each crop is sent with the
    box whose ``margin``-square is the crop itself; keypoints come back in crop pixels and
    are mapped to the source image through the record's crop box. For heatmap exports whose
    metadata names the stride, the argmax cells and the ground truth on the heatmap grid are
    added as :func:`predict_records` adds them (the poster's accuracy).
    """
    margin = float(predictor.metadata.get("margin", 1.25))
    stride = predictor.metadata.get("heatmap_stride")
    input_size = predictor.metadata.get("input_size")
    gathered: dict[str, list[np.ndarray]] = {key: [] for key in PREDICTION_KEYS}
    batches: Iterable = dataset.take(max_batches) if max_batches else dataset
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="predict", unit="batch")
    for batch in batches:
        crops = np.asarray(batch["image"])
        count, size = crops.shape[0], float(crops.shape[1])
        inner = size / margin
        boxes = np.tile(np.array([(size - inner) / 2, (size - inner) / 2, inner, inner],
                                 np.float32), (count, 1))
        result = predictor.predict(crops, boxes)
        crop_box = np.asarray(batch["crop_box"], np.float32)
        points = crop_box[:, None, 0:2] + result["keypoints"] * (crop_box[:, None, 2:4] / size)
        _gather_batch(gathered, batch, points, result["scores"])
        if stride and input_size:
            scale = np.array([input_size[1], input_size[0]], np.float64) / size / float(stride)
            cells = index_to_coord(np.floor(np.asarray(result["keypoints"], np.float64) * scale))
            _gather_grid(gathered, batch, cells, tuple(input_size), float(stride))
    return _concatenate(gathered)


def predict_model_records(model_path, records: str, *, keypoint_set: KeypointSet | None = None,
                          coco=None, flip_test: bool | str = False, batch_size: int = 16,
                          max_batches: int | None = None, progress: bool = False,
                          metric_names: Sequence[str] = ()
                          ) -> tuple[dict[str, np.ndarray], KeypointSet]:
    """Load a model (run dir, ``.keras`` or SavedModel) and predict a records glob.

    The keypoint set is, in order: ``keypoint_set``, the run's pipeline or the export's
    metadata, the records' manifest, the COCO annotations' category, the keypoint count.

    Args:
        flip_test: ``False``, ``True``, or ``"both"``: a Keras model predicts without and
            with the flip test (see Returns). A SavedModel predicts as it was exported.
        metric_names: the metrics the predictions are for; checked against the keypoint set
            and the model (the poster's accuracy needs a Keras heatmap model) before any
            record is read.

    Returns:
        ``(predictions, keypoint_set)``. With ``flip_test="both"`` ``predictions`` is
        ``{"plain": arrays, "flip_test": arrays or None, "flip_test_note": str or None}``:
        the note says why a SavedModel has only one set (and whether it is flip-tested).
    """
    from keras_pose import export
    from keras_pose.data import dataset as dataset_lib

    saved = export.resolve_saved_model(model_path)
    if saved is not None:
        model = export.load_predictor(saved)
        if flip_test is True and not model.metadata.get("flip_test"):
            raise ValueError(f"{saved} was exported without the flip test; --flip-test applies "
                             "to Keras models (or export with --flip-test)")
        known, num_keypoints = model.keypoint_set, model.metadata.get("num_keypoints")
    else:
        loaded = export.load_pose_model(model_path)
        model, known, num_keypoints = loaded.model, loaded.keypoint_set, loaded.model.num_keypoints
    if keypoint_set is None:
        keypoint_set = known
    if keypoint_set is None:
        try:
            manifest = dataset_lib.read_manifest(records)
            keypoint_set = KEYPOINT_SETS.get(manifest.get("keypoint_set"))
        except (FileNotFoundError, ValueError):
            pass
    if keypoint_set is None and coco is not None:
        keypoint_set = keypoint_set_for(coco)
    if keypoint_set is None:
        keypoint_set = export.guess_keypoint_set(int(num_keypoints or 0))
    if keypoint_set is None:
        raise ValueError("cannot tell the keypoint set; pass --keypoint-set")
    if num_keypoints is not None and int(num_keypoints) != keypoint_set.num_keypoints:
        raise ValueError(f"the model predicts {num_keypoints} keypoints but keypoint set "
                         f"{keypoint_set.name!r} has {keypoint_set.num_keypoints}")
    if saved is not None:
        no_heatmaps = None if model.metadata.get("heatmap_stride") else SAVED_MODEL_NO_HEATMAPS
    else:
        no_heatmaps = no_heatmaps_reason(model)
    metrics.check_metrics(metrics.parse_metrics(metric_names) if metric_names else [],
                          keypoint_set, no_heatmaps=no_heatmaps)
    dataset = dataset_lib.make_dataset(records, batch_size=batch_size,
                                       num_keypoints=keypoint_set.num_keypoints, training=False,
                                       deterministic=True)
    if saved is not None:
        predictions = predict_saved_model_records(model, dataset, max_batches=max_batches,
                                                  progress=progress)
        if flip_test == "both":
            predictions = {"plain": predictions, "flip_test": None,
                           "flip_test_note": saved_model_flip_note(model.metadata)}
    elif flip_test == "both":
        predictions = {
            "plain": predict_records(model, dataset, keypoint_set=keypoint_set,
                                     max_batches=max_batches, progress=progress),
            "flip_test": predict_records(model, dataset, keypoint_set=keypoint_set,
                                         flip_test=True, max_batches=max_batches,
                                         progress=progress),
            "flip_test_note": None,
        }
    else:
        predictions = predict_records(model, dataset, keypoint_set=keypoint_set,
                                      flip_test=bool(flip_test), max_batches=max_batches,
                                      progress=progress)
    return predictions, keypoint_set


def saved_model_flip_note(metadata: Mapping) -> str:
    """What a SavedModel's scores are, flip-wise: it can only be scored as it was exported."""
    if metadata.get("flip_test"):
        return ("this SavedModel was exported with the flip test: its scores are flip-tested "
                "and can only be scored as they are (evaluate the run directory or .keras file "
                "for the scores without it)")
    return ("this SavedModel was exported without the flip test: it can only be scored as it "
            "is, without it (evaluate the run directory or .keras file for the flip-tested "
            "scores, or export with --flip-test)")


# -- metrics -------------------------------------------------------------------------------


def no_heatmaps_reason(model) -> str | None:
    """Why a Keras model's predictions carry no heatmap grid, or ``None`` when they do."""
    from keras_pose import codecs

    if codecs.codec_for(model.output_spec, model.input_size).has_heatmaps:
        return None
    return f"the model {model.name!r} outputs {model.output_spec.kind}, not heatmaps"


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


# -- COCO results and AP ----------------------------------------------------------------------


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
    from pycocotools.coco import COCO

    if isinstance(annotations, COCO):
        return annotations
    coco = COCO()
    if isinstance(annotations, (str, os.PathLike)):
        path = pathlib.Path(annotations)
        try:
            dataset = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"COCO annotation file not found: {path}") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON: {error}") from None
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
    from pycocotools.cocoeval import COCOeval

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


# -- the whole evaluation ------------------------------------------------------------------


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
