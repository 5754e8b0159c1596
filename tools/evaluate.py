"""Score a pose model or a COCO results file.

``keras_pose/cli/evaluate.py``; installed as ``keras-pose-evaluate``.
"""

from keras_pose.cli import evaluate_main

# Guarded: worker processes started with "spawn" re-import the main script.
if __name__ == "__main__":
    raise SystemExit(evaluate_main())
