"""Convert COCO keypoint data into TFRecord shards.

``keras_pose/cli/convert.py``; installed as ``keras-pose-convert-coco``.
"""

from keras_pose.cli import convert_coco_main

# Guarded: worker processes started with "spawn" re-import the main script.
if __name__ == "__main__":
    raise SystemExit(convert_coco_main())
