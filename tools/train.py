"""Train a pose network from a pipeline file (see ``keras_pose.cli.TRAIN_USAGE``).

    python tools/train.py [--pipeline pipelines/NAME.toml] [--set key=value ...] [--output DIR]

With no arguments: the embedded default (synthetic data, the quickstart pipeline, export).
"""

import pathlib
import sys

# This checkout's keras_pose, not another one installed in the environment.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from keras_pose.cli import train_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(train_main())
