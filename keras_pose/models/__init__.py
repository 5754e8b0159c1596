"""The four networks. ``build_model(name, **config)`` is the entry point (see ``base.py``).

References (one per network; details in each module):
    Newell, Yang, Deng. Stacked Hourglass Networks for Human Pose Estimation. ECCV 2016.
    Yoo, Peng, Aggarwal. Residual Stacked Hourglass Networks for Human Pose Estimation. 2019.
    Gkioxari, Toshev, Jaitly. Chained Predictions Using Convolutional Neural Networks. ECCV 2016.
    Toshev, Szegedy. DeepPose: Human Pose Estimation via Deep Neural Networks. CVPR 2014.
"""

from __future__ import annotations

import inspect
import os

from keras_pose.models.base import PoseModel
from keras_pose.models.chained_prediction import ChainedPrediction
from keras_pose.models.deeppose import DeepPose
from keras_pose.models.hourglass import ResidualStackedHourglass, StackedHourglass

MODELS = {
    "stacked_hourglass": StackedHourglass,
    "residual_stacked_hourglass": ResidualStackedHourglass,
    "chained_prediction": ChainedPrediction,
    "deeppose": DeepPose,
}

__all__ = [
    "MODELS", "ChainedPrediction", "DeepPose", "PoseModel", "ResidualStackedHourglass",
    "StackedHourglass", "build_model",
]


def build_model(name: str, num_keypoints: int = 17,
                input_shape: tuple[int, int, int] | None = None, weights: str | None = None,
                **options) -> PoseModel:
    """Builds one of the four networks by name.

    Args:
        name: ``"stacked_hourglass"``, ``"residual_stacked_hourglass"``,
            ``"chained_prediction"`` or ``"deeppose"``.
        num_keypoints: keypoints K (17 for COCO, 16 for MPII).
        input_shape: (H, W, 3); None for the network's default (256x256, DeepPose-AlexNet
            220x220).
        weights: optional path of a weights file (``.weights.h5`` or ``.keras``) to load; no
            pretrained weights are downloaded, ever.
        **options: the network's own arguments (e.g. ``num_stacks``, ``backbone``); see each
            class.

    Returns:
        A :class:`PoseModel` whose ``output_spec`` describes its outputs.

    Example:
    >>> model = build_model("stacked_hourglass", num_keypoints=17, input_shape=(128, 128, 3),
    ...                     num_stacks=1, num_features=64, depth=3)
    >>> model.output_spec.stride, tuple(model.outputs[-1].shape)
    (4, (None, 32, 32, 17))
    """
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}")
    cls = MODELS[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters
               if p not in ("self", "kwargs", "num_keypoints", "input_shape")] + ["name"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for model {name!r}; "
                         f"allowed: {sorted(allowed)}")
    model = cls(num_keypoints=num_keypoints, input_shape=input_shape, **options)
    if weights is not None:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"Weights file for model {name!r} not found: {weights}")
        model.load_weights(weights)
    return model
