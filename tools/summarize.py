"""Print the networks' sizes.

``keras_pose/cli/summarize.py``; installed as ``keras-pose-summarize``.
"""

from keras_pose.cli import summarize_main

# Guarded: worker processes started with "spawn" re-import the main script.
if __name__ == "__main__":
    raise SystemExit(summarize_main())
