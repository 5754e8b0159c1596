"""Write a synthetic COCO-keypoint dataset: ``DIR/images/*.jpg`` and ``DIR/annotations.json``.

Examples::

    python tools/make_synthetic.py --output data/synthetic --num-images 2000 --seed 0
    python tools/make_synthetic.py --output data/synthetic --num-images 2000 --seed 0 \\
        --split-val 0.1          # DIR/train/ and DIR/val/, disjoint random streams

Sides are colour-coded (warm left, cool right): train on this data with horizontal flips off.
See ``keras_pose/data/synthetic.py``.
"""

from __future__ import annotations

import argparse
import time

from keras_pose.data import synthetic


def _image_size(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected SIDE or HEIGHTxWIDTH, received {text!r}")
    return parts[0], parts[1]


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), received {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="dataset folder")
    parser.add_argument("--num-images", type=int, required=True, help="images in all")
    parser.add_argument("--seed", type=int, default=0, help="random seed (>= 0)")
    parser.add_argument("--image-size", type=_image_size, default=(256, 256),
                        help="SIDE or HEIGHTxWIDTH (default 256)")
    parser.add_argument("--split-val", type=_fraction, default=None, metavar="FRACTION",
                        help="write DIR/train and DIR/val with this fraction of images in val")
    parser.add_argument("--workers", type=int, default=None, help="render processes (CPU count)")
    parser.add_argument("--side-cue", choices=synthetic.SIDE_CUES, default="colour",
                        help="colour: warm left / cool right (train without flips); facing: "
                             "same colours on both sides")
    parser.add_argument("--overwrite", action="store_true",
                        help="regenerate even if DIR already holds this exact dataset")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    try:
        config = synthetic.SyntheticConfig(image_size=args.image_size, side_cue=args.side_cue)
        common = dict(config=config, workers=args.workers, overwrite=args.overwrite,
                      progress=not args.no_progress)
        start = time.perf_counter()
        if args.split_val is None:
            paths = {"all": synthetic.make_synthetic_dataset(
                args.output, args.num_images, args.seed, **common)}
        else:
            num_val = max(1, round(args.num_images * args.split_val))
            num_train = args.num_images - num_val
            if num_train < 1:
                raise ValueError(f"--num-images {args.num_images} leaves no training images "
                                 f"with --split-val {args.split_val}")
            paths = synthetic.make_splits(args.output, num_train, num_val, args.seed, **common)
        elapsed = time.perf_counter() - start
    except ValueError as error:
        parser.error(str(error))
    for name, path in paths.items():
        print(f"{name}: {path}")
    print(f"{args.num_images} images in {elapsed:.1f} s ({args.num_images / elapsed:.0f} images/s;"
          " existing identical datasets are reused)")
    return 0

