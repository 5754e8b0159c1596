"""Training targets: Gaussian heatmaps, normalized coordinates and per-keypoint weights.

The pieces the codecs (``keras_pose.codecs``) encode with; a model's targets come from its
codec, ``codec_for(output_spec, input_size).encode(keypoints, visibility)``.

Everything is ``keras.ops`` and vectorised, so targets are rendered inside the training step on
the accelerator, right after ``keras_pose.augment``.

Coordinates follow ``keras_pose.keypoints``: a heatmap with stride ``s`` holds input point ``p``
at heatmap point ``p / s``, and the array index of a continuous coordinate is ``coord - 0.5``.
A heatmap's Gaussian therefore peaks (value 1) exactly at the keypoint's continuous position;
its largest array value is 1 only when that position is a pixel centre.

Example:

>>> import numpy as np
>>> kp = np.array([[[130.0, 66.0]]], np.float32)  # input pixels, input 256x256
>>> w = keypoint_weights(kp, np.array([[2]]), 256)
>>> hm = render_heatmaps(kp, w, 256, 64)  # stride 4: heatmap point (32.5, 16.5)
>>> float(hm[0, 16, 32, 0])
1.0
"""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_pose.geometry import size_pair
from keras_pose.keypoints import coord_to_index


def keypoint_weights(keypoints_input, visibility, input_size) -> Any:
    """Per-keypoint loss weights: 1 for labeled keypoints inside the input frame, else 0.

    Args:
        keypoints_input: ``[B, K, 2]`` keypoints in input pixels (after augmentation).
        visibility: ``[B, K]`` COCO visibility; 0 means unlabeled.
        input_size: network input size, an int or (height, width).

    Returns:
        float32 ``[B, K]``. A keypoint is inside when ``0 <= x < width`` and
        ``0 <= y < height`` (continuous coordinates), i.e. inside a pixel of the input and so
        inside a heatmap pixel at any stride that divides the input.
    """
    height, width = size_pair(input_size)
    keypoints_input = ops.cast(keypoints_input, "float32")
    x, y = keypoints_input[..., 0], keypoints_input[..., 1]
    inside = (x >= 0.0) & (x < width) & (y >= 0.0) & (y < height)
    labeled = ops.cast(visibility, "int32") > 0
    return ops.cast(inside & labeled, "float32")


def default_sigma(heatmap_size) -> float:
    """Gaussian sigma in heatmap pixels: 1 px at width 64, scaled with the heatmap width."""
    _, width = size_pair(heatmap_size, "heatmap_size")
    return width / 64.0


def render_heatmaps(keypoints_input, weights, input_size, heatmap_size,
                    sigma: float | None = None) -> Any:
    """Gaussian heatmap targets, one channel per keypoint, rendered as separable exponentials.

    Args:
        keypoints_input: ``[B, K, 2]`` keypoints in input pixels.
        weights: ``[B, K]`` from :func:`keypoint_weights`; weight 0 gives an all-zero channel.
        input_size: network input size, an int or (height, width).
        heatmap_size: output size, an int or (height, width); the stride per axis is
            ``input / heatmap``.
        sigma: standard deviation in heatmap pixels; ``None`` means ``heatmap_width / 64``.

    Returns:
        float32 ``[B, h, w, K]`` with ``exp(-d^2 / (2 sigma^2)) * weight``, where ``d`` is the
        distance between a pixel centre and the keypoint in heatmap coordinates.
    """
    in_h, in_w = size_pair(input_size)
    hm_h, hm_w = size_pair(heatmap_size, "heatmap_size")
    if sigma is None:
        sigma = default_sigma((hm_h, hm_w))
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 heatmap pixels, received sigma={sigma}")
    keypoints_input = ops.cast(keypoints_input, "float32")
    # Keypoint in heatmap array-index coordinates (p / stride, then to an index).
    cx = coord_to_index(keypoints_input[..., 0] * (hm_w / in_w))  # [B, K]
    cy = coord_to_index(keypoints_input[..., 1] * (hm_h / in_h))
    cols = ops.arange(hm_w, dtype="float32")
    rows = ops.arange(hm_h, dtype="float32")
    scale = -0.5 / (sigma * sigma)
    gx = ops.exp(scale * ops.square(cols[None, :, None] - cx[:, None, :]))  # [B, w, K]
    gy = ops.exp(scale * ops.square(rows[None, :, None] - cy[:, None, :]))  # [B, h, K]
    gy = gy * ops.cast(weights, "float32")[:, None, :]
    return gy[:, :, None, :] * gx[:, None, :, :]


def coordinate_targets(keypoints_input, input_size) -> Any:
    """Normalized coordinates for regression models: ``x / width - 0.5``, ``y / height - 0.5``.

    Args:
        keypoints_input: ``[B, K, 2]`` keypoints in input pixels.
        input_size: network input size, an int or (height, width).

    Returns:
        float32 ``[B, K, 2]``; the input centre is (0, 0), the frame spans [-0.5, 0.5).
    """
    height, width = size_pair(input_size)
    keypoints_input = ops.cast(keypoints_input, "float32")
    size = ops.convert_to_tensor([float(width), float(height)], dtype="float32")
    return keypoints_input / size - 0.5


def coordinates_to_input(coordinates, input_size) -> Any:
    """Normalized coordinates -> input pixels, the inverse of :func:`coordinate_targets`.

    Args:
        coordinates: ``[B, K, 2]`` normalized coordinates (a regression model's output).
        input_size: network input size, an int or (height, width).

    Returns:
        float32 ``[B, K, 2]`` keypoints in input pixels.
    """
    height, width = size_pair(input_size)
    coordinates = ops.cast(coordinates, "float32")
    size = ops.convert_to_tensor([float(width), float(height)], dtype="float32")
    return (coordinates + 0.5) * size
