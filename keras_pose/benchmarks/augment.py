"""Augmentation + targets per batch: in-step keras.ops (jit on/off) vs per-sample cv2 + numpy.

Measures, in one run, the work the training step does before the network: from stored uint8
crops (default 320 px, 17 keypoints) draw one affine transform per sample, warp to the input
size (default 256), move and flip the keypoints, compute weights and render Gaussian heatmaps
(default 64x64). keras-pose does it on the whole batch with ``keras_pose.augment`` and
``keras_pose.targets`` in a ``tf.function`` (XLA on and off; the gather sampler and
``keras.ops.image.affine_transform``); the baseline does the same per sample with
``cv2.warpAffine`` and numpy, as a classic data loader would. Prints medians and the ratio.

Example:
    python tools/benchmark.py augment --batch 32
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np

from keras_pose.benchmarks import common
from keras_pose.keypoints import PIXEL_CENTER_OFFSET, coord_to_index
from keras_pose.resources import peak_rss_mib


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=32, help="samples per batch")
    parser.add_argument("--crop-size", type=int, default=320, help="stored crop side")
    parser.add_argument("--input-size", type=int, default=256, help="network input side")
    parser.add_argument("--heatmap-size", type=int, default=64, help="heatmap side")
    parser.add_argument("--keypoints", type=int, default=17, help="keypoints per sample")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls (and compile)")
    parser.add_argument("--no-affine-transform", action="store_true",
                        help="skip the keras.ops.image.affine_transform variant")


def all_argv(args: argparse.Namespace) -> list[str]:
    """Arguments of this benchmark under ``benchmark.py all``."""
    return ["--batch", "32"]


def _inputs(args, seed=0):
    rng = np.random.default_rng(seed)
    # Smooth-ish content (a real crop compresses like this; random noise would do too).
    crops = rng.integers(0, 256, (args.batch, args.crop_size, args.crop_size, 3), dtype=np.uint8)
    margin = args.crop_size * 0.15
    keypoints = rng.uniform(margin, args.crop_size - margin,
                            (args.batch, args.keypoints, 2)).astype(np.float32)
    visibility = rng.integers(0, 3, (args.batch, args.keypoints)).astype(np.int32)
    return crops, keypoints, visibility


def _flip_permutation(num_keypoints):
    from keras_pose.keypoints import COCO17

    if num_keypoints == COCO17.num_keypoints:
        return COCO17.flip_permutation
    return np.arange(num_keypoints)


def _keras_pose_step(args, sampler: str, jit: bool):
    """A compiled function doing augmentation + targets for one batch."""
    import keras
    import tensorflow as tf

    from keras_pose import augment, targets

    config = augment.AugmentConfig(rotation_prob=1.0)
    perm = _flip_permutation(args.keypoints)
    generator = keras.random.SeedGenerator(0)

    @tf.function(jit_compile=jit)
    def step(images, keypoints, visibility):
        out = augment.augment_batch(images, keypoints, visibility, input_size=args.input_size,
                                    config=config, flip_permutation=perm, seed=generator,
                                    training=True, sampler=sampler)
        weights = targets.keypoint_weights(out["keypoints"], out["visibility"], args.input_size)
        heatmaps = targets.render_heatmaps(out["keypoints"], weights, args.input_size,
                                           args.heatmap_size)
        return out["images"], heatmaps, weights, out["matrices"]

    return step


def _numpy_matrix(rng, config, crop, size):
    """One crop -> input matrix with the same distributions as ``augment.sample_parameters``."""
    angle = math.radians(rng.uniform(-config.rotation, config.rotation))
    angle *= float(rng.uniform() < config.rotation_prob)
    zoom = 1.0 + rng.uniform(-config.scale, config.scale)
    shift = rng.uniform(-config.translation, config.translation, 2) * size
    flip = rng.uniform() < config.flip_prob
    cos, sin = math.cos(angle) * zoom, math.sin(angle) * zoom
    mirror = -1.0 if flip else 1.0
    linear = np.array([[cos * mirror, -sin], [sin * mirror, cos]])
    centre = np.array([size / 2.0, size / 2.0])
    matrix = np.eye(3)
    matrix[:2, :2] = linear * (size / crop)
    matrix[:2, 2] = centre + shift - linear @ centre
    return matrix, flip


def _cv2_index_matrix(matrix):
    """Continuous-coordinate matrix -> cv2's array-index matrix (pixel centres at +0.5)."""
    offset = PIXEL_CENTER_OFFSET
    to_coord = np.array([[1.0, 0, offset], [0, 1.0, offset], [0, 0, 1.0]])
    to_index = np.array([[1.0, 0, -offset], [0, 1.0, -offset], [0, 0, 1.0]])
    return (to_index @ matrix @ to_coord)[:2]


def _baseline_batch(args, crops, keypoints, visibility, rng, config, perm):
    """Per sample: cv2.warpAffine + numpy keypoints, weights and Gaussian heatmaps."""
    import cv2

    size, hm = args.input_size, args.heatmap_size
    stride = size / hm
    sigma = hm / 64.0
    grid = np.arange(hm, dtype=np.float32)
    images, heatmaps, weights = [], [], []
    for crop, points, vis in zip(crops, keypoints, visibility):
        matrix, flip = _numpy_matrix(rng, config, args.crop_size, size)
        image = cv2.warpAffine(crop, _cv2_index_matrix(matrix), (size, size),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=0)
        moved = points @ matrix[:2, :2].T.astype(np.float32) + matrix[:2, 2].astype(np.float32)
        if flip:
            moved, vis = moved[perm], vis[perm]
        inside = np.all((moved >= 0) & (moved < size), axis=-1) & (vis > 0)
        weight = inside.astype(np.float32)
        centre = coord_to_index(moved / stride)
        gx = np.exp(-((grid[None, :] - centre[:, 0:1]) ** 2) / (2 * sigma**2))  # [K, w]
        gy = np.exp(-((grid[None, :] - centre[:, 1:2]) ** 2) / (2 * sigma**2)) * weight[:, None]
        heatmaps.append(np.einsum("kh,kw->hwk", gy, gx).astype(np.float32))
        images.append(image.astype(np.float32))
        weights.append(weight)
    return np.stack(images), np.stack(heatmaps), np.stack(weights)


def _same_pixels_check(args, crops, matrices):
    """Max/mean |cv2 - gather| on the same matrices, inside the crop (a correctness witness)."""
    import cv2

    from keras_pose import augment

    gather = np.asarray(augment.warp_images(crops[:4], matrices[:4], args.input_size))
    diffs = []
    for i in range(min(4, len(crops))):
        reference = cv2.warpAffine(crops[i], _cv2_index_matrix(matrices[i]),
                                   (args.input_size, args.input_size), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        diffs.append(np.abs(gather[i] - reference.astype(np.float32))[4:-4, 4:-4])
    diffs = np.stack(diffs)
    return float(diffs.max()), float(diffs.mean())


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import cv2
    import tensorflow as tf

    from keras_pose import augment

    for name in ("batch", "crop_size", "input_size", "heatmap_size", "keypoints", "repeats"):
        if getattr(args, name) < 1:
            raise SystemExit(f"benchmark augment: --{name.replace('_', '-')} must be >= 1")
    if args.input_size % args.heatmap_size:
        raise SystemExit("benchmark augment: --heatmap-size must divide --input-size")
    print(f"augment benchmark on {common.machine_description()}; cv2 {cv2.__version__} "
          f"({cv2.getNumThreads()} threads)")
    print(f"batch {args.batch}, crops {args.crop_size}px -> input {args.input_size}px, "
          f"{args.keypoints} keypoints, heatmaps {args.heatmap_size}x{args.heatmap_size}; "
          f"median of {args.repeats} calls after {args.warmup} warm-up calls")
    crops, keypoints, visibility = _inputs(args)
    t_crops, t_kp, t_vis = (tf.constant(x) for x in (crops, keypoints, visibility))

    variants = [("keras-pose in-step, gather sampler, jit_compile=True", "gather", True),
                ("keras-pose in-step, gather sampler, jit_compile=False", "gather", False)]
    if not args.no_affine_transform:
        variants.append(("keras-pose in-step, affine_transform, jit_compile=False",
                         "affine_transform", False))
    rows, results = [], {}
    matrices = None
    for label, sampler, jit in variants:
        step = _keras_pose_step(args, sampler, jit)

        def call(step=step):
            out = step(t_crops, t_kp, t_vis)
            return [t.numpy() for t in out]

        times = common.time_call(call, repeats=args.repeats, warmup=args.warmup)
        if matrices is None:
            matrices = call()[3]
        results[label] = common.median(times)
        rows.append([label, f"{results[label] * 1e3:.1f}", common.spread(times),
                     f"{args.batch / results[label]:.0f}"])

    config = augment.AugmentConfig(rotation_prob=1.0)
    perm = _flip_permutation(args.keypoints)
    rng = np.random.default_rng(0)
    baseline_label = "per-sample cv2.warpAffine + numpy heatmaps (1 process)"
    times = common.time_call(
        lambda: _baseline_batch(args, crops, keypoints, visibility, rng, config, perm),
        repeats=args.repeats, warmup=args.warmup)
    baseline = common.median(times)
    rows.append([baseline_label, f"{baseline * 1e3:.1f}", common.spread(times),
                 f"{args.batch / baseline:.0f}"])
    common.print_table("Augmentation + targets per batch",
                       ["variant", "median ms/batch", "IQR", "samples/s"], rows)
    best_label = min(results, key=results.get)
    print(f"\nratio baseline / fastest keras-pose variant ({best_label}): "
          f"{baseline / results[best_label]:.2f}x")
    for label, seconds in results.items():
        print(f"  baseline / {label}: {baseline / seconds:.2f}x")
    max_diff, mean_diff = _same_pixels_check(args, crops, matrices)
    print(f"same matrices, cv2.warpAffine vs gather sampler (interior, 0-255): "
          f"max |diff| {max_diff:.2f}, mean {mean_diff:.3f}")
    print(f"peak RSS {peak_rss_mib():.0f} MiB")
    return 0
