"""Running a model over person records: a Keras pose model, or an exported SavedModel,
gives predictions in source-image pixels with their ground truth (and the heatmap grid)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from keras import ops
from tqdm import tqdm

from keras_pose import augment, codecs, decode, export, metrics
from keras_pose.data import dataset as dataset_lib
from keras_pose.evaluate.coco import keypoint_set_for
from keras_pose.keypoints import KEYPOINT_SETS, KeypointSet, index_to_coord

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
    stride = model.output_spec.stride  # None: no heatmap grid (a coordinate model)
    grid = None if stride is None else (model.input_size, float(stride))

    def predict_batch(batch):
        output = predict({"image": batch["image"], "crop_box": batch["crop_box"]})
        # Batches without crop keypoints (not from the reader) leave the grid out; the poster's
        # accuracy then says it has no heatmaps to score.
        cells = output.get("heatmap_keypoints") if "keypoints" in batch else None
        return output["keypoints"], output["scores"], cells

    return _predict_batches(dataset, predict_batch, grid, max_batches, progress)


def _predict_batches(dataset, predict_batch, grid: tuple[tuple[int, int], float] | None,
                     max_batches: int | None, progress: bool) -> dict[str, np.ndarray]:
    """The one loop over record batches: ``predict_batch(batch)`` gives image-pixel keypoints,
    scores and the argmax cells (or ``None``) on the heatmap grid ``(input size, stride)``."""
    gathered: dict[str, list[np.ndarray]] = {key: [] for key in PREDICTION_KEYS}
    batches: Iterable = dataset.take(max_batches) if max_batches else dataset
    if progress:
        batches = tqdm(batches, desc="predict", unit="batch")
    for batch in batches:
        points, scores, cells = predict_batch(batch)
        _gather_batch(gathered, batch, points, scores)
        if cells is not None and grid is not None:
            _gather_grid(gathered, batch, cells, *grid)
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


def _gather_grid(gathered: dict[str, list[np.ndarray]], batch, heatmap_points,
                 input_size: tuple[int, int], stride: float) -> None:
    """Append the argmax cells and the ground truth on the heatmap grid (poster accuracy).

    The ground truth goes crop pixels -> input pixels by the evaluation's resize
    (``augment.resize_matrices``: ``p * input / crop``) -> heatmap coordinates (``/ stride``),
    where the training targets would put it.
    """
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
    grid = (tuple(input_size), float(stride)) if stride and input_size else None

    def predict_batch(batch):
        crops = np.asarray(batch["image"])
        count, size = crops.shape[0], float(crops.shape[1])
        inner = size / margin
        boxes = np.tile(np.array([(size - inner) / 2, (size - inner) / 2, inner, inner],
                                 np.float32), (count, 1))
        result = predictor.predict(crops, boxes)
        crop_box = np.asarray(batch["crop_box"], np.float32)
        points = crop_box[:, None, 0:2] + result["keypoints"] * (crop_box[:, None, 2:4] / size)
        cells = None
        if grid is not None:
            scale = np.array([input_size[1], input_size[0]], np.float64) / size / float(stride)
            cells = index_to_coord(np.floor(np.asarray(result["keypoints"], np.float64) * scale))
        return points, result["scores"], cells

    return _predict_batches(dataset, predict_batch, grid, max_batches, progress)


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
    saved = export.resolve_export(model_path)  # a SavedModel, .tflite or .onnx
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
            keypoint_set = KEYPOINT_SETS.get(manifest.keypoint_set)
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


def no_heatmaps_reason(model) -> str | None:
    """Why a Keras model's predictions carry no heatmap grid, or ``None`` when they do."""
    if codecs.codec_for(model.output_spec, model.input_size).has_heatmaps:
        return None
    return f"the model {model.name!r} outputs {model.output_spec.kind}, not heatmaps"
