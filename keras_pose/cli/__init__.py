"""Every command-line tool of keras-pose: one module per tool, each with its parser and ``main``.

The same ``main`` functions back the console scripts (``keras-pose-train``, ``keras-pose-convert``,
..., see ``setup.cfg``) and the one-line wrappers ``tools/*.py`` that the README's commands run.
Each returns the tool's exit status instead of exiting, so tests call them in-process. The
modules import TensorFlow only inside ``main`` (after argument parsing), so ``--help`` and
argument errors stay quick.
"""

from keras_pose.cli.arguments import parse_box
from keras_pose.cli.benchmark import main as benchmark_main
from keras_pose.cli.convert import convert_coco_main
from keras_pose.cli.convert import main as convert_main
from keras_pose.cli.evaluate import main as evaluate_main
from keras_pose.cli.export import main as export_main
from keras_pose.cli.make_synthetic import main as make_synthetic_main
from keras_pose.cli.predict import main as predict_main
from keras_pose.cli.serve_client import main as serve_client_main
from keras_pose.cli.show_batch import main as show_batch_main
from keras_pose.cli.summarize import main as summarize_main
from keras_pose.cli.train import DEFAULT_PIPELINE, TRAIN_USAGE, shipped_pipeline, train_main

__all__ = [
    "DEFAULT_PIPELINE", "TRAIN_USAGE", "benchmark_main", "convert_coco_main", "convert_main",
    "evaluate_main", "export_main", "make_synthetic_main", "parse_box", "predict_main",
    "serve_client_main", "shipped_pipeline", "show_batch_main", "summarize_main", "train_main",
]
