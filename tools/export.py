"""Export a trained model as a TF Serving SavedModel.

``keras_pose/cli/export.py``; installed as ``keras-pose-export``.
"""

from keras_pose.cli import export_main

# Guarded: worker processes started with "spawn" re-import the main script.
if __name__ == "__main__":
    raise SystemExit(export_main())
