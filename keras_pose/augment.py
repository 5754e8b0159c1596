"""Batch augmentation inside the training step, written in ``keras.ops``.

Every sample of a batch gets one affine matrix that maps its stored crop (crop pixels) to the
network input (input pixels): the crop -> input resize composed with a random rotation, scale,
translation and horizontal flip about the input centre. The image is resampled **once**
(bilinear) with that matrix and the keypoints are moved by the same matrix, so image and
keypoints cannot drift apart. A flip also swaps left and right keypoints (``flip_permutation``).

All coordinates follow ``keras_pose.keypoints``: continuous pixel coordinates with pixel centres
at ``index + 0.5``. Matrices are float32 ``[B, 3, 3]`` acting on column vectors ``(x, y, 1)``.

Two samplers resample the image:

- ``"gather"`` (default): a bilinear sampler built from ``keras.ops.take`` (four reads per
  output pixel). It compiles with XLA (``jit_compile=True``), where it is the fastest path.
- ``"affine_transform"`` (alias ``"affine"``): ``keras.ops.image.affine_transform`` (TF's
  ``ImageProjectiveTransformV3``).
  It has no XLA kernel, so use it only in steps compiled with ``jit_compile=False``.

Both read out-of-crop pixels as 0 and give the same pixels (see ``tests/test_augment.py``).

Random draws come from ``keras.random`` with a ``keras.random.SeedGenerator`` (a new draw every
call, inside ``tf.function`` and XLA too; reproducible from the generator's seed) or an ``int``
(stateless: the same draw on every call, handy for tests). Draws are reproducible within one
compile mode; a step compiled with XLA draws other (equally distributed) numbers than the same
step without XLA, because TF's stateless RNG selects another algorithm under XLA.

Example:

>>> import numpy as np, keras
>>> from keras_pose.keypoints import COCO17
>>> images = np.zeros((2, 320, 320, 3), np.uint8)
>>> keypoints = np.full((2, 17, 2), 160.0, np.float32)
>>> visibility = np.full((2, 17), 2, np.int32)
>>> out = augment_batch(images, keypoints, visibility, input_size=256,
...                     config=AugmentConfig(), flip_permutation=COCO17.flip_permutation,
...                     seed=keras.random.SeedGenerator(0), training=True)
>>> tuple(out["images"].shape)
(2, 256, 256, 3)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_pose.geometry import size_pair
from keras_pose.keypoints import PIXEL_CENTER_OFFSET, coord_to_index, index_to_coord
from keras_pose.pipeline import AugmentConfig

SAMPLERS = ("gather", "affine_transform")
_SAMPLER_ALIASES = {"affine": "affine_transform"}

# Columns of the single uniform draw made per sample (one draw keeps int seeds independent).
_ANGLE, _ROTATE, _SCALE, _TX, _TY, _FLIP, _BRIGHTNESS, _CONTRAST, _SATURATION = range(9)
_NUM_DRAWS = 9


def context_needed(config: AugmentConfig) -> float:
    """The stored side / crop side that every transform ``config`` can draw stays inside.

    The network input is the crop, zoomed by ``z``, rotated by ``a`` and shifted by ``t``
    (a fraction of the input per axis) about its centre. Its square maps back into crop
    coordinates with half-extent ``(1/2 + |t|) (|cos a| + |sin a|) / z`` crop sides along
    each axis, largest at the smallest zoom, the largest shift, and the angle nearest 45
    degrees. Records storing this much context (``convert_source(context=...)``) never show
    black from the crop's edge, only where the source image itself ends.

    Args:
        config: the augmentation ranges.

    Returns:
        The factor, >= 1 (1 when nothing zooms out, rotates or shifts).
    """
    reach = 2.0 if config.distribution == "clipped_normal" else 1.0
    max_angle = math.radians(reach * config.rotation) if config.rotation_prob > 0 else 0.0
    # |cos a| + |sin a| peaks at 45 degrees (sqrt 2) and rises monotonically before it.
    spread = math.sqrt(2.0) if max_angle >= math.pi / 4 else math.cos(max_angle) + math.sin(
        max_angle)
    if config.scale_mode == "log2":
        min_zoom = 2.0 ** (-reach * config.scale)
    else:
        min_zoom = 1.0 - reach * config.scale
    max_shift = reach * config.translation
    return max(1.0, (1.0 + 2.0 * max_shift) * spread / min_zoom)


# ----------------------------------------------------------------------------------------------
# Matrices


def resize_matrices(crop_size: int | Sequence[int], input_size: int | Sequence[int],
                    batch_size: int) -> Any:
    """The deterministic crop -> input resize: ``p -> p * input / crop`` per axis.

    Args:
        crop_size: side of the stored square crop, or its (height, width).
        input_size: network input size, an int or (height, width).
        batch_size: number of matrices (a Python int or a scalar tensor).

    Returns:
        float32 ``[batch_size, 3, 3]``.
    """
    crop_h, crop_w = size_pair(crop_size, "crop_size")
    in_h, in_w = size_pair(input_size)
    matrix = np.diag([in_w / crop_w, in_h / crop_h, 1.0]).astype(np.float32)
    return ops.tile(ops.convert_to_tensor(matrix)[None], [batch_size, 1, 1])


def compose_matrices(angles, scales, translations, flips, *, crop_size, input_size) -> Any:
    """Crop -> input matrices for given transform parameters (the deterministic core).

    The crop is first resized to the input size, then, about the input centre ``c``, mirrored
    (``x -> 2 c_x - x``, which maps pixel centres onto pixel centres), zoomed, rotated and
    finally shifted: ``p_input = R(angle) * zoom * F * (p_resized - c) + c + translation``.

    Args:
        angles: rotation in radians ``[B]`` (positive turns clockwise on screen: y points down).
        scales: zoom factors ``[B]``.
        translations: shifts in input pixels ``[B, 2]`` (x, y).
        flips: ``[B]`` booleans or 0/1.
        crop_size: stored crop side (int or (height, width)).
        input_size: network input size (int or (height, width)).

    Returns:
        float32 ``[B, 3, 3]`` mapping crop pixels to input pixels.
    """
    crop_h, crop_w = size_pair(crop_size, "crop_size")
    in_h, in_w = size_pair(input_size)
    angles = ops.cast(angles, "float32")
    scales = ops.cast(scales, "float32")
    translations = ops.cast(translations, "float32")
    mirror = 1.0 - 2.0 * ops.cast(flips, "float32")  # -1 flips x, +1 keeps it
    cos, sin = ops.cos(angles) * scales, ops.sin(angles) * scales
    sx, sy = in_w / crop_w, in_h / crop_h
    cx, cy = in_w / 2.0, in_h / 2.0
    # Linear part A = R * zoom * F, applied after the resize diag(sx, sy).
    a00, a01 = cos * mirror, -sin
    a10, a11 = sin * mirror, cos
    t0 = cx + translations[:, 0] - (a00 * cx + a01 * cy)
    t1 = cy + translations[:, 1] - (a10 * cx + a11 * cy)
    zeros, ones = ops.zeros_like(angles), ops.ones_like(angles)
    rows = [
        ops.stack([a00 * sx, a01 * sy, t0], axis=-1),
        ops.stack([a10 * sx, a11 * sy, t1], axis=-1),
        ops.stack([zeros, zeros, ones], axis=-1),
    ]
    return ops.stack(rows, axis=1)


def invert_affine(matrices) -> Any:
    """Inverse of affine ``[B, 3, 3]`` matrices (closed form, XLA friendly)."""
    matrices = ops.cast(matrices, "float32")
    a, b, tx = matrices[:, 0, 0], matrices[:, 0, 1], matrices[:, 0, 2]
    c, d, ty = matrices[:, 1, 0], matrices[:, 1, 1], matrices[:, 1, 2]
    det = a * d - b * c
    i00, i01, i10, i11 = d / det, -b / det, -c / det, a / det
    j0 = -(i00 * tx + i01 * ty)
    j1 = -(i10 * tx + i11 * ty)
    zeros, ones = ops.zeros_like(a), ops.ones_like(a)
    return ops.stack(
        [
            ops.stack([i00, i01, j0], axis=-1),
            ops.stack([i10, i11, j1], axis=-1),
            ops.stack([zeros, zeros, ones], axis=-1),
        ],
        axis=1,
    )


def apply_affine(points, matrices) -> Any:
    """Move points ``[B, K, 2]`` by matrices ``[B, 3, 3]`` (continuous coordinates)."""
    points = ops.cast(points, "float32")
    matrices = ops.cast(matrices, "float32")
    linear = matrices[:, :2, :2]
    shift = matrices[:, :2, 2]
    return ops.einsum("bij,bkj->bki", linear, points) + shift[:, None, :]


# ----------------------------------------------------------------------------------------------
# Resampling


def warp_images(images, matrices, output_size, sampler: str = "gather") -> Any:
    """Resample images with bilinear interpolation so that ``out(M p) = image(p)``.

    Args:
        images: ``[B, H, W, C]`` of any real dtype (uint8 crops as stored).
        matrices: ``[B, 3, 3]`` mapping source pixels to output pixels.
        output_size: output (height, width) or an int.
        sampler: ``"gather"`` (XLA-compilable) or ``"affine_transform"`` (alias ``"affine"``;
            ``keras.ops.image.affine_transform``, not XLA-compilable).

    Returns:
        float32 ``[B, h, w, C]``; pixels that sample outside the source read 0.
    """
    sampler = _SAMPLER_ALIASES.get(sampler, sampler)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, received sampler={sampler!r}")
    if len(images.shape) != 4:
        raise ValueError(f"images must be [B, H, W, C], received shape {tuple(images.shape)}")
    out_h, out_w = size_pair(output_size, "output_size")
    inverse = invert_affine(matrices)
    if sampler == "gather":
        return _gather_bilinear(images, inverse, out_h, out_w)
    return _affine_transform(images, inverse, out_h, out_w)


def _gather_bilinear(images, inverse, out_h, out_w):
    """Bilinear sampling with four ``take`` reads per output pixel."""
    shape = ops.shape(images)
    batch, src_h, src_w, channels = shape[0], images.shape[1], images.shape[2], images.shape[3]
    if src_h is None or src_w is None or channels is None:
        raise ValueError(f"images need static H, W, C, received shape {tuple(images.shape)}")
    # Output pixel centres in continuous coordinates, mapped to source array indices.
    xs = index_to_coord(ops.arange(out_w, dtype="float32"))
    ys = index_to_coord(ops.arange(out_h, dtype="float32"))

    def source_index(row):
        coord = (inverse[:, row, 0, None, None] * xs[None, None, :]
                 + inverse[:, row, 1, None, None] * ys[None, :, None]
                 + inverse[:, row, 2, None, None])
        return coord_to_index(coord)

    # Clipping keeps far-away coordinates from overflowing int32; they read 0 anyway.
    sx = ops.clip(source_index(0), -2.0, src_w + 1.0)  # [B, h, w]
    sy = ops.clip(source_index(1), -2.0, src_h + 1.0)
    x0f, y0f = ops.floor(sx), ops.floor(sy)
    fx, fy = sx - x0f, sy - y0f
    x0, y0 = ops.cast(x0f, "int32"), ops.cast(y0f, "int32")
    x1, y1 = x0 + 1, y0 + 1

    flat = ops.reshape(images, (-1, channels))
    base = ops.reshape(ops.arange(batch, dtype="int32") * (src_h * src_w), (-1, 1, 1))

    def read(yi, xi, weight):
        inside = (xi >= 0) & (xi < src_w) & (yi >= 0) & (yi < src_h)
        index = base + ops.clip(yi, 0, src_h - 1) * src_w + ops.clip(xi, 0, src_w - 1)
        values = ops.take(flat, ops.reshape(index, (-1,)), axis=0)
        weight = ops.reshape(weight * ops.cast(inside, "float32"), (-1, 1))
        return ops.cast(values, "float32") * weight

    out = (read(y0, x0, (1.0 - fx) * (1.0 - fy)) + read(y0, x1, fx * (1.0 - fy))
           + read(y1, x0, (1.0 - fx) * fy) + read(y1, x1, fx * fy))
    return ops.reshape(out, (batch, out_h, out_w, channels))


def _affine_transform(images, inverse, out_h, out_w):
    """The ``keras.ops.image.affine_transform`` path (output -> source map in array indices)."""
    images = ops.cast(images, "float32")
    src_h, src_w = images.shape[1], images.shape[2]
    # affine_transform keeps the input's spatial size: pad the source so the output fits, then
    # slice. Zero padding reads like its constant fill, so the pixels are unchanged.
    pad_h, pad_w = max(0, out_h - src_h), max(0, out_w - src_w)
    if pad_h or pad_w:
        images = ops.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])
    # Source index = coord_to_index(Inv * index_to_coord(output index)): the offset folded
    # into the translation column.
    a0, a1 = inverse[:, 0, 0], inverse[:, 0, 1]
    b0, b1 = inverse[:, 1, 0], inverse[:, 1, 1]
    a2 = coord_to_index(inverse[:, 0, 2] + PIXEL_CENTER_OFFSET * (a0 + a1))
    b2 = coord_to_index(inverse[:, 1, 2] + PIXEL_CENTER_OFFSET * (b0 + b1))
    zeros = ops.zeros_like(a0)
    transform = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=-1)
    warped = ops.image.affine_transform(
        images, transform, interpolation="bilinear", fill_mode="constant", fill_value=0,
        data_format="channels_last",
    )
    return warped[:, :out_h, :out_w, :]


# ----------------------------------------------------------------------------------------------
# Random draws


def sample_parameters(batch_size, config: AugmentConfig, input_size, seed) -> dict[str, Any]:
    """Draw one set of transform and photometric parameters per sample.

    One uniform draw ``[B, 9]`` feeds every parameter (one column each). Under
    ``distribution="clipped_normal"`` the geometric columns go through the normal quantile
    function (``sqrt(2) erfinv(2u - 1)``) and are clipped at +-2, which gives exactly the
    clipped normal; ``channel_scale`` makes one more draw ``[B, 3]``, only when it is on, so
    the default configuration draws what it always drew.

    Args:
        batch_size: number of samples (Python int or scalar tensor).
        config: the :class:`AugmentConfig`.
        input_size: network input size (int or (height, width)); translations are fractions of it.
        seed: ``keras.random.SeedGenerator`` or int.

    Returns:
        dict of ``angles`` [B] (radians), ``scales`` [B] (zoom factors), ``translations``
        [B, 2] (input px), ``flips`` bool [B], ``brightness`` [B] (0-255 units), ``contrast``
        [B], ``saturation`` [B] and ``channel_scales`` [B, 3] (1 when ``channel_scale`` is 0).
    """
    in_h, in_w = size_pair(input_size)
    u = keras.random.uniform((batch_size, _NUM_DRAWS), seed=seed)

    def symmetric(column, limit):
        return (2.0 * u[:, column] - 1.0) * limit

    def geometric(column, limit):
        if config.distribution == "uniform":
            return symmetric(column, limit)
        # u = 0 gives erfinv(-1) = -inf, which the clip turns into -2 (before any product).
        normal = math.sqrt(2.0) * ops.erfinv(2.0 * u[:, column] - 1.0)
        return ops.clip(normal, -2.0, 2.0) * limit

    rotate = ops.cast(u[:, _ROTATE] < config.rotation_prob, "float32")
    zoom = geometric(_SCALE, config.scale)
    if config.scale_mode == "log2":
        zoom = ops.exp(zoom * math.log(2.0))
    else:
        zoom = 1.0 + zoom
    if config.channel_scale > 0:
        v = keras.random.uniform((batch_size, 3), seed=_second_seed(seed))
        channel_scales = 1.0 + (2.0 * v - 1.0) * config.channel_scale
    else:
        channel_scales = ops.ones((batch_size, 3), dtype="float32")
    return {
        "angles": geometric(_ANGLE, math.radians(config.rotation)) * rotate,
        "scales": zoom,
        "translations": ops.stack(
            [geometric(_TX, config.translation * in_w), geometric(_TY, config.translation * in_h)],
            axis=-1,
        ),
        "flips": u[:, _FLIP] < config.flip_prob,
        "brightness": symmetric(_BRIGHTNESS, config.brightness * 255.0),
        "contrast": 1.0 + symmetric(_CONTRAST, config.contrast),
        "saturation": 1.0 + symmetric(_SATURATION, config.saturation),
        "channel_scales": channel_scales,
    }


def _second_seed(seed):
    """The seed of a second draw: a generator gives its next seed; an int seed is offset so the
    second stateless draw does not repeat the first one's numbers."""
    if isinstance(seed, (int, np.integer)):
        return int(seed) + 1_000_003
    return seed


def photometric_jitter(images, brightness, contrast, saturation, channel_scales=None) -> Any:
    """Colour-channel, saturation, contrast and brightness jitter of float images in [0, 255].

    Args:
        images: float32 ``[B, H, W, 3]``.
        brightness: ``[B]`` value added (0-255 units).
        contrast: ``[B]`` factor on the deviation from the image's mean grey.
        saturation: ``[B]`` factor on the deviation from each pixel's grey.
        channel_scales: ``[B, 3]`` factor per colour channel, applied first and clipped to
            [0, 255] (as the hourglass code clips after its channel scaling); ``None``: none.

    Returns:
        float32 ``[B, H, W, 3]`` clipped to [0, 255].
    """
    if channel_scales is not None:
        channel_scales = ops.cast(channel_scales, "float32")
        images = ops.clip(ops.cast(images, "float32") * channel_scales[:, None, None, :],
                          0.0, 255.0)
    luma = ops.convert_to_tensor(np.array([0.299, 0.587, 0.114], np.float32))
    grey = ops.sum(images * luma, axis=-1, keepdims=True)
    images = grey + (images - grey) * saturation[:, None, None, None]
    mean = ops.mean(grey, axis=(1, 2, 3), keepdims=True)
    images = mean + (images - mean) * contrast[:, None, None, None]
    images = images + brightness[:, None, None, None]
    return ops.clip(images, 0.0, 255.0)


# ----------------------------------------------------------------------------------------------
# The step's entry point


def shift_source(matrices, offset: float) -> Any:
    """``matrices`` (crop px -> output) made to read a source whose crop window starts at
    ``(offset, offset)``: ``M @ translate(-offset)``."""
    matrices = ops.cast(matrices, "float32")
    if not offset:
        return matrices
    linear = matrices[:, :2, :2]
    shift = matrices[:, :2, 2] - offset * ops.sum(linear, axis=2)
    return ops.concatenate([ops.concatenate([linear, shift[:, :, None]], axis=2),
                            matrices[:, 2:, :]], axis=1)


def augment_batch(images, keypoints, visibility, *, input_size, config: AugmentConfig | None,
                  flip_permutation, seed=None, training: bool, sampler: str = "gather",
                  crop_size: int | None = None, fixed: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Augment a batch of stored crops (or only resize them when ``training`` is False).

    Images may carry context around the crop (records converted with ``context > 1``, read
    with ``make_dataset(context=True)``): the crop is then their centre window of side
    ``crop_size``, the transforms are drawn for the crop as always, and the one warp reads the
    surroundings wherever a zoom-out, rotation or shift looks past the crop's edge.

    Args:
        images: uint8 (or float) ``[B, S, S, 3]`` stored crops, or crops with context.
        keypoints: ``[B, K, 2]`` keypoints in crop pixels.
        visibility: ``[B, K]`` COCO visibility (0 unlabeled, 1 occluded, 2 visible).
        input_size: network input size, an int or (height, width).
        config: the :class:`AugmentConfig` (``None``: defaults); ignored when not training.
        flip_permutation: ``[K]`` index array, ``flipped[k] = original[perm[k]]``
            (``KeypointSet.flip_permutation``).
        seed: ``keras.random.SeedGenerator`` (fresh draws each call) or int (same draw each
            call); required when training.
        training: draw random transforms when True; the deterministic resize when False.
        sampler: ``"gather"`` (default, XLA-compilable) or ``"affine_transform"``.
        crop_size: side of the crop the keypoints are in, centred in ``images`` (which hold
            ``(S - crop_size) / 2`` pixels of context on each side); None = ``S`` (no
            context).
        fixed: values that replace the random draws of the same name of
            :func:`sample_parameters` for every sample, e.g. ``{"scales": 0.7, "angles": 0.0}``
            (pictures and tests of one transform).

    Returns:
        dict with ``images`` float32 [B, h, w, 3] in [0, 255], ``keypoints`` float32 [B, K, 2]
        in input pixels, ``visibility`` [B, K] (left/right swapped where flipped),
        ``matrices`` float32 [B, 3, 3] (crop px -> input px) and ``flipped`` bool [B].
    """
    if len(images.shape) != 4:
        raise ValueError(
            f"images must be a batch [B, S, S, C], received shape {tuple(images.shape)}"
        )
    if len(keypoints.shape) != 3 or keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must be [B, K, 2], received shape {tuple(keypoints.shape)}")
    num_keypoints = keypoints.shape[1]
    perm = np.asarray(flip_permutation, dtype=np.int32)
    if perm.ndim != 1 or (num_keypoints is not None and perm.shape[0] != num_keypoints):
        raise ValueError(
            f"flip_permutation must have one entry per keypoint ({num_keypoints}), "
            f"received shape {perm.shape}"
        )
    if num_keypoints is not None and sorted(perm.tolist()) != list(range(num_keypoints)):
        raise ValueError(f"flip_permutation must be a permutation, received {perm.tolist()}")
    stored_size = (images.shape[1], images.shape[2])
    if None in stored_size or stored_size[0] != stored_size[1]:
        raise ValueError(
            f"images need a static square size [B, S, S, C], received shape "
            f"{tuple(images.shape)}"
        )
    crop_size = crop_size or stored_size[0]
    pad = (stored_size[0] - crop_size) / 2
    if pad < 0 or pad != int(pad):
        raise ValueError(
            f"crop_size={crop_size} must not exceed the images' side {stored_size[0]} and "
            "leave the same whole number of context pixels on each side"
        )
    in_h, in_w = size_pair(input_size)
    batch = ops.shape(images)[0]
    keypoints = ops.cast(keypoints, "float32")

    if not training:
        matrices = resize_matrices(crop_size, (in_h, in_w), batch)
        return {
            "images": warp_images(images, shift_source(matrices, pad), (in_h, in_w), sampler),
            "keypoints": apply_affine(keypoints, matrices),
            "visibility": visibility,
            "matrices": matrices,
            "flipped": ops.zeros((batch,), dtype="bool"),
        }

    if seed is None:
        raise ValueError("augment_batch(training=True) needs a seed: a SeedGenerator or an int")
    config = config or AugmentConfig()
    params = sample_parameters(batch, config, (in_h, in_w), seed)
    for name, value in (fixed or {}).items():
        if name not in params:
            raise ValueError(f"fixed: unknown parameter {name!r}; known: {sorted(params)}")
        drawn = params[name]
        params[name] = ops.cast(ops.broadcast_to(value, ops.shape(drawn)), drawn.dtype)
    matrices = compose_matrices(
        params["angles"], params["scales"], params["translations"], params["flips"],
        crop_size=crop_size, input_size=(in_h, in_w),
    )
    warped = warp_images(images, shift_source(matrices, pad), (in_h, in_w), sampler)
    if config.photometric:
        warped = photometric_jitter(
            warped, params["brightness"], params["contrast"], params["saturation"],
            params["channel_scales"] if config.channel_scale > 0 else None,
        )
    moved = apply_affine(keypoints, matrices)
    flips = params["flips"]
    perm_t = ops.convert_to_tensor(perm)
    moved = ops.where(flips[:, None, None], ops.take(moved, perm_t, axis=1), moved)
    visibility = ops.where(flips[:, None], ops.take(visibility, perm_t, axis=1), visibility)
    return {
        "images": warped,
        "keypoints": moved,
        "visibility": visibility,
        "matrices": matrices,
        "flipped": flips,
    }
