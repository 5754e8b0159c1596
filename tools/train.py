"""Train a pose network from a pipeline file.

``keras_pose/cli/train.py``; installed as ``keras-pose-train``.
"""

from keras_pose.cli import train_main

# Guarded: worker processes started with "spawn" re-import the main script.
if __name__ == "__main__":
    raise SystemExit(train_main())
