"""Benchmark keras-pose against baselines.

``keras_pose/cli/benchmark.py``; installed as ``keras-pose-benchmark``.
"""

from keras_pose.cli import benchmark_main

# Guarded: worker processes started with "spawn" re-import the main script.
if __name__ == "__main__":
    raise SystemExit(benchmark_main())
