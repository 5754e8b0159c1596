"""Memory: peak resident memory of whole training runs through ``tools/train.py``.

Each run is the real pipeline in its own process (data reading, ``model.fit`` with the PCK
callback and TensorBoard images, evaluation, export), shortened to ``--steps`` training steps;
the figure is the training process's high-water mark, which the run writes to its
``summary.json`` (``peak_rss_mib``), beside the high-water mark of training alone, noted when
the first validation pass starts (``peak_rss_mib_training``): the difference is what
validation, the callbacks' predictions, the final evaluation and the export add:
- ``quickstart``: ``pipelines/quickstart.toml`` as the main job runs it (1-stack hourglass,
  128 px, batch 16);
- ``hourglass2``: the same pipeline with the 2-stack hourglass (256 features, depth 4) at
  256 px, batch 8.
The synthetic data (2,000 + 150 images) is made by the first run into ``--data-dir`` and reused
afterwards, as the main job caches it. The reader's memory is bounded by its pipeline settings
(a shuffle buffer of serialized records, a prefetch of a few batches), which the table lists.

Example: ``python tools/benchmark.py memory --steps 40``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from keras_pose.benchmarks import common

RUNS = {
    "quickstart": [],
    "hourglass2": ["model.input_size=256", "data.crop_size=256",
                   "model.options={num_stacks=2, num_features=256, depth=4}",
                   "train.batch_size=8"],
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``benchmark.py memory``."""
    parser.add_argument("--runs", default=",".join(RUNS),
                        help=f"comma-separated, from {list(RUNS)} (default: all)")
    parser.add_argument("--steps", type=int, default=40,
                        help="training steps per run, in two epochs (default 40)")
    parser.add_argument("--data-dir",
                        default=str(pathlib.Path(tempfile.gettempdir()) / "keras_pose_bench_data"),
                        help="where the synthetic data is made once and reused")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="one more pipeline override for every run (repeatable)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")


def all_argv(args: argparse.Namespace) -> list[str]:
    """``benchmark.py all``: both runs, 40 steps each."""
    return ["--steps", "40"]


def _overrides(name: str, args: argparse.Namespace, work: pathlib.Path) -> list[str]:
    epochs = 2
    return [
        f"train.epochs={epochs}", f"train.steps_per_epoch={max(1, args.steps // epochs)}",
        "callbacks.pck_every=1", "callbacks.images_every=1",
        f"data.synthetic.directory={json.dumps(args.data_dir)}",
        f"export.base={json.dumps(str(work / 'saved_models'))}",
        *RUNS[name], *args.overrides,
    ]


def _measure(name: str, args: argparse.Namespace) -> dict:
    from keras_pose.cli import DEFAULT_PIPELINE
    from keras_pose.pipeline import PipelineError, load_pipeline

    with tempfile.TemporaryDirectory(prefix=f"keras_pose_memory_{name}_") as temp:
        work = pathlib.Path(temp)
        overrides = _overrides(name, args, work)
        try:
            pipeline = load_pipeline(DEFAULT_PIPELINE, overrides)
        except PipelineError as error:
            return {"error": str(error)}
        command = [sys.executable, "-c",
                   "import sys; from keras_pose.cli import train_main; sys.exit(train_main())",
                   "--pipeline", str(DEFAULT_PIPELINE), "--output", str(work / "run")]
        for item in overrides:
            command += ["--set", item]
        made_data = not (pathlib.Path(args.data_dir) / "train").exists()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        started = time.perf_counter()
        try:
            result = subprocess.run(command, capture_output=True, text=True, env=env,
                                    timeout=args.timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {args.timeout:.0f} s"}
        wall = time.perf_counter() - started
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            return {"error": f"exit {result.returncode}: " + " | ".join(tail)}
        summary = json.loads((work / "run" / "summary.json").read_text())
    import inspect

    from keras_pose.data.dataset import make_dataset

    data = pipeline.data
    prefetch = inspect.signature(make_dataset).parameters["prefetch"].default
    return {"peak_rss_mib": summary["peak_rss_mib"], "wall_s": wall, "made_data": made_data,
            "training_peak_mib": summary.get("peak_rss_mib_training"),
            "model": f"{pipeline.model.name} {pipeline.model.options}",
            "input": pipeline.model.input_size, "batch": pipeline.train.batch_size,
            "steps": pipeline.train.epochs * pipeline.train.steps_per_epoch,
            "shuffle_buffer": data.shuffle_buffer, "prefetch": prefetch}


def run(args: argparse.Namespace) -> int:
    """Run and print the table; 1 if a run failed."""
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNS]
    if unknown or not names or args.steps < 1:
        print(f"benchmark memory: --runs must name some of {list(RUNS)} (received "
              f"{args.runs!r}) and --steps must be >= 1 (received {args.steps})",
              file=sys.stderr)
        return 2
    print(f"benchmark memory: {common.machine_description()}", flush=True)
    rows, failed = [], False
    for name in names:
        print(f"  running {name} ({args.steps} steps) ...", flush=True)
        r = _measure(name, args)
        if "error" in r:
            failed = True
            rows.append([name, "-", "-", "-", "-", "-", f"failed: {r['error']}"])
            continue
        training = r["training_peak_mib"]
        rows.append([name, r["model"], r["input"], r["batch"], r["steps"],
                     f"{r['peak_rss_mib']:,}",
                     (f"training alone {training:,} MiB (run peak "
                      f"{100 * (r['peak_rss_mib'] / training - 1):+.0f}%); " if training else "")
                     + f"{r['wall_s']:.0f} s" + (" (made the data)" if r["made_data"] else "")
                     + f"; shuffle buffer {r['shuffle_buffer']} records, prefetch {r['prefetch']} "
                     "batches"])
    common.print_table(
        "Peak resident memory of training runs (tools/train.py, its own process each)",
        ["run", "model", "input px", "batch", "steps", "peak RSS MiB", "notes"], rows)
    return 1 if failed else 0
