"""Convert COCO keypoint annotations and images into TFRecord shards of person crops.

Writes OUT/NAME-00000-of-0000N.tfrecord ... (one record per person with iscrowd=0 and at least
--min-keypoints labeled keypoints: a square JPEG crop around the bbox with a margin, keypoints in
crop and image pixels, crop box, bbox, area, ids, file name and image size) and
OUT/NAME.manifest.json (counts, skip reasons, keypoint set, crop size, source file and SHA-256).

Shards appear under their final names only when all are complete, and the manifest last; an
interrupted run leaves neither. Bad images or annotations are reported and skipped (or stop the
run with --strict).

Exit status: 0 on success, 2 for bad arguments, a malformed annotation file or (with --strict)
bad input, 1 for an I/O error, 130 when interrupted (Ctrl-C or SIGTERM).

The same as ``tools/convert.py --format coco`` (LSP, LSPET and MPII are converted there).

Example:
    python tools/convert_coco.py --annotations annotations/person_keypoints_val2017.json \\
        --images val2017 --output data/coco --split val --shards 8
"""

from __future__ import annotations

import os
import sys

# Keep this module's imports light: worker processes (spawn) re-import the main module.
_TOOLS = os.path.dirname(os.path.abspath(__file__))
if _TOOLS not in sys.path:  # run as a script, tools/ is already there
    sys.path.insert(0, _TOOLS)

import convert  # noqa: E402 - tools/convert.py, found through the line above


def main(argv: list[str] | None = None) -> int:
    """``tools/convert.py --format coco`` under this tool's name and help."""
    return convert.main(argv, prog="convert_coco.py", coco_only=True, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
