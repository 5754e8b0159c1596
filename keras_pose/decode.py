"""Model outputs -> keypoints, and back through the crop to the original image.

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

from collections.abc import Callable
from typing import Any

import numpy as np
from keras import ops

from keras_pose.augment import apply_affine, invert_affine, size_pair

REFINEMENTS = ("quarter", "gaussian", "none")


def _last(output):
    """The final prediction of a model that returns its intermediate outputs as a list."""
    if isinstance(output, (list, tuple)):
        return output[-1]
    if isinstance(output, dict):
        return list(output.values())[-1]
    return output


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
    x = ops.cast(col, "float32") + 0.5 + dx
    y = ops.cast(row, "float32") + 0.5 + dy
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


def decode_outputs(output, output_spec, input_size, refine: str = "quarter") -> tuple[Any, Any]:
    """Any model's output -> keypoints in input pixels and scores, read from its OutputSpec.

    Args:
        output: the final output (or the list of outputs; the last is used): heatmaps
            ``[B, h, w, K]`` or normalized coordinates ``[B, K, 2]``.
        output_spec: ``keras_pose.models.base.OutputSpec``.
        input_size: network input size, an int or (height, width).
        refine: heatmap sub-pixel refinement (see :func:`decode_heatmaps`).

    Returns:
        ``(coords, scores)``: float32 ``[B, K, 2]`` in input pixels and ``[B, K]``: the peak
        value of MSE-trained heatmaps; for heatmaps trained with the spatial-softmax loss
        (``output_spec.loss == "softmax_cross_entropy"``, whose outputs are logits) the
        probability at the peak of the softmax over the map, in [0, 1]; 1 for coordinate
        models.
    """
    from keras_pose.models.base import COORDINATES, HEATMAPS, SOFTMAX_CROSS_ENTROPY

    output = _last(output)
    height, width = size_pair(input_size)
    if output_spec.kind == HEATMAPS:
        stride = output_spec.stride
        if not stride or stride <= 0:
            raise ValueError(f"A heatmap OutputSpec needs a positive stride, received {stride!r}")
        hm_h, hm_w = output.shape[1], output.shape[2]
        if (hm_h, hm_w) != (height // stride, width // stride) or height % stride or (
                width % stride):
            raise ValueError(
                f"Heatmaps of size {(hm_h, hm_w)} with stride {stride} do not match the input "
                f"size {(height, width)}"
            )
        if output_spec.loss == SOFTMAX_CROSS_ENTROPY:
            output = spatial_softmax(output)
        coords, scores = decode_heatmaps(output, refine)
        return coords * float(stride), scores
    if output_spec.kind == COORDINATES:
        output = ops.cast(output, "float32")
        size = ops.convert_to_tensor([float(width), float(height)], dtype="float32")
        coords = (output + 0.5) * size
        return coords, ops.ones_like(output[..., 0])
    raise ValueError(
        f"output_spec.kind must be {HEATMAPS!r} or {COORDINATES!r}, received {output_spec.kind!r}"
    )


# ----------------------------------------------------------------------------------------------
# Flip test


def flip_images(images) -> Any:
    """Mirror images ``[B, H, W, C]`` left-right (continuous x -> W - x)."""
    return ops.flip(images, axis=2)


def flip_heatmaps(heatmaps, flip_permutation) -> Any:
    """Mirror heatmaps ``[B, h, w, K]`` left-right and swap left/right channels.

    Mirroring the array maps heatmap coordinate ``x`` to ``w - x``, the same map the image
    mirror applies at input scale (``X -> W - X`` with ``X = stride * x``), so no half-pixel
    shift is needed.
    """
    perm = ops.convert_to_tensor(np.asarray(flip_permutation, np.int32))
    return ops.take(ops.flip(heatmaps, axis=2), perm, axis=3)


def flip_coordinates(coordinates, flip_permutation) -> Any:
    """Mirror normalized coordinates ``[B, K, 2]`` (``x -> -x``) and swap left/right."""
    perm = ops.convert_to_tensor(np.asarray(flip_permutation, np.int32))
    coordinates = ops.cast(coordinates, "float32")
    mirrored = coordinates * ops.convert_to_tensor([-1.0, 1.0], dtype="float32")
    return ops.take(mirrored, perm, axis=1)


def flip_test_heatmaps(model_fn: Callable[[Any], Any], images, flip_permutation) -> Any:
    """Average the heatmaps of the images and of their mirror images (flipped back).

    Args:
        model_fn: images ``[N, H, W, 3]`` -> heatmaps ``[N, h, w, K]`` (or a list of outputs).
        images: ``[B, H, W, 3]``.
        flip_permutation: ``[K]``, ``flipped[k] = original[perm[k]]``.

    Returns:
        float32 ``[B, h, w, K]``. The model runs once on a batch of ``2B`` images.
    """
    return flip_test(model_fn, images, flip_permutation, kind="heatmaps")


def flip_test(model_fn: Callable[[Any], Any], images, flip_permutation,
              kind: str = "heatmaps") -> Any:
    """Flip test for either output kind (``"heatmaps"`` or ``"coordinates"``).

    Returns the average of the output on the images and the flipped-back output on their
    mirror images: heatmaps ``[B, h, w, K]`` or normalized coordinates ``[B, K, 2]``.
    """
    from keras_pose.models.base import COORDINATES, HEATMAPS

    if kind not in (HEATMAPS, COORDINATES):
        raise ValueError(f"kind must be {HEATMAPS!r} or {COORDINATES!r}, received {kind!r}")
    batch = ops.shape(images)[0]
    both = ops.concatenate([images, flip_images(images)], axis=0)
    output = ops.cast(_last(model_fn(both)), "float32")
    plain, mirrored = output[:batch], output[batch:]
    if kind == HEATMAPS:
        back = flip_heatmaps(mirrored, flip_permutation)
    else:
        back = flip_coordinates(mirrored, flip_permutation)
    return 0.5 * (plain + back)


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


def decode_to_image(output, output_spec, input_size, matrices, crop_box, crop_size,
                    refine: str = "quarter") -> tuple[Any, Any]:
    """Model output -> (image-pixel keypoints [B, K, 2], scores [B, K]) in one call.

    Args:
        output: model output (or list of outputs).
        output_spec: the model's ``OutputSpec``.
        input_size: network input size.
        matrices: ``[B, 3, 3]`` crop -> input matrices (``augment_batch(...)["matrices"]``).
        crop_box: ``[B, 4]`` the records' crop boxes.
        crop_size: stored crop side.
        refine: heatmap sub-pixel refinement.
    """
    coords, scores = decode_outputs(output, output_spec, input_size, refine)
    return crop_to_image(input_to_crop(coords, matrices), crop_box, crop_size), scores
