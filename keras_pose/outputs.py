"""What a pose network's outputs mean: the output kinds, losses and :class:`OutputSpec`.

A leaf module (no Keras, no TensorFlow) so that the networks (``keras_pose.models``), the
codecs that encode and decode each output kind (``keras_pose.codecs``) and the losses can all
read the same facts without importing one another.
"""

from __future__ import annotations

import dataclasses

HEATMAPS = "heatmaps"
COORDINATES = "coordinates"

MSE = "mse"
SOFTMAX_CROSS_ENTROPY = "softmax_cross_entropy"
COORDINATE_L2 = "coordinate_l2"


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """What a pose model's outputs mean.

    Attributes:
        kind: ``"heatmaps"`` (one channel per keypoint, [B, h, w, K]) or ``"coordinates"``
            (normalized coordinates [B, K, 2]: ``x / input_width - 0.5`` and likewise y, in the
            keypoint coordinate convention of ``keras_pose.keypoints``).
        stride: input pixels per output pixel for heatmaps (``input_size / heatmap_size``),
            ``None`` for coordinates.
        loss: ``"mse"`` (Gaussian heatmap targets), ``"softmax_cross_entropy"`` (spatial
            softmax over each heatmap against a normalized Gaussian target) or
            ``"coordinate_l2"``.
        output_names: the output names in order; the last is the final prediction.
    """

    kind: str
    stride: int | None
    loss: str
    output_names: tuple[str, ...]
