"""Heatmaps -> keypoints, and keypoints back through the crop to the original image.

The pieces the codecs (``keras_pose.codecs``) decode with; a model's output is decoded by its
codec, ``codec_for(output_spec, input_size).decode(output)``.

``keras.ops`` only (argmax, gathers, elementwise math): traced into a SavedModel it uses stock
TensorFlow ops that TF Serving runs.

Coordinates follow ``keras_pose.keypoints`` (pixel centres at ``index + 0.5``). The chain back
to the source image is:

    heatmap coords --(* stride)--> input px --(inverse augment matrix)--> crop px
                   --(box_xy + crop * side / crop_size)--> image px

Sub-pixel refinement (``refine``):

- ``"quarter"`` (default; the official hourglass code): argmax, then a quarter-pixel step along
  each axis toward the higher neighbour. On a clean Gaussian its error is at most 0.25 heatmap
  px per axis; keypoints +-0.25 px from a pixel centre are recovered exactly, one halfway
  between centres is off by 0.25, and one exactly on a centre is exact only when its two
  neighbours tie exactly (float rounding may tip the step by 0.25 either way). At stride 4 the
  bound is 1 input pixel.
- ``"gaussian"``: a parabola through the logs of the peak and its two neighbours per axis
  (exact for a Gaussian target, clipped to +-0.5 px; falls back to no step where the peak is not
  a strict maximum or on the border).
- ``"none"``: the argmax pixel centre.

Example:

>>> import numpy as np
>>> from keras_pose.targets import render_heatmaps
>>> kp = np.array([[[98.0, 62.0]]], np.float32)  # input px, 256x256 input, stride 4
>>> hm = render_heatmaps(kp, np.ones((1, 1)), 256, 64)
>>> coords, scores = decode_heatmaps(hm)
>>> [float(v) * 4 for v in coords[0, 0]]
[98.0, 62.0]
"""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_pose.augment import apply_affine, invert_affine
from keras_pose.keypoints import index_to_coord

REFINEMENTS = ("quarter", "gaussian", "none")


def decode_heatmaps(heatmaps, refine: str = "quarter") -> tuple[Any, Any]:
    """Heatmaps -> keypoints in heatmap coordinates, with a confidence per keypoint.

    Args:
        heatmaps: ``[B, h, w, K]`` (static h and w).
        refine: ``"quarter"`` (default), ``"gaussian"`` or ``"none"`` (see the module doc).

    Returns:
        ``(coords, scores)``: float32 ``[B, K, 2]`` (x, y) continuous heatmap coordinates and
        float32 ``[B, K]`` peak values.
    """
    if refine not in REFINEMENTS:
        raise ValueError(f"refine must be one of {REFINEMENTS}, received refine={refine!r}")
    if len(heatmaps.shape) != 4:
        raise ValueError(f"heatmaps must be [B, h, w, K], received shape {tuple(heatmaps.shape)}")
    height, width = heatmaps.shape[1], heatmaps.shape[2]
    if height is None or width is None:
        raise ValueError(f"heatmaps need a static h and w, received {tuple(heatmaps.shape)}")
    heatmaps = ops.cast(heatmaps, "float32")
    batch, channels = ops.shape(heatmaps)[0], ops.shape(heatmaps)[3]
    flat = ops.reshape(ops.transpose(heatmaps, (0, 3, 1, 2)), (batch, channels, height * width))
    index = ops.cast(ops.argmax(flat, axis=-1), "int32")  # [B, K]
    scores = ops.max(flat, axis=-1)
    row, col = index // width, index % width

    def value_at(r, c):
        where = ops.clip(r, 0, height - 1) * width + ops.clip(c, 0, width - 1)
        return ops.take_along_axis(flat, where[..., None], axis=-1)[..., 0]

    dx = ops.zeros_like(scores)
    dy = ops.zeros_like(scores)
    if refine != "none":
        left, right = value_at(row, col - 1), value_at(row, col + 1)
        up, down = value_at(row - 1, col), value_at(row + 1, col)
        inner_x = ops.cast((col > 0) & (col < width - 1), "float32")
        inner_y = ops.cast((row > 0) & (row < height - 1), "float32")
        if refine == "quarter":
            dx = 0.25 * ops.sign(right - left) * inner_x
            dy = 0.25 * ops.sign(down - up) * inner_y
        else:
            dx = _log_parabola_offset(left, scores, right) * inner_x
            dy = _log_parabola_offset(up, scores, down) * inner_y
    x = index_to_coord(ops.cast(col, "float32")) + dx
    y = index_to_coord(ops.cast(row, "float32")) + dy
    return ops.stack([x, y], axis=-1), scores


def _log_parabola_offset(before, peak, after):
    """Vertex of the parabola through (-1, log before), (0, log peak), (1, log after)."""
    eps = 1e-10
    lb = ops.log(ops.maximum(before, eps))
    lp = ops.log(ops.maximum(peak, eps))
    la = ops.log(ops.maximum(after, eps))
    curvature = lb - 2.0 * lp + la
    is_peak = curvature < -1e-6
    safe = ops.where(is_peak, curvature, -1.0)
    offset = 0.5 * (lb - la) / safe
    return ops.where(is_peak, ops.clip(offset, -0.5, 0.5), 0.0)


def spatial_softmax(logits) -> Any:
    """Softmax over the h*w positions of each channel: ``[B, h, w, K]`` logits -> probabilities.

    Each channel sums to 1; the argmax is the logits' argmax, and the log of a ratio of two
    positions is the difference of their logits, so the ``"gaussian"`` refinement (a parabola
    through log values) reads the logits' own curvature.
    """
    height, width = logits.shape[1], logits.shape[2]
    logits = ops.cast(logits, "float32")
    batch, channels = ops.shape(logits)[0], ops.shape(logits)[3]
    flat = ops.reshape(logits, (batch, height * width, channels))
    return ops.reshape(ops.softmax(flat, axis=1), (batch, height, width, channels))


# ----------------------------------------------------------------------------------------------
# Back to crop and image pixels


def input_to_crop(points, matrices) -> Any:
    """Input pixels -> crop pixels through the inverse of the crop -> input matrices."""
    return apply_affine(points, invert_affine(matrices))


def crop_to_image(points, crop_box, crop_size) -> Any:
    """Crop pixels -> source-image pixels: ``box_xy + crop * side / crop_size``.

    Args:
        points: ``[B, K, 2]`` crop pixels.
        crop_box: ``[B, 4]`` crop square x, y, side, side in image pixels (the record's box).
        crop_size: stored crop side in pixels (int or ``[B]``).

    Returns:
        float32 ``[B, K, 2]`` image pixels.
    """
    points = ops.cast(points, "float32")
    crop_box = ops.cast(crop_box, "float32")
    crop_size = ops.cast(crop_size, "float32")
    if len(crop_size.shape) == 1:
        crop_size = crop_size[:, None]
    scale = crop_box[:, 2:4] / crop_size  # [B, 2]
    return crop_box[:, None, 0:2] + points * scale[:, None, :]


def image_to_crop(points, crop_box, crop_size) -> Any:
    """Source-image pixels -> crop pixels (inverse of :func:`crop_to_image`)."""
    points = ops.cast(points, "float32")
    crop_box = ops.cast(crop_box, "float32")
    crop_size = ops.cast(crop_size, "float32")
    if len(crop_size.shape) == 1:
        crop_size = crop_size[:, None]
    scale = crop_box[:, 2:4] / crop_size
    return (points - crop_box[:, None, 0:2]) / scale[:, None, :]
