"""Convert COCO, LSP, LSPET or MPII data into TFRecord shards.

``keras_pose/cli/convert.py``; installed as ``keras-pose-convert``.
"""

from keras_pose.cli import convert_main

# Guarded: worker processes started with "spawn" re-import the main script.
if __name__ == "__main__":
    raise SystemExit(convert_main())
