"""Draw a grid of augmented training samples: image, skeleton and summed target heatmap.

Each sample is shown three times side by side: the stored image with its keypoints as recorded
(the person crop boxed in white inside the context the records keep around it, if any);
the same record after the training step's augmentation (one affine warp) with the transformed
keypoints drawn as a skeleton (left limbs red, right limbs blue, limbs across yellow); and the
augmented image under its summed target heatmaps. Keypoints whose weight is 0 (unlabeled, or
pushed out of the frame) are not drawn and have no heatmap. If image and keypoints moved
together, every joint sits on its body part and every heatmap blob on its joint.

Example:
    python tools/show_batch.py --records 'data/coco/train-*.tfrecord' --output grid.png \\
        --input-size 256 --heatmap-size 64 --seed 0
    # every sample zoomed out to 0.7, unrotated: the surroundings the records keep
    python tools/show_batch.py --records 'data/coco/train-*.tfrecord' --output zoom.png \\
        --zoom 0.7 --angle 0
"""

from __future__ import annotations

import argparse
import math
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="show_batch.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--records", required=True, metavar="GLOB",
                        help="TFRecord shards, e.g. 'data/coco/train-*.tfrecord' (quote it)")
    parser.add_argument("--output", required=True, metavar="FILE.png", help="PNG to write")
    parser.add_argument("--input-size", type=int, default=256, help="network input side")
    parser.add_argument("--heatmap-size", type=int, default=64, help="heatmap side")
    parser.add_argument("--sigma", type=float, default=None,
                        help="heatmap Gaussian sigma in heatmap px (default heatmap_size / 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle and the draws")
    parser.add_argument("--batch", type=int, default=8, help="samples to draw")
    parser.add_argument("--columns", type=int, default=2, help="samples per grid row")
    parser.add_argument("--keypoint-set", default=None,
                        help="coco17 or mpii16 (default: the records' manifest, else coco17)")
    parser.add_argument("--sampler", default="gather", choices=("gather", "affine_transform"),
                        help="image sampler of the warp")
    parser.add_argument("--no-augment", action="store_true",
                        help="show the deterministic evaluation resize instead")
    parser.add_argument("--no-context", action="store_true",
                        help="read the person crops alone, without the context the records "
                             "keep around them (how records without context train)")
    parser.add_argument("--zoom", type=float, default=None,
                        help="the same zoom for every sample instead of a random one "
                             "(0.7 = zoomed out)")
    parser.add_argument("--angle", type=float, default=None,
                        help="the same rotation in degrees for every sample instead of a "
                             "random one")
    for name, default, text in (
        ("rotation", 40.0, "max rotation in degrees"),
        ("rotation-prob", 0.4, "probability of rotating"),
        ("scale", 0.3, "max relative zoom"),
        ("translation", 0.02, "max shift as a fraction of the input"),
        ("flip-prob", 0.5, "probability of a horizontal flip"),
        ("brightness", 0.0, "photometric jitter (0 = off)"),
        ("contrast", 0.0, "photometric jitter (0 = off)"),
        ("saturation", 0.0, "photometric jitter (0 = off)"),
    ):
        parser.add_argument(f"--{name}", type=float, default=default, help=text)
    return parser


def _keypoint_set(args):
    from keras_pose.data.dataset import read_manifest
    from keras_pose.keypoints import get_keypoint_set

    try:
        manifest = read_manifest(args.records)
    except (FileNotFoundError, ValueError):
        manifest = None
    recorded = manifest.keypoint_set if manifest else None
    if args.keypoint_set and recorded and args.keypoint_set != recorded:
        raise ValueError(f"--keypoint-set {args.keypoint_set} does not match the records' "
                         f"keypoint set {recorded!r} ({manifest.path})")
    return get_keypoint_set(args.keypoint_set or recorded or "coco17")


def render_grid(args) -> tuple:
    """Read one batch, augment it as the training step does, and draw the grid."""
    import cv2
    import keras
    import numpy as np

    from keras_pose import augment, targets, visualize
    from keras_pose.data.dataset import make_dataset

    keypoint_set = _keypoint_set(args)
    config = augment.AugmentConfig(
        rotation=args.rotation, rotation_prob=args.rotation_prob, scale=args.scale,
        translation=args.translation, flip_prob=args.flip_prob, brightness=args.brightness,
        contrast=args.contrast, saturation=args.saturation,
    )
    dataset = make_dataset(args.records, batch_size=args.batch,
                           num_keypoints=keypoint_set.num_keypoints, training=True,
                           seed=args.seed, deterministic=True, shuffle_buffer=256,
                           drop_remainder=False, context=not args.no_context)
    batch = next(iter(dataset))
    # The reader gives every record of a batch the same side, so the first one's pad holds.
    pad = 0 if args.no_context else int(batch["context_pad"][0])
    crop_size = int(batch["image"].shape[1]) - 2 * pad
    fixed = {}
    if args.zoom is not None:
        fixed["scales"] = args.zoom
    if args.angle is not None:
        fixed["angles"] = math.radians(args.angle)
    out = augment.augment_batch(
        batch["image"], batch["keypoints"], batch["visibility"], input_size=args.input_size,
        config=config, flip_permutation=keypoint_set.flip_permutation,
        seed=keras.random.SeedGenerator(args.seed), training=not args.no_augment,
        sampler=args.sampler, crop_size=crop_size, fixed=fixed,
    )
    weights = targets.keypoint_weights(out["keypoints"], out["visibility"], args.input_size)
    heatmaps = np.asarray(targets.render_heatmaps(
        out["keypoints"], weights, args.input_size, args.heatmap_size, args.sigma))
    crops = np.asarray(batch["image"])
    size = args.input_size
    tiles = []
    for i in range(len(crops)):
        # The stored image, resized to the tile size for display only.
        crop = crops[i]
        scale = size / crop.shape[0]
        shown = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        if pad:
            corner = (int(round(pad * scale)), int(round((pad + crop_size) * scale)) - 1)
            shown = cv2.rectangle(np.ascontiguousarray(shown), (corner[0], corner[0]),
                                  (corner[1], corner[1]), (255, 255, 255), 1)
        tiles.append(visualize.label(visualize.draw_skeleton(
            shown, (np.asarray(batch["keypoints"][i]) + pad) * scale,
            np.asarray(batch["visibility"][i]), keypoint_set),
            "stored (crop boxed)" if pad else "stored crop"))
        augmented = np.clip(np.asarray(out["images"][i]), 0, 255).astype(np.uint8)
        tiles.append(visualize.label(visualize.draw_skeleton(
            augmented, np.asarray(out["keypoints"][i]), np.asarray(weights[i]), keypoint_set),
            "resized (eval)" if args.no_augment else "augmented"))
        tiles.append(visualize.label(
            visualize.overlay_heatmaps(augmented, heatmaps[i], alpha=0.7), "target heatmaps"))
    grid = visualize.image_grid(tiles, columns=3 * args.columns)
    return grid, len(crops)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("input_size", "heatmap_size", "batch", "columns"):
        if getattr(args, name) < 1:
            print(f"show_batch.py: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    if args.input_size % args.heatmap_size:
        print(f"show_batch.py: --heatmap-size {args.heatmap_size} must divide --input-size "
              f"{args.input_size}", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        grid, count = render_grid(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"show_batch.py: {error}", file=sys.stderr)
        return 1
    except tf.errors.OpError as error:
        print(f"show_batch.py: could not read records {args.records!r}: {error.message}",
              file=sys.stderr)
        return 1
    from keras_pose.visualize import write_png

    write_png(args.output, grid)
    print(f"Wrote {args.output}: {count} samples (stored crop | augmented | targets), "
          f"{grid.shape[1]}x{grid.shape[0]} px")
    return 0

