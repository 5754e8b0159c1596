"""Draw predicted skeletons on images and videos.

``keras_pose/cli/predict.py``; installed as ``keras-pose-predict``.
"""

from keras_pose.cli import predict_main

# Guarded: worker processes started with "spawn" re-import the main script.
if __name__ == "__main__":
    raise SystemExit(predict_main())
