"""Loading a trained network, with what export and prediction need from its run."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import keras

import keras_pose.models  # noqa: F401  (registers the custom layers and model classes)
from keras_pose import runs
from keras_pose.keypoints import KeypointSet, get_keypoint_set, infer_keypoint_set
from keras_pose.pipeline import load_pipeline

DEFAULT_MARGIN = 1.25
DEFAULT_SERVING_ROOT = "/models"
MODELS_CONFIG = "models.config"
METADATA_FILE = "keras_pose.json"
TEMP_PREFIX = "_tmp_export_"  # + pid: never an integer, so TF Serving never loads it



class ExportError(ValueError):
    """An export that cannot be done as asked; the message says what and where."""


@dataclasses.dataclass
class LoadedModel:
    """A trained network with what export and prediction need from its run.

    Attributes:
        model: the ``PoseModel``.
        keypoint_set: from the run's pipeline, else guessed from the keypoint count.
        margin: crop margin of the run's records (``[data] margin``), default 1.25.
        pipeline: the run's resolved pipeline, or ``None`` for a bare ``.keras`` file.
        path: the ``.keras`` file that was loaded.
    """
    model: Any
    keypoint_set: KeypointSet | None
    margin: float
    pipeline: Any
    path: pathlib.Path


def guess_keypoint_set(num_keypoints: int) -> KeypointSet | None:
    """The keypoint set with this many keypoints (``keypoints.infer_keypoint_set``), or
    ``None`` when the count names none or several."""
    try:
        return infer_keypoint_set(num_keypoints=num_keypoints)
    except ValueError:
        return None


def load_pose_model(path: str | os.PathLike) -> LoadedModel:
    """Load a trained network from a run directory or a ``.keras`` file.

    Args:
        path: ``runs/NAME`` (holding ``model.keras`` and ``pipeline.resolved.toml``) or a
            ``.keras`` file (a ``pipeline.resolved.toml`` beside it is used when present).

    Returns:
        A :class:`LoadedModel`.
    """

    try:
        keras_file, pipeline_file = runs.find_model(path)
    except ValueError as error:
        raise ExportError(str(error)) from None
    pipeline = load_pipeline(pipeline_file) if pipeline_file else None
    try:
        model = keras.saving.load_model(keras_file, compile=False)
    except Exception as error:  # keras raises many types for a bad or foreign file
        raise ExportError(f"{keras_file}: cannot load the Keras model: {error}") from error
    if not hasattr(model, "output_spec"):
        raise ExportError(
            f"{keras_file} holds a {type(model).__name__}, not a keras_pose PoseModel "
            "(no output_spec)"
        )
    if pipeline is not None:
        keypoint_set = get_keypoint_set(pipeline.data.keypoint_set)
        margin = float(pipeline.data.margin)
    else:
        keypoint_set = guess_keypoint_set(model.num_keypoints)
        margin = DEFAULT_MARGIN
    return LoadedModel(model, keypoint_set, margin, pipeline, keras_file)
