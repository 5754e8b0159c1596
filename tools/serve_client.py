"""Ask a TF Serving model server for keypoints.

``keras_pose/cli/serve_client.py``; installed as ``keras-pose-serve-client``.
"""

from keras_pose.cli import serve_client_main

# Guarded: worker processes started with "spawn" re-import the main script.
if __name__ == "__main__":
    raise SystemExit(serve_client_main())
