"""Prints the networks' sizes: trainable parameters, outputs and GFLOPs per image.

FLOPs are counted, not estimated: each model is traced once as a TensorFlow concrete function
for one image (inference mode, nothing is run) and ``tf.compat.v1.profiler`` sums the float
operations of the graph's convolutions, transposed convolutions and matrix products
(2 x multiply-adds, the usual published figure). Element-wise work (biases, batch norm, ReLU,
residual adds, pooling, DeepPose's patch-crop gathers) is not included.

Usage:
    python tools/summarize.py                  # the configurations of docs/models.md
    python tools/summarize.py --only deeppose  # configurations whose model name contains this
    python tools/summarize.py --num-keypoints 17
    keras-pose-summarize [...]                 # the same, as an installed console script
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

import numpy as np
from tqdm import tqdm

# (model name, configuration label, build options, reference figure to compare with: docs/models.md)
CONFIGURATIONS = [
    ("stacked_hourglass", "2 stacks (Newell)", {"num_stacks": 2}, "6,570,400 (J=16)"),
    ("stacked_hourglass", "4 stacks (Newell)", {"num_stacks": 4}, "12,858,304 (J=16)"),
    ("stacked_hourglass", "8 stacks (Newell)", {"num_stacks": 8}, "25,434,112 (J=16)"),
    ("stacked_hourglass", "poster: 2 stacks x 2 modules (nj)",
     {"num_stacks": 2, "num_modules": 2, "variant": "nj"}, "12.6M (12,647,206)"),
    ("stacked_hourglass", "quickstart: 1 stack, 64 feats, depth 3, 128 px",
     {"num_stacks": 1, "num_features": 64, "depth": 3, "input_shape": (128, 128, 3),
      "num_keypoints": 17},
     "180,465 (J=17, docs/quickstart.md)"),
    ("residual_stacked_hourglass", "5 stacks x 2 modules, highways", {}, "31.1M (31,089,238)"),
    ("chained_prediction", "resnet34", {"backbone": "resnet34"}, "24.4M (24,447,888)"),
    ("chained_prediction", "resnet50 (1x1 2048->64)", {"backbone": "resnet50"},
     "26.5M (26,525,648)"),
    ("deeppose", "alexnet, 3 stages, 220 px", {"backbone": "alexnet", "num_stages": 3},
     "3 x 58.4M (paper: ~40M/stage)"),
    ("deeppose", "resnet34, 1 stage, 256 px", {"backbone": "resnet34"}, "21.3M (21,301,088)"),
]

_CONV_DENSE_OPS = ("Conv2D", "Conv2DBackpropInput", "MatMul", "BatchMatMul", "BatchMatMulV2",
                   "BatchMatMulV3")


def trainable_parameters(model) -> int:
    """Trainable parameters (BN moving statistics excluded), as docs/models.md counts them."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def count_gflops(model) -> float:
    """Conv/transposed-conv/matmul GFLOPs for one image, from the TF profiler."""
    import tensorflow as tf

    height, width = model.input_size
    spec = tf.TensorSpec([1, height, width, 3], tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    profile = tf.compat.v1.profiler.profile(graph=concrete.graph, cmd="op", options=options)
    conv_dense = sum(child.total_float_ops for child in profile.children
                     if child.name in _CONV_DENSE_OPS)
    return conv_dense / 1e9


def describe_outputs(model) -> str:
    """Output names and shapes; with more than 3 outputs only the first and the last."""
    described = [f"{name} {tuple(output.shape[1:])}"
                 for name, output in zip(model.output_names, model.outputs)]
    if len(described) > 3:  # keep the table narrow
        return f"{len(described)} x: {described[0]} ... {described[-1]}"
    return ", ".join(described)


def summarize(configurations, num_keypoints: int) -> list[list[str]]:
    from keras_pose.models import build_model

    rows = []
    for name, label, options, target in tqdm(configurations, desc="models", file=sys.stderr):
        model = build_model(name, **{"num_keypoints": num_keypoints, **options})
        gflops = count_gflops(model)
        outputs = describe_outputs(model)
        spec = model.output_spec
        rows.append([name, label, f"{trainable_parameters(model):,}", target,
                     f"{spec.kind}/{spec.loss}", outputs, f"{gflops:.2f}"])
        del model
        gc.collect()
    return rows


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-keypoints", type=int, default=16,
                        help="keypoints K (docs/models.md counts for MPII's 16; COCO has 17)")
    parser.add_argument("--only", default=None,
                        help="only configurations whose model name contains this string")
    args = parser.parse_args(argv)
    # TensorFlow (imported here, not for --help) reads the log level when first imported.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # the v1 profiler's deprecation notice
    configurations = [c for c in CONFIGURATIONS if args.only is None or args.only in c[0]]
    if not configurations:
        parser.error(f"--only {args.only!r} matches none of "
                     f"{sorted({c[0] for c in CONFIGURATIONS})}")
    rows = summarize(configurations, args.num_keypoints)
    print(f"K = {args.num_keypoints} keypoints unless the configuration says. GFLOPs per image "
          "= 2 x multiply-adds of conv/dense layers, counted by tf.compat.v1.profiler on the "
          "traced graph (batch 1, inference).")
    print_table(["model", "configuration", "trainable params", "reference", "kind/loss", "outputs",
                 "GFLOPs"], rows)
    return 0

