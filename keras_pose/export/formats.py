"""TFLite and ONNX exports: the network in a file, the rest of the serving graph on the host.

An export is a directory (``<base>/<name>/<format>/`` by default, see :func:`export_directory`)
holding ``model.tflite`` or ``model.onnx`` and ``keras_pose.json`` (the SavedModel's metadata,
plus ``file_format``, ``quantize`` and ``output_loss``). TF Serving ignores these directories:
their names are not version numbers.

The file holds only the batch-norm-folded network, float32 crops ``[N, h, w, 3]`` (0-255) ->
its final output (heatmaps or normalized coordinates), so quantization touches the network
alone. The host runs everything else with the SavedModel's own code
(:class:`~keras_pose.export.graph.ServingFunctions`): box checks, crop and resize, the flip test,
decoding and the map back to image pixels; only the network call goes to the LiteRT interpreter
or ONNX Runtime. Predictions therefore differ from the SavedModel's by the network's numerics
alone.

Optional packages (``pip install 'keras-pose[export]'``): ``tf2onnx`` to write ONNX,
``onnxruntime`` to run it, ``ai-edge-litert`` to run TFLite (``tf.lite.Interpreter`` is
deprecated). Writing TFLite needs TensorFlow only.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from keras_pose.compat import freeze_variables
from keras_pose.data import dataset as dataset_lib
from keras_pose.export.graph import ServingFunctions, metadata
from keras_pose.export.loading import METADATA_FILE, ExportError
from keras_pose.io import write_bytes_atomic, write_text_atomic
from keras_pose.keypoints import KEYPOINT_SETS, KeypointSet
from keras_pose.outputs import OutputSpec

TFLITE = "tflite"
ONNX = "onnx"
FORMATS = (TFLITE, ONNX)
# What each does, and what it measured: convert_tflite.
QUANTIZATIONS = ("float16", "dynamic", "int8")
MODEL_FILES = {TFLITE: "model.tflite", ONNX: "model.onnx"}
FORMAT_OF_SUFFIX = {".tflite": TFLITE, ".onnx": ONNX}
ONNX_OPSET = 17
# int8 calibration: this many crops from --records (TFLite's guide suggests 100-500).
CALIBRATION_CROPS = 200
INPUT_NAME = "crops"

INSTALL_HINT = "pip install 'keras-pose[export]'"


def _require(module: str, package: str, what: str):
    """Import an optional package, or fail naming the pip install."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ExportError(f"{what} needs the {package!r} package: pip install {package} "
                          f"(or {INSTALL_HINT})") from None


def format_name(file_format: str, quantize: str | None = None) -> str:
    """The export's directory name: ``tflite``, ``tflite_<quantize>`` or ``onnx``."""
    if file_format not in FORMATS:
        raise ExportError(f"format must be one of {FORMATS}, received {file_format!r}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ExportError(f"quantize must be one of {QUANTIZATIONS}, received {quantize!r}")
    if quantize is not None and file_format != TFLITE:
        raise ExportError(f"quantize ({quantize}) applies to the tflite format only")
    return file_format if quantize is None else f"{file_format}_{quantize}"


def export_directory(base: str | os.PathLike, name: str, file_format: str,
                     quantize: str | None = None) -> pathlib.Path:
    """``<base>/<name>/<format>/``, beside the model's SavedModel versions."""
    return pathlib.Path(base) / name / format_name(file_format, quantize)


# Writing.

def network_function(serving: ServingFunctions):
    """The folded network's final output on float32 crops, as a ``tf.function``."""
    spec = tf.TensorSpec([None, *serving.input_size, 3], tf.float32, name=INPUT_NAME)
    return tf.function(serving._final, input_signature=[spec], autograph=False)


def calibration_crops(serving: ServingFunctions, records: str, count: int = CALIBRATION_CROPS
                      ) -> list[np.ndarray]:
    """Up to ``count`` network input crops [1, h, w, 3] cut from records as
    :func:`keras_pose.evaluate.records.predict_saved_model_records` sends them (the record's
    crop is the margin square of a centred box), with the serving graph's own crop."""
    try:
        manifest = dataset_lib.read_manifest(records)
        num_keypoints = KEYPOINT_SETS[manifest.keypoint_set].num_keypoints
    except (FileNotFoundError, ValueError, KeyError):
        num_keypoints = serving.num_keypoints
    dataset = dataset_lib.make_dataset(records, batch_size=1, num_keypoints=num_keypoints,
                                       training=False, deterministic=True)
    crops = []
    for batch in dataset.take(count):
        image = batch["image"][0]
        size = float(image.shape[0])
        inner = size / serving.margin
        box = tf.constant([(size - inner) / 2, (size - inner) / 2, inner, inner], tf.float32)
        crop, _ = serving.crop_person(image, box)
        crops.append(crop.numpy()[None])
    if not crops:
        raise ExportError(f"--records {records!r}: no records to calibrate int8 with")
    return crops


def convert_tflite(serving: ServingFunctions, quantize: str | None = None,
                   calibration: list[np.ndarray] | None = None) -> bytes:
    """The network as a ``.tflite`` flatbuffer (builtin ops only).

    Args:
        quantize: ``None`` (float32), ``"float16"`` (float16 weights, float32 compute on CPU),
            ``"dynamic"`` (int8 weights; each int8 op quantizes its input at run time from
            that input's range and returns float32: float32's PCK, measured, at about 2x
            float32's speed in LiteRT on a CPU) or ``"int8"`` (post-training full-integer
            quantization, float32 input and output; needs ``calibration``; what integer-only
            accelerators need, measured to lose 2-12 PCK points on hourglasses, see the
            README's "TFLite and ONNX files").
        calibration: int8 representative crops, from :func:`calibration_crops`.
    """
    function = network_function(serving)
    frozen = freeze_variables(function.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data: dynamic
    elif quantize == "int8":
        if not calibration:
            raise ExportError("int8 quantization needs calibration crops (--records)")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: ([crop] for crop in calibration)
    elif quantize is not None:
        raise ExportError(f"quantize must be one of {QUANTIZATIONS}, received {quantize!r}")
    return converter.convert()


def convert_onnx(serving: ServingFunctions, opset: int = ONNX_OPSET) -> bytes:
    """The network as an ONNX model (``tf2onnx``)."""
    tf2onnx = _require("tf2onnx", "tf2onnx", "ONNX export")
    function = network_function(serving)
    proto, _ = tf2onnx.convert.from_function(
        function, input_signature=function.input_signature, opset=opset)
    return proto.SerializeToString()


def file_metadata(model, keypoint_set: KeypointSet | None, margin: float, flip_test: bool,
                  source: str | None, file_format: str, quantize: str | None) -> dict:
    """The SavedModel's metadata, plus what the host needs to decode without the model."""
    info = metadata(model, keypoint_set, margin, flip_test, source)
    spec = model.output_spec
    info.update(format=f"keras_pose.{file_format}/1", file_format=file_format,
                model_file=MODEL_FILES[file_format], quantize=quantize, output_loss=spec.loss)
    return info


def export_file(model, directory: str | os.PathLike, *, file_format: str,
                quantize: str | None = None, records: str | None = None,
                margin: float, keypoint_set: KeypointSet | None = None,
                flip_test: bool = False, source: str | None = None) -> pathlib.Path:
    """Write ``model.tflite`` / ``model.onnx`` and ``keras_pose.json`` into ``directory``.

    Each file is written atomically, the metadata first; the model file, written last, is what
    makes the directory an export. ``flip_test`` is recorded and run by the host.

    Returns:
        the model file's path.
    """
    format_name(file_format, quantize)  # checks the pair
    if quantize == "int8" and not records:
        raise ExportError("--quantize int8 needs --records (TFRecords to calibrate with)")
    serving = ServingFunctions(model, margin=margin, keypoint_set=keypoint_set,
                               flip_test=flip_test)
    if file_format == TFLITE:
        calibration = calibration_crops(serving, records) if quantize == "int8" else None
        data = convert_tflite(serving, quantize, calibration)
    else:
        data = convert_onnx(serving)
    directory = pathlib.Path(directory)
    info = file_metadata(model, keypoint_set, margin, flip_test, source, file_format, quantize)
    write_text_atomic(directory / METADATA_FILE, json.dumps(info, indent=2) + "\n")
    return write_bytes_atomic(directory / MODEL_FILES[file_format], data)


# Running.

class TFLiteNetwork:
    """A ``.tflite`` network on the LiteRT interpreter: float32 crops -> output (numpy).

    ``num_threads`` defaults to every core, as TensorFlow and ONNX Runtime use them (LiteRT's
    own default is implementation-defined).
    """

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        litert = _require("ai_edge_litert.interpreter", "ai-edge-litert", "running TFLite")
        self.interpreter = litert.Interpreter(model_path=str(path),
                                              num_threads=num_threads or os.cpu_count())
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self.output_shape = [None, *self._output["shape_signature"][1:]]
        self._batch = None

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        if crops.shape[0] != self._batch:  # the file's batch is dynamic: size it per call
            self.interpreter.resize_tensor_input(self._input["index"], crops.shape)
            self.interpreter.allocate_tensors()
            self._batch = crops.shape[0]
        self.interpreter.set_tensor(self._input["index"], crops)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output["index"])  # a copy


class OnnxNetwork:
    """An ``.onnx`` network on ONNX Runtime (CPU): float32 crops -> output (numpy)."""

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        ort = _require("onnxruntime", "onnxruntime", "running ONNX")
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        output = self.session.get_outputs()[0]
        self.output_shape = [None, *output.shape[1:]]
        self._input_name = self.session.get_inputs()[0].name

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input_name: crops})[0]


NETWORKS = {TFLITE: TFLiteNetwork, ONNX: OnnxNetwork}


class _NetworkSpec:
    """What :class:`ServingFunctions` reads of a model, from an export's metadata."""

    def __init__(self, info: dict):
        self.num_keypoints = int(info["num_keypoints"])
        self.input_size = tuple(int(v) for v in info["input_size"])
        self.output_spec = OutputSpec(info["output_kind"], info.get("heatmap_stride"),
                                      info["output_loss"], ())
        self.name = info.get("model")


class HostServingFunctions(ServingFunctions):
    """The serving functions with the network call sent to a file's runtime.

    ``ServingFunctions.__init__`` folds a Keras model; here there is none, so this configures
    the graph pieces from the export's metadata and replaces ``_final``.
    """

    def __init__(self, network: Callable[[np.ndarray], np.ndarray], info: dict):
        name = info.get("keypoint_set")
        self._configure(_NetworkSpec(info), margin=float(info["margin"]),
                        keypoint_set=KEYPOINT_SETS.get(name) if name else None,
                        flip_test=bool(info.get("flip_test")), refine="quarter")
        self.network = network

    def _final(self, images):
        output = tf.numpy_function(self.network, [images], tf.float32, stateful=True)
        output.set_shape(self.network.output_shape)
        return output


def resolve_file_export(path: str | os.PathLike) -> pathlib.Path | None:
    """The model file of a TFLite/ONNX export (``path`` itself, or the one model file in the
    directory ``path``), or ``None`` when ``path`` is not one."""
    path = pathlib.Path(path)
    if path.is_file() and path.suffix in FORMAT_OF_SUFFIX:
        return path
    if path.is_dir():
        found = [path / name for name in MODEL_FILES.values() if (path / name).is_file()]
        if len(found) == 1:
            return found[0]
    return None


def load_file_functions(path: str | os.PathLike, num_threads: int | None = None
                        ) -> tuple[dict[str, Any], dict, Any]:
    """``(signature functions, metadata, network)`` of a ``.tflite`` or ``.onnx`` export, for
    ``Predictor`` (the metadata is ``keras_pose.json`` beside the file)."""
    path = pathlib.Path(path)
    file_format = FORMAT_OF_SUFFIX.get(path.suffix)
    if file_format is None:
        raise ExportError(f"{path}: not a .tflite or .onnx file")
    info_file = path.parent / METADATA_FILE
    try:
        info = json.loads(info_file.read_text())
    except FileNotFoundError:
        raise ExportError(f"{path}: no {METADATA_FILE} beside it (export with "
                          "tools/export.py --format)") from None
    except json.JSONDecodeError as error:
        raise ExportError(f"{info_file}: not valid JSON ({error})") from None
    missing = [key for key in ("num_keypoints", "input_size", "output_kind", "output_loss",
                               "margin") if key not in info]
    if missing:
        raise ExportError(f"{info_file}: missing fields {missing}")
    network = NETWORKS[file_format](path, num_threads)
    functions = HostServingFunctions(network, info).traced_functions()
    info["path"] = str(path)
    return functions, info, network

