"""SavedModel export for TF Serving, ``models.config``, and in-process prediction.

An export is a TF Serving version directory ``<base>/<name>/<version>/`` whose graph holds only
stock TensorFlow ops: crop from a person box, the network, decoding, and the map back to image
pixels. Its signatures (TF Serving requires every input of a signature, so "optional boxes" are
separate signatures):

==========================  ==========================================  =====================
signature                   inputs                                      outputs
==========================  ==========================================  =====================
``serving_default``         ``images`` uint8 [N, H, W, 3] (RGB)         ``keypoints`` float32
``serving_boxes``           ``images`` + ``boxes`` float32 [N, 4]       [N, K, 2] (x, y in
``serving_bytes``           ``image_bytes`` string [N] (JPEG/PNG/...)   input-image pixels),
``serving_bytes_boxes``     ``image_bytes`` + ``boxes`` float32 [N, 4]  ``scores`` [N, K]
==========================  ==========================================  =====================

``boxes`` are person boxes ``x, y, w, h`` in image pixels; without them the box is the whole
image. The network sees a square crop of side ``margin * max(w, h)`` centred on the box (the
same crop the records were made with; ``margin`` comes from the run's pipeline, default 1.25),
resized to its input size (averaging ``f x f`` pixel blocks first when it shrinks by ``f >= 2``,
as the converter does, so large people do not alias). Coordinates follow
``keras_pose.keypoints`` (pixel centres at +0.5).

Versions are written atomically: the SavedModel is saved into a temporary sibling directory
whose name is not an integer (TF Serving ignores it while polling) and renamed to the version
number when complete. ``<base>/models.config`` (TF Serving's ``--model_config_file``) is then
rewritten, also atomically, to list every model under ``<base>`` that has a version.

TFLite and ONNX exports (``formats``) hold the network alone in
``<base>/<name>/tflite/model.tflite`` (``tflite_float16``, ``tflite_dynamic``, ``tflite_int8``) or
``<base>/<name>/onnx/model.onnx`` beside
``keras_pose.json``; the host runs the rest of the same graph around the LiteRT interpreter or
ONNX Runtime, so a ``Predictor`` on them has the same signatures.

Modules: ``loading`` (a trained network and its run), ``graph`` (the serving functions and
the SavedModel), ``versions`` (TF Serving's version directories and ``models.config``),
``formats`` (TFLite and ONNX files), ``predictor`` (the same graph in-process). The names
below are the public API.
"""

from keras_pose.export.formats import (
    FORMATS,
    QUANTIZATIONS,
    export_directory,
    export_file,
    resolve_file_export,
)
from keras_pose.export.graph import (
    ServingFunctions,
    crop_and_resize_boxes,
    metadata,
    save_saved_model,
    square_crop_boxes,
)
from keras_pose.export.loading import (
    DEFAULT_MARGIN,
    DEFAULT_SERVING_ROOT,
    METADATA_FILE,
    MODELS_CONFIG,
    TEMP_PREFIX,
    ExportError,
    LoadedModel,
    guess_keypoint_set,
    load_pose_model,
)
from keras_pose.export.predictor import (
    Predictor,
    load_predictor,
    resolve_export,
    resolve_saved_model,
)
from keras_pose.export.versions import (
    export_saved_model,
    list_versions,
    read_models_config,
    write_models_config,
)
from keras_pose.serving import OUTPUTS, SIGNATURES

__all__ = [
    "DEFAULT_MARGIN", "DEFAULT_SERVING_ROOT", "FORMATS", "METADATA_FILE", "MODELS_CONFIG",
    "OUTPUTS", "QUANTIZATIONS", "SIGNATURES", "TEMP_PREFIX", "ExportError", "LoadedModel",
    "Predictor", "ServingFunctions", "crop_and_resize_boxes", "export_directory", "export_file",
    "export_saved_model", "guess_keypoint_set", "list_versions", "load_pose_model",
    "load_predictor", "metadata", "read_models_config", "resolve_export", "resolve_file_export",
    "resolve_saved_model", "save_saved_model", "square_crop_boxes", "write_models_config",
]
