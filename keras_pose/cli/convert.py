"""``keras-pose-convert`` / ``tools/convert.py`` (and ``keras-pose-convert-coco`` /
``tools/convert_coco.py``, its COCO-only form).

Convert a pose dataset (COCO, LSP, LSPET or MPII) and its images into TFRecord shards.

Writes OUT/NAME-00000-of-0000N.tfrecord ... (one record per person with at least
--min-keypoints labeled keypoints: a square JPEG crop around the person box with a margin,
keypoints in crop and image pixels, crop box, box, area, ids, file name, image size and the
PCKh head size), OUT/NAME.manifest.json (counts, skip reasons, keypoint set, crop size, source
format, file, SHA-256 and image range, what the head sizes are) and, for LSP, LSPET and MPII,
OUT/NAME.annotations.json (the converted persons as COCO ground truth, COCO's pixel indices).

Formats and their inputs:
  coco        --annotations person_keypoints_*.json --images DIR
  lsp, lspet  --joints joints.mat [--images DIR, default: images/ beside joints.mat]
              [--range A-B]; the layout (LSP (3, 14, N), occlusion flags; LSPET (14, 3, N),
              0 = not annotated) is detected from the array; --layout forces one
  mpii        --annotations FILE.json (HRNet/MMPose layout) --images DIR [--range A-B]
              [--head-boxes gt_valid.mat, for the PCKh head sizes]
--range selects images (LSP, LSPET) or person entries (MPII), 1-based and inclusive.

Shards appear under their final names only when all are complete, and the manifest last; an
interrupted run leaves neither. Bad images or annotations are reported and skipped (or stop the
run with --strict).

Exit status: 0 on success, 2 for bad arguments, a malformed annotation file or (with --strict)
bad input, 1 for an I/O error, 130 when interrupted (Ctrl-C or SIGTERM).

Examples:
    python tools/convert.py --format lspet --joints lspet/joints.mat --range 1-9000 \\
        --output data/lspet/records-256 --split train
    python tools/convert.py --format mpii --annotations mpii/annot/valid.json \\
        --images mpii/images --head-boxes mpii/annot/gt_valid.mat --output data/mpii --split val
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from keras_pose.data.manifest import Manifest

COCO_USAGE = """Convert COCO keypoint annotations and images into TFRecord shards of person crops.

Writes OUT/NAME-00000-of-0000N.tfrecord ... (one record per person with iscrowd=0 and at least
--min-keypoints labeled keypoints: a square JPEG crop around the bbox with a margin, keypoints in
crop and image pixels, crop box, bbox, area, ids, file name and image size) and
OUT/NAME.manifest.json (counts, skip reasons, keypoint set, crop size, source file and SHA-256).

Shards appear under their final names only when all are complete, and the manifest last; an
interrupted run leaves neither. Bad images or annotations are reported and skipped (or stop the
run with --strict).

Exit status: 0 on success, 2 for bad arguments, a malformed annotation file or (with --strict)
bad input, 1 for an I/O error, 130 when interrupted (Ctrl-C or SIGTERM).

The same as ``tools/convert.py --format coco`` (LSP, LSPET and MPII are converted there);
installed as the console script ``keras-pose-convert-coco``.

Example:
    python tools/convert_coco.py --annotations annotations/person_keypoints_val2017.json \\
        --images val2017 --output data/coco --split val --shards 8
"""

FORMATS = ("coco", "lsp", "lspet", "mpii")
# Which format takes which input option (others are refused, so a typo does not pass unseen).
FORMAT_OPTIONS = {
    "annotations": ("coco", "mpii"),
    "joints": ("lsp", "lspet"),
    "range": ("lsp", "lspet", "mpii"),
    "head_boxes": ("mpii",),
    "layout": ("lsp", "lspet"),
}


def _add_source_options(parser: argparse.ArgumentParser, coco_only: bool) -> None:
    if coco_only:
        parser.add_argument("--annotations", required=True, metavar="FILE.json",
                            help="COCO keypoint annotation file (person_keypoints_*.json)")
        parser.add_argument("--images", required=True, metavar="DIR",
                            help="directory holding the images named by the annotations' "
                                 "file_name")
        return
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="dataset format: coco, lsp, lspet or mpii")
    parser.add_argument("--annotations", metavar="FILE.json",
                        help="coco: person_keypoints_*.json; mpii: the JSON annotation file")
    parser.add_argument("--joints", metavar="FILE.mat", help="lsp, lspet: joints.mat")
    parser.add_argument("--images", metavar="DIR",
                        help="directory holding the images (lsp, lspet: default images/ beside "
                             "joints.mat)")
    parser.add_argument("--range", metavar="A-B",
                        help="lsp, lspet: image numbers; mpii: JSON entries; 1-based, "
                             "inclusive (default: all)")
    parser.add_argument("--head-boxes", metavar="FILE.mat",
                        help="mpii: head boxes (headboxes_src, in the JSON's order) for the "
                             "PCKh head sizes (default: upper neck to head top, a stand-in)")
    parser.add_argument("--layout", choices=("auto", "lsp", "lspet"), default="auto",
                        help="lsp, lspet: read joints.mat with this release's visibility flag "
                             "sense (default: auto, from the array shape)")


def build_parser(prog: str = "convert.py", coco_only: bool = False,
                 description: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``coco_only`` is the COCO tool's (no --format, no other inputs)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description or __doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_source_options(parser, coco_only)
    parser.add_argument("--output", required=True, metavar="OUT",
                        help="output directory (created if needed)")
    parser.add_argument("--split", required=True, metavar="NAME",
                        help="split name: prefix of the shards and the manifest (train, val)")
    parser.add_argument("--shards", type=int, default=None, metavar="N",
                        help="number of shards (default: one per ~2048 persons)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="worker processes (default: CPU count, in-process for small sets; "
                             "0 or 1: in-process)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first bad image or annotation instead of skipping it")
    parser.add_argument("--crop-size", type=int, default=256, metavar="PX",
                        help="side of the stored square crops in pixels (default: 256)")
    parser.add_argument("--margin", type=float, default=1.25,
                        help="crop side = MARGIN * max(box w, h), centred on the person box "
                             "(default: 1.25, room for rotation and scaling)")
    parser.add_argument("--context", type=float, default=1.0,
                        help="stored side / crop side: keep this much of the surrounding image "
                             "around each crop for zoom-out and rotation augmentation (default: "
                             "1, the crop alone; the shipped COCO pipelines use 2.1)")
    parser.add_argument("--min-keypoints", type=int, default=1, metavar="K",
                        help="fewest labeled keypoints a person needs (default: 1)")
    parser.add_argument("--jpeg-quality", type=int, default=95, metavar="Q",
                        help="JPEG quality of the stored crops (default: 95)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the image order shuffle across shards (default: 0)")
    parser.add_argument("--no-shuffle", action="store_true",
                        help="keep image-id order instead of shuffling images across shards")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing split of the same name in OUT")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _check_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse inputs the format does not take and require those it needs (exit 2)."""
    for option, formats in FORMAT_OPTIONS.items():
        value = getattr(args, option)
        if value is not None and value != "auto" and args.format not in formats:
            flag = "--" + option.replace("_", "-")
            parser.error(f"{flag} is for --format {' or '.join(formats)}, not {args.format}")
    if args.format in ("coco", "mpii"):
        missing = [f for f in ("annotations", "images") if getattr(args, f) is None]
        if missing:
            parser.error(f"--format {args.format} needs "
                         + " and ".join("--" + m for m in missing))
    elif args.joints is None:
        parser.error(f"--format {args.format} needs --joints FILE.mat")


def _convert(args: argparse.Namespace) -> dict:
    from keras_pose.data import convert

    options = dict(
        shards=args.shards, workers=args.workers, strict=args.strict,
        crop_size=args.crop_size, margin=args.margin, context=args.context,
        min_keypoints=args.min_keypoints,
        jpeg_quality=args.jpeg_quality, seed=None if args.no_shuffle else args.seed,
        overwrite=args.overwrite, progress=not args.quiet,
    )
    if args.format == "coco":
        return convert.convert_coco(args.annotations, args.images, args.output, args.split,
                                    **options)
    if args.format == "mpii":
        return convert.convert_mpii(args.annotations, args.images, args.output, args.split,
                                    head_boxes=args.head_boxes, image_range=args.range,
                                    **options)
    images = args.images or os.path.join(os.path.dirname(os.path.abspath(args.joints)),
                                         "images")
    return convert.convert_lsp(args.joints, images, args.output, args.split,
                               image_range=args.range, layout=args.layout, **options)


def _summary(manifest: Manifest, args: argparse.Namespace) -> str:
    skipped = manifest.skipped
    reasons = ", ".join(f"{k}: {v}" for k, v in skipped["reasons"].items()) or "none"
    return (
        f"wrote {manifest.num_records} records from {manifest.num_images} images to "
        f"{manifest.num_shards} shard(s) in {args.output} "
        f"(keypoint set {manifest.keypoint_set}, crop {manifest.crop_size} px); "
        f"skipped {skipped['count']} ({reasons})"
    )


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None, prog: str = "convert.py", coco_only: bool = False,
         description: str | None = None) -> int:
    """Run the converter CLI; returns the exit status (see the module docstring).

    Args:
        argv: arguments (default: ``sys.argv[1:]``).
        prog: the program name in help and error messages.
        coco_only: the COCO tool's interface (``tools/convert_coco.py``).
        description: the help text (default: this module's docstring).

    Returns:
        0 on success, 2 for bad arguments or input, 1 for an I/O error, 130 if interrupted.
    """
    parser = build_parser(prog, coco_only, description)
    args = parser.parse_args(argv)
    if coco_only:
        args.format = "coco"
    else:
        _check_inputs(parser, args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # SIGTERM (kill, job schedulers) cleans up like Ctrl-C instead of leaving temporary files;
    # the caller's handler comes back afterwards (main also runs in-process, in tests).
    previous_handler = signal.signal(signal.SIGTERM, _interrupt)
    try:
        manifest = _convert(args)
    except ValueError as e:  # ConversionError and bad option values
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no shard or manifest was written", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    layout = manifest.source.get("layout")
    if layout and args.layout == "auto" and layout != args.format:
        print(f"note: {args.joints} has the {layout.upper()} layout "
              f"{tuple(manifest.source['array_shape'])}; it was read as {layout.upper()} "
              f"(--layout forces a release's flag sense)", file=sys.stderr)
    print(_summary(manifest, args))
    return 0


def convert_coco_main(argv: list[str] | None = None) -> int:
    """``tools/convert_coco.py``: ``tools/convert.py --format coco`` under its own name and help."""
    return main(argv, prog="convert_coco.py", coco_only=True, description=COCO_USAGE)
