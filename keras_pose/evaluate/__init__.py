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

Modules: ``records`` (running models over records, one loop for Keras models and
SavedModels), ``coco`` (COCO results, ground truth, matching, AP), ``report`` (scores and the
printed report). The names below are the public API.
"""

from keras_pose.evaluate.coco import (
    COCO_STATS,
    coco_keypoint_ap,
    ground_truth_arrays,
    keypoint_set_for,
    load_coco,
    match_results,
    to_coco_results,
)
from keras_pose.evaluate.records import (
    OPTIONAL_RECORD_KEYS,
    PREDICTION_KEYS,
    RECORD_KEYS,
    RESULTS_NO_HEATMAPS,
    SAVED_MODEL_NO_HEATMAPS,
    make_predict_function,
    no_heatmaps_reason,
    predict_model_records,
    predict_records,
    predict_saved_model_records,
    saved_model_flip_note,
)
from keras_pose.evaluate.report import (
    coco_ap_skip_reason,
    flip_comparison,
    format_report,
    metric_report,
    score_predictions,
    score_with_and_without_flip,
)

__all__ = [
    "COCO_STATS",
    "OPTIONAL_RECORD_KEYS",
    "PREDICTION_KEYS",
    "RECORD_KEYS",
    "RESULTS_NO_HEATMAPS",
    "SAVED_MODEL_NO_HEATMAPS",
    "coco_ap_skip_reason",
    "coco_keypoint_ap",
    "flip_comparison",
    "format_report",
    "ground_truth_arrays",
    "keypoint_set_for",
    "load_coco",
    "make_predict_function",
    "match_results",
    "metric_report",
    "no_heatmaps_reason",
    "predict_model_records",
    "predict_records",
    "predict_saved_model_records",
    "saved_model_flip_note",
    "score_predictions",
    "score_with_and_without_flip",
    "to_coco_results",
]
