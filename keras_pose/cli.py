"""Command-line entry points and argument helpers shared by ``tools/*.py``.

The scripts in ``tools/`` stay thin: they parse arguments and call the library. ``train_main``
is also installed as the ``keras-pose-train`` console script.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_PIPELINE = REPO / "pipelines" / "quickstart.toml"

TRAIN_USAGE = """Train a pose network from a pipeline file.

  python tools/train.py [--pipeline pipelines/NAME.toml] [--set key=value ...] [--output DIR]

With no arguments it runs the embedded default: make the synthetic dataset (cached), convert it
to TFRecords, train the ``quickstart`` pipeline, evaluate on held-out synthetic images, export a
SavedModel to ``saved_models/quickstart/<version>/`` and print a closing summary. Running the
same command again after an interruption resumes from the last finished epoch.

Exit status: 0 = done; 2 = the run could not start (a bad pipeline or data); 1 = training
stopped part way (a NaN loss) or the final evaluation or the export failed (the message says how
to finish by hand); 143 = stopped by SIGTERM at the next step (the same command resumes).
"""


def parse_box(text: str) -> list[float]:
    """``x,y,w,h`` in pixels (w, h > 0), for ``--box`` options."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or values[2] <= 0 or values[3] <= 0:
        raise argparse.ArgumentTypeError(
            f"--box must be x,y,w,h in pixels with w, h > 0, received {text!r}")
    return values


def train_main(argv: list[str] | None = None) -> int:
    """``tools/train.py``: the exit status says how the run ended, with a message for each
    failure: 0 = success; 2 = it could not start (a bad pipeline or data) or met a damaged
    record shard (named); 1 = training stopped part way (a NaN loss, a full disk), or the
    final evaluation or the export failed (the message says how to finish them by hand);
    143 = stopped by SIGTERM (the same command resumes)."""
    parser = argparse.ArgumentParser(description=TRAIN_USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default=str(DEFAULT_PIPELINE),
                        help="pipeline TOML file (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="override a pipeline value (TOML syntax), repeatable")
    parser.add_argument("--output", help="run directory (default: runs/<pipeline name>)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from keras_pose.pipeline import PipelineError, load_pipeline
    from keras_pose.training.run import RunError, format_summary, train

    try:
        pipeline = load_pipeline(args.pipeline, args.overrides)
        output = pathlib.Path(args.output or pathlib.Path("runs") / pipeline.name)
        summary = train(pipeline, output)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RunError as error:
        if getattr(error, "summary", None):  # trained; a step after training failed
            print(format_summary(error.summary))
        print(f"error: {error}", file=sys.stderr)
        return error.exit_status
    print(format_summary(summary))
    return 0
