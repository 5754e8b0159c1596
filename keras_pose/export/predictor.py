"""The serving graph in-process: a loaded SavedModel, or a Keras model's same functions."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from keras_pose.export.formats import load_file_functions, resolve_file_export
from keras_pose.export.graph import ServingFunctions, metadata
from keras_pose.export.loading import METADATA_FILE, ExportError, load_pose_model
from keras_pose.export.versions import list_versions
from keras_pose.keypoints import KEYPOINT_SETS
from keras_pose.precision import FLOAT32
from keras_pose.serving import (
    OUTPUTS,
    SIGNATURE_BOXES,
    SIGNATURE_BYTES,
    SIGNATURE_BYTES_BOXES,
    SIGNATURE_DEFAULT,
    SIGNATURES,
    check_boxes,
)


def _check_images(images) -> np.ndarray:
    array = np.asarray(images)
    if array.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 [N, H, W, 3] (RGB, 0-255), received dtype {array.dtype} "
            f"shape {list(array.shape)}"
        )
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3 or 0 in array.shape[1:3]:
        raise ValueError(
            f"images must be uint8 [N, H, W, 3] or [H, W, 3] (RGB), received shape "
            f"{list(array.shape)}"
        )
    if len(array) == 0:
        raise ValueError("the batch is empty: pass at least one image")
    return array


class Predictor:
    """The serving graph in-process: a loaded SavedModel, or a Keras model's same functions.

    Use :func:`load_predictor`. ``predict`` and ``predict_encoded`` check dtypes and shapes in
    Python and raise ``ValueError`` naming what is expected.

    Attributes:
        metadata: the export's ``keras_pose.json`` (keypoint set, names, skeleton, input size).
        keypoint_set: the ``KeypointSet``, when known.
    """
    def __init__(self, functions: Mapping[str, Any], info: Mapping[str, Any], owner=None):
        self._functions = dict(functions)
        self._owner = owner  # keeps a loaded SavedModel alive
        self.metadata = dict(info)
        name = self.metadata.get("keypoint_set")
        self.keypoint_set = KEYPOINT_SETS.get(name) if name else None

    def _call(self, signature: str, **inputs) -> dict[str, np.ndarray]:
        outputs = self._functions[signature](**inputs)
        return {key: np.asarray(outputs[key]) for key in OUTPUTS}

    def predict(self, images, boxes=None) -> dict[str, np.ndarray]:
        """Keypoints of the person in each image (or in each box).

        Args:
            images: uint8 [N, H, W, 3] or [H, W, 3] RGB, or a list of such images of
                different sizes.
            boxes: float32 [N, 4] person boxes ``x, y, w, h`` in pixels, or ``None`` for the
                whole image.

        Returns:
            ``keypoints`` float32 [N, K, 2] in image pixels and ``scores`` float32 [N, K].
        """
        if isinstance(images, (list, tuple)):
            arrays = [_check_images(image) for image in images]
            if len({a.shape[1:] for a in arrays}) == 1:  # one size: one batch
                return self.predict(np.concatenate(arrays), boxes)
            if boxes is not None:
                boxes = check_boxes(boxes, sum(len(a) for a in arrays))
            results, start = [], 0
            for array in arrays:
                part = None if boxes is None else boxes[start:start + len(array)]
                results.append(self.predict(array, part))
                start += len(array)
            return {key: np.concatenate([r[key] for r in results]) for key in OUTPUTS}
        array = _check_images(images)
        if boxes is None:
            return self._call(SIGNATURE_DEFAULT, images=tf.constant(array))
        boxes = check_boxes(boxes, len(array))
        return self._call(SIGNATURE_BOXES, images=tf.constant(array), boxes=tf.constant(boxes))

    def predict_encoded(self, image_bytes: Sequence[bytes], boxes=None) -> dict[str, np.ndarray]:
        """Like :meth:`predict` for encoded JPEG/PNG/BMP/GIF files (the bytes signatures)."""
        if isinstance(image_bytes, (bytes, bytearray)):
            image_bytes = [bytes(image_bytes)]
        if not all(isinstance(b, (bytes, bytearray)) for b in image_bytes) or not image_bytes:
            raise ValueError("image_bytes must be a non-empty list of encoded image bytes")
        data = tf.constant([bytes(b) for b in image_bytes], dtype=tf.string)
        if boxes is None:
            return self._call(SIGNATURE_BYTES, image_bytes=data)
        boxes = check_boxes(boxes, len(image_bytes))
        return self._call(SIGNATURE_BYTES_BOXES, image_bytes=data, boxes=tf.constant(boxes))


def resolve_saved_model(path: str | os.PathLike) -> pathlib.Path | None:
    """A SavedModel directory for ``path`` (itself, or the newest version of a model base
    directory), or ``None`` when ``path`` is not a SavedModel."""
    path = pathlib.Path(path)
    if (path / "saved_model.pb").exists():
        return path
    versions = list_versions(path)
    if versions:
        return path / str(versions[-1])
    return None


def resolve_export(path: str | os.PathLike) -> pathlib.Path | None:
    """An export for ``path``: a SavedModel directory (:func:`resolve_saved_model`) or a
    ``.tflite``/``.onnx`` model file (or its export directory); ``None`` for anything else (a run
    directory or a ``.keras`` file)."""
    return resolve_saved_model(path) or resolve_file_export(path)


def load_predictor(path: str | os.PathLike, *, flip_test: bool = False) -> Predictor:
    """A :class:`Predictor` for a SavedModel (version dir or model base dir), a ``.tflite`` or
    ``.onnx`` export (the file or its directory), a run directory or a ``.keras`` file (the
    latter two run the same serving functions without saving).

    Args:
        path: what to load.
        flip_test: for Keras models, add the flip test (an export has it baked in or not).
    """
    model_file = resolve_file_export(path)
    if model_file is not None:
        functions, info, network = load_file_functions(model_file)
        return Predictor(functions, info, owner=network)
    saved = resolve_saved_model(path)
    if saved is not None:
        loaded = tf.saved_model.load(str(saved))
        missing = [s for s in SIGNATURES if s not in loaded.signatures]
        if missing:
            raise ExportError(f"{saved}: not a keras_pose export, missing signatures {missing}")
        info_file = saved / "assets.extra" / METADATA_FILE
        info = json.loads(info_file.read_text()) if info_file.exists() else {}
        info["path"] = str(saved)
        return Predictor(loaded.signatures, info, owner=loaded)
    pathlib_path = pathlib.Path(path)
    if not pathlib_path.exists():
        raise ExportError(f"model not found: {pathlib_path}")
    loaded_model = load_pose_model(pathlib_path)
    return model_predictor(loaded_model.model, margin=loaded_model.margin,
                           keypoint_set=loaded_model.keypoint_set, flip_test=flip_test,
                           source=str(loaded_model.path))


def model_predictor(model, *, margin: float, keypoint_set, flip_test: bool = False,
                    source: str | None = None, precision: str = FLOAT32) -> Predictor:
    """A :class:`Predictor` running a Keras model's serving functions without saving them.

    Args:
        model: a ``PoseModel``.
        margin, keypoint_set, flip_test, precision: as for ``ServingFunctions``.
        source: stored as the metadata's ``source`` and ``path``.
    """
    serving = ServingFunctions(model, margin=margin, keypoint_set=keypoint_set,
                               flip_test=flip_test, precision=precision)
    info = metadata(model, keypoint_set, margin, flip_test, source, precision)
    info["path"] = source
    return Predictor(serving.traced_functions(), info, owner=model)
