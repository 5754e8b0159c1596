"""Draw a grid of augmented training samples.

``keras_pose/cli/show_batch.py``; installed as ``keras-pose-show-batch``.
"""

from keras_pose.cli import show_batch_main

# Guarded: worker processes started with "spawn" re-import the main script.
if __name__ == "__main__":
    raise SystemExit(show_batch_main())
