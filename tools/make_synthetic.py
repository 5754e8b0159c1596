"""Write a synthetic COCO-keypoint dataset.

``keras_pose/cli/make_synthetic.py``; installed as ``keras-pose-make-synthetic``.
"""

from keras_pose.cli import make_synthetic_main

# Guarded: worker processes started with "spawn" re-import the main script.
if __name__ == "__main__":
    raise SystemExit(make_synthetic_main())
