"""Timing and reporting helpers shared by the benchmarks."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

from keras_pose.precision import bfloat16_support, read_cpu_flags


def time_call(fn: Callable[[], object], repeats: int = 10, warmup: int = 2) -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; return seconds per call.

    ``fn`` must block until its work is done (convert TF results with ``.numpy()``).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median(times: Sequence[float]) -> float:
    return float(statistics.median(times))


def spread(times: Sequence[float]) -> str:
    """Inter-quartile range as text, so a reader sees how noisy a median is."""
    q1, q3 = np.percentile(np.asarray(times), [25, 75])
    return f"{q1 * 1e3:.1f}-{q3 * 1e3:.1f} ms"


def cpu_model(path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (as ``lscpu`` prints it), or the architecture where unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> str:
    # TensorFlow only here: the PyTorch, ONNX Runtime and OpenVINO workers never load it.
    import tensorflow as tf

    bf16 = bfloat16_support(read_cpu_flags())
    gpus = tf.config.list_physical_devices("GPU")
    accel = f", {len(gpus)} GPU(s)" if gpus else ", no GPU"
    return (f"{cpu_model()} ({platform.machine()}, bfloat16: {bf16 or 'none'}), "
            f"{os.cpu_count()} CPU cores{accel}, TensorFlow {tf.__version__}")


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Print a plain-text table (also valid Markdown) and return it."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    out = [f"\n{title}", line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells[1:]]
    text = "\n".join(out)
    print(text, flush=True)
    return text


def print_notes(notes: Sequence[str], load_before: tuple[float, ...]) -> None:
    """Print a benchmark's closing notes, then the load average before and after its run."""
    after = os.getloadavg()
    notes = [*notes, f"load average before: {tuple(round(v, 2) for v in load_before)}, after: "
                     f"{tuple(round(v, 2) for v in after)}"]
    for note in notes:
        print("  " + note, flush=True)
