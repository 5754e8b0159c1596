"""``keras-pose-train`` / ``tools/train.py``: train a pose network from a pipeline file.

The shipped pipelines live in the repository's top-level ``pipelines/``; a wheel carries them as
the package data ``keras_pose/pipelines/*.toml`` (``setup.cfg`` maps that folder), so the default
pipeline is found from a non-editable install as well as from a checkout.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1]
# Where the shipped pipelines are: an installed wheel's package data first, then a checkout's
# (or an editable install's) top-level folder beside the package.
PIPELINE_FOLDERS = (PACKAGE / "pipelines", PACKAGE.parent / "pipelines")


def shipped_pipeline(name: str) -> pathlib.Path:
    """The shipped ``pipelines/NAME.toml`` of this installation.

    Returns the first existing file of ``PIPELINE_FOLDERS``; when none exists, the package-data
    path, so the error that follows (``load_pipeline``) names where it was looked for.
    """
    candidates = [folder / f"{name}.toml" for folder in PIPELINE_FOLDERS]
    return next((path for path in candidates if path.is_file()), candidates[0])


DEFAULT_PIPELINE = shipped_pipeline("quickstart")

TRAIN_USAGE = """Train a pose network from a pipeline file.

  python tools/train.py [--pipeline pipelines/NAME.toml] [--set key=value ...] [--output DIR]
  keras-pose-train [...]           (the same, as an installed console script)

With no arguments it runs the embedded default: make the synthetic dataset (cached), convert it
to TFRecords, train the ``quickstart`` pipeline, evaluate on held-out synthetic images, export a
SavedModel to ``saved_models/quickstart/<version>/`` and print a closing summary. Running the
same command again after an interruption resumes from the last finished epoch.

Exit status: 0 = done; 2 = the run could not start (a bad pipeline or data); 1 = training
stopped part way (a NaN loss) or the final evaluation or the export failed (the message says how
to finish by hand); 143 = stopped by SIGTERM at the next step (the same command resumes).
"""


def train_main(argv: list[str] | None = None) -> int:
    """``tools/train.py``, ``keras-pose-train``: the exit status says how the run ended, with a
    message for each failure: 0 = success; 2 = it could not start (a bad pipeline or data) or
    met a damaged record shard (named); 1 = training stopped part way (a NaN loss, a full disk),
    or the final evaluation or the export failed (the message says how to finish them by hand);
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
    from keras_pose.training.errors import RunError
    from keras_pose.training.run import train
    from keras_pose.training.summary import format_summary

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
