"""One codec per output kind: keypoints <-> what a network is trained to output.

A codec (the idea MMPose calls a codec) holds everything that depends on a model's output
kind, so the trainer, the callbacks, evaluation and the serving graph call it and never branch
on ``OutputSpec.kind`` themselves:

- ``encode(keypoints_input, visibility)`` -> ``(targets, weights)`` for the loss;
- ``decode(output)`` -> ``(keypoints [B, K, 2] in input pixels, scores [B, K])``;
- ``flip(output, flip_permutation)``: the output of a mirrored image mapped back onto the
  unmirrored one (mirror, then swap left and right keypoints); applying it twice is the
  identity;
- ``heatmap_cells(output)``: the centres of the heatmaps' argmax cells (the poster's accuracy),
  ``None`` without heatmaps; ``has_heatmaps`` says which.

:func:`codec_for` picks the codec once from a model's ``OutputSpec``, and
:func:`predict_keypoints` is the one "final output -> optional flip test -> decode" step that
evaluation and the exported serving graph share.

``keras.ops`` only, so the codecs trace into the training step and into a SavedModel of stock
TensorFlow ops. Coordinates follow ``keras_pose.keypoints``.

Example:

>>> import numpy as np
>>> from keras_pose.outputs import HEATMAPS, OutputSpec
>>> codec = codec_for(OutputSpec(HEATMAPS, 4, "mse", ("stack_1",)), 256)
>>> heatmaps, weights = codec.encode(np.array([[[98.0, 62.0]]], np.float32), np.array([[2]]))
>>> points, scores = codec.decode(heatmaps)
>>> [float(v) for v in points[0, 0]]
[98.0, 62.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from keras import ops

from keras_pose.decode import REFINEMENTS, decode_heatmaps, spatial_softmax
from keras_pose.geometry import size_pair
from keras_pose.outputs import COORDINATES, HEATMAPS, SOFTMAX_CROSS_ENTROPY, OutputSpec
from keras_pose.targets import (
    coordinate_targets,
    coordinates_to_input,
    keypoint_weights,
    render_heatmaps,
)


def final_output(outputs) -> Any:
    """The final prediction of a model that returns its intermediate outputs as a list."""
    if isinstance(outputs, (list, tuple)):
        return outputs[-1]
    if isinstance(outputs, dict):
        return list(outputs.values())[-1]
    return outputs


def _permutation(flip_permutation) -> Any:
    return ops.convert_to_tensor(np.asarray(flip_permutation, np.int32))


class HeatmapCodec:
    """Gaussian heatmaps ``[B, h, w, K]`` with ``stride`` input pixels per heatmap pixel.

    Args:
        input_size: network input size, an int or (height, width); the stride must divide it.
        stride: input pixels per heatmap pixel.
        logits: the outputs are logits of a spatial softmax (the ``softmax_cross_entropy``
            loss): decoding applies the softmax first, so scores are peak probabilities.
        sigma: Gaussian sigma in heatmap pixels; ``None`` means heatmap width / 64.
        refine: sub-pixel refinement of :func:`keras_pose.decode.decode_heatmaps`.
    """

    kind = HEATMAPS
    has_heatmaps = True

    def __init__(self, input_size, stride: int | None, *, logits: bool = False,
                 sigma: float | None = None, refine: str = "quarter"):
        height, width = size_pair(input_size)
        if not stride or stride <= 0 or height % stride or width % stride:
            raise ValueError(
                f"Heatmap stride {stride!r} must be positive and divide the input size "
                f"{(height, width)}"
            )
        if refine not in REFINEMENTS:
            raise ValueError(f"refine must be one of {REFINEMENTS}, received refine={refine!r}")
        self.input_size = (height, width)
        self.stride = int(stride)
        self.heatmap_size = (height // self.stride, width // self.stride)
        self.logits = bool(logits)
        self.sigma = sigma or None
        self.refine = refine

    def num_keypoints(self, output_shape) -> int:
        return int(output_shape[-1])

    def encode(self, keypoints_input, visibility) -> tuple[Any, Any]:
        """Keypoints ``[B, K, 2]`` in input pixels -> (heatmaps ``[B, h, w, K]``, weights)."""
        weights = keypoint_weights(keypoints_input, visibility, self.input_size)
        heatmaps = render_heatmaps(keypoints_input, weights, self.input_size, self.heatmap_size,
                                   self.sigma)
        return heatmaps, weights

    def decode(self, output) -> tuple[Any, Any]:
        """Heatmaps (or the list of outputs) -> (keypoints in input pixels, scores).

        Scores are the peak values of MSE-trained heatmaps, and for logits the probability at
        the peak of the softmax over the map, in [0, 1].
        """
        heatmaps = final_output(output)
        if tuple(heatmaps.shape[1:3]) != self.heatmap_size:
            raise ValueError(
                f"Heatmaps of size {tuple(heatmaps.shape[1:3])} with stride {self.stride} do "
                f"not match the input size {self.input_size}"
            )
        if self.logits:
            heatmaps = spatial_softmax(heatmaps)
        heatmap_points, scores = decode_heatmaps(heatmaps, self.refine)
        return heatmap_points * float(self.stride), scores

    def flip(self, output, flip_permutation) -> Any:
        """Mirror heatmaps left-right and swap left/right channels.

        Mirroring the array maps heatmap coordinate ``x`` to ``w - x``, the same map the image
        mirror applies at input scale (``X -> W - X`` with ``X = stride * x``), so no
        half-pixel shift is needed.
        """
        return ops.take(ops.flip(output, axis=2), _permutation(flip_permutation), axis=3)

    def heatmap_cells(self, output) -> Any:
        """Centres of the argmax cells ``[B, K, 2]``, in heatmap coordinates."""
        cells, _ = decode_heatmaps(final_output(output), refine="none")
        return cells


class CoordinateCodec:
    """Normalized coordinates ``[B, K, 2]``: ``x / input_width - 0.5`` and likewise y.

    Args:
        input_size: network input size, an int or (height, width).
    """

    kind = COORDINATES
    has_heatmaps = False

    def __init__(self, input_size):
        self.input_size = size_pair(input_size)

    def num_keypoints(self, output_shape) -> int:
        return int(output_shape[-2])

    def encode(self, keypoints_input, visibility) -> tuple[Any, Any]:
        """Keypoints ``[B, K, 2]`` in input pixels -> (normalized coordinates, weights)."""
        weights = keypoint_weights(keypoints_input, visibility, self.input_size)
        return coordinate_targets(keypoints_input, self.input_size), weights

    def decode(self, output) -> tuple[Any, Any]:
        """Normalized coordinates -> (keypoints in input pixels, scores of 1)."""
        points = coordinates_to_input(final_output(output), self.input_size)
        return points, ops.ones_like(points[..., 0])

    def flip(self, output, flip_permutation) -> Any:
        """Mirror normalized coordinates (``x -> -x``) and swap left/right keypoints."""
        mirrored = ops.cast(output, "float32") * ops.convert_to_tensor([-1.0, 1.0], "float32")
        return ops.take(mirrored, _permutation(flip_permutation), axis=1)

    def heatmap_cells(self, output) -> None:
        """No heatmaps: ``None``."""
        return None


Codec = HeatmapCodec | CoordinateCodec


def codec_for(output_spec: OutputSpec, input_size, *, sigma: float | None = None,
              refine: str = "quarter") -> Codec:
    """The codec of a model's outputs.

    Args:
        output_spec: the model's ``keras_pose.outputs.OutputSpec``.
        input_size: network input size, an int or (height, width).
        sigma: heatmap Gaussian sigma in heatmap pixels (``None``: heatmap width / 64).
        refine: heatmap sub-pixel refinement (``"quarter"``, ``"gaussian"`` or ``"none"``).
    """
    if output_spec.kind == HEATMAPS:
        return HeatmapCodec(input_size, output_spec.stride, sigma=sigma, refine=refine,
                            logits=output_spec.loss == SOFTMAX_CROSS_ENTROPY)
    if output_spec.kind == COORDINATES:
        return CoordinateCodec(input_size)
    raise ValueError(
        f"output_spec.kind must be {HEATMAPS!r} or {COORDINATES!r}, received {output_spec.kind!r}"
    )


def flip_images(images) -> Any:
    """Mirror images ``[B, H, W, C]`` left-right (continuous x -> W - x)."""
    return ops.flip(images, axis=2)


def flip_test(codec: Codec, model_fn: Callable[[Any], Any], images, flip_permutation) -> Any:
    """Average the output on the images with the flipped-back output on their mirror images.

    Args:
        codec: the model's codec (it flips the mirrored output back).
        model_fn: images ``[N, H, W, 3]`` -> the model's output (or list of outputs).
        images: ``[B, H, W, 3]``.
        flip_permutation: ``[K]``, ``flipped[k] = original[perm[k]]``.

    Returns:
        float32 final output (``[B, h, w, K]`` heatmaps or ``[B, K, 2]`` coordinates). The
        model runs once on a batch of ``2B`` images.
    """
    batch = ops.shape(images)[0]
    both = ops.concatenate([images, flip_images(images)], axis=0)
    output = ops.cast(final_output(model_fn(both)), "float32")
    plain, mirrored = output[:batch], output[batch:]
    return 0.5 * (plain + codec.flip(mirrored, flip_permutation))


def predict_keypoints(codec: Codec, model_fn: Callable[[Any], Any], images,
                      flip_permutation=None) -> dict[str, Any]:
    """Final output -> optional flip test -> decode: network input to keypoints.

    Args:
        codec: the model's codec.
        model_fn: images -> the model's output (or list of outputs).
        images: network input ``[B, H, W, 3]``.
        flip_permutation: ``[K]`` to run the flip test; ``None`` runs the images alone.

    Returns:
        dict with ``keypoints`` ``[B, K, 2]`` in input pixels, ``scores`` ``[B, K]`` and
        ``output``, the (flip-tested) final output they were decoded from.
    """
    if flip_permutation is None:
        output = final_output(model_fn(images))
    else:
        output = flip_test(codec, model_fn, images, flip_permutation)
    points, scores = codec.decode(output)
    return {"keypoints": points, "scores": scores, "output": output}
