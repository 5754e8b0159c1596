"""Inference: a keras-pose SavedModel's latency (batch 1) and throughput (batch 8) vs PyTorch.

keras-pose side: the network exported with ``keras_pose.export.save_saved_model`` (the graph TF
Serving runs: crop and resize of the uint8 image, the network, heatmap decoding, the map back
to image pixels), loaded with ``tf.saved_model.load`` and called through ``serving_default`` on
uint8 images of the network's input size. Also the bare network in-process as a
``tf.function`` with XLA off and on (float32 input, final heatmaps out). Baseline: the PyTorch
port (``torch_hourglass.py``) in eager mode under ``torch.inference_mode()``, ``eval()``,
``torch.set_num_threads(os.cpu_count())``, float32 input, network only (no resize, no
decoding), NCHW and channels_last; the faster layout at each batch size is the baseline.

Each configuration runs in its own process; calls are timed in alternation across processes
(``workers.py``), so load drifts into every configuration alike.

Example: ``python tools/benchmark.py infer --model stacked_hourglass --stacks 2``.
"""

from __future__ import annotations

import argparse
import os
import sys

from keras_pose.benchmarks import common
from keras_pose.benchmarks.train import (
    HOURGLASSES,
    MODELS,
    configure_tf_threads,
    forward_flops,
    model_options,
    torch_available,
    torch_threads,
    torch_version,
)
from keras_pose.benchmarks.workers import Worker, WorkerError, alternate, serve, worker_main
from keras_pose.resources import peak_rss_mib

MODULE = "keras_pose.benchmarks.infer"


def _build_network(spec: dict):
    import keras

    from keras_pose.keypoints import get_keypoint_set
    from keras_pose.models import build_model

    keras.utils.set_random_seed(0)
    keypoint_set = get_keypoint_set(spec["keypoint_set"])
    size = spec["input_size"]
    network = build_model(spec["model"], num_keypoints=keypoint_set.num_keypoints,
                          input_shape=(size, size, 3), **spec["options"])
    return network, keypoint_set


def _images(batch: int, size: int, channels_first: bool = False, dtype="float32"):
    import numpy as np

    rng = np.random.default_rng(batch)
    images = rng.integers(0, 256, (batch, size, size, 3)).astype(dtype)
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)) if channels_first else images


def serve_saved_model(spec: dict) -> None:
    """``serving_default`` of an exported SavedModel, batch by batch size."""
    configure_tf_threads(spec.get("intra", 0), spec.get("inter", 0))
    import tempfile

    import numpy as np
    import tensorflow as tf

    network, keypoint_set = _build_network(spec)
    directory = tempfile.mkdtemp(prefix="keras_pose_bench_")
    path = os.path.join(directory, "1")
    try:
        from keras_pose import export

        export.save_saved_model(network, path, keypoint_set=keypoint_set)
        exporter = "keras_pose.export.save_saved_model"
    except ImportError:
        size = spec["input_size"]

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
        def serving_default(images):
            outputs = network(tf.cast(images, tf.float32), training=False)
            final = outputs[-1] if isinstance(outputs, (list, tuple)) else outputs
            return {"heatmaps": final}

        tf.saved_model.save(network, path, signatures={"serving_default": serving_default})
        exporter = "tf.saved_model.save of a tf.function (keras_pose.export not available)"
    flops = forward_flops(network)
    params = int(sum(np.prod(w.shape) for w in network.trainable_weights))
    function = tf.saved_model.load(path).signatures["serving_default"]
    size = spec["input_size"]
    inputs = {b: tf.constant(_images(b, size, dtype="uint8")) for b in spec["batches"]}

    def make_step(batch):
        def step():
            outputs = function(images=inputs[batch])
            for value in outputs.values():
                value.numpy()
        return step

    steps = {str(b): make_step(b) for b in spec["batches"]}
    meta = {"exporter": exporter, "forward_flops": flops, "params": params,
            "outputs": sorted(function.structured_outputs)}
    serve(steps, spec["warmup"], meta, lambda: {"peak_rss_mib": peak_rss_mib()})


def serve_keras_function(spec: dict) -> None:
    """The bare network as a ``tf.function`` (XLA on or off): float32 in, final output out."""
    configure_tf_threads(spec.get("intra", 0), spec.get("inter", 0))
    import tensorflow as tf

    network, _ = _build_network(spec)

    @tf.function(jit_compile=spec["jit"], reduce_retracing=True)
    def predict(images):
        outputs = network(images, training=False)
        return outputs[-1] if isinstance(outputs, (list, tuple)) else outputs

    inputs = {b: tf.constant(_images(b, spec["input_size"])) for b in spec["batches"]}
    steps = {str(b): (lambda b=b: predict(inputs[b]).numpy()) for b in spec["batches"]}
    serve(steps, spec["warmup"], {}, lambda: {"peak_rss_mib": peak_rss_mib()})


def serve_torch(spec: dict) -> None:
    """The PyTorch port, eager, ``inference_mode``, ``eval()``."""
    import torch

    from keras_pose.benchmarks import torch_hourglass as th

    torch.set_num_threads(torch_threads())
    torch.manual_seed(0)
    model = th.StackedHourglass(spec["num_keypoints"], spec["stacks"]).eval()
    inputs = {b: torch.from_numpy(_images(b, spec["input_size"], channels_first=True))
              for b in spec["batches"]}
    if spec["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
        inputs = {b: x.contiguous(memory_format=torch.channels_last) for b, x in inputs.items()}

    def make_step(batch):
        def step():
            with torch.inference_mode():
                return model(inputs[batch])[-1]
        return step

    steps = {str(b): make_step(b) for b in spec["batches"]}
    meta = {"threads": torch.get_num_threads(), "params": th.count_parameters(model)}
    serve(steps, spec["warmup"], meta, lambda: {"peak_rss_mib": peak_rss_mib()})


SERVERS = {"saved_model": serve_saved_model, "keras": serve_keras_function,
           "torch": serve_torch}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``benchmark.py infer``."""
    parser.add_argument("--model", default="stacked_hourglass", choices=MODELS)
    parser.add_argument("--stacks", type=int, default=2, help="hourglass stacks (default 2)")
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--keypoint-set", default="mpii16", choices=("mpii16", "coco17"))
    parser.add_argument("--batches", default="1,8",
                        help="batch sizes, comma-separated (default 1,8: latency, throughput)")
    parser.add_argument("--jit", default="both", choices=("both", "on", "off", "none"),
                        help="also time the bare network as a tf.function with XLA on/off")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per batch size")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--intra-threads", type=int, default=0)
    parser.add_argument("--inter-threads", type=int, default=0)
    parser.add_argument("--torch-layouts", default="nchw,channels_last")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--timeout", type=float, default=900.0)


def all_argv(args: argparse.Namespace) -> list[str]:
    """``benchmark.py all``: the 2-stack hourglass, batch 1 and 8, XLA on and off."""
    return ["--model", "stacked_hourglass", "--stacks", "2", "--repeats", "8"]


def _batches(text: str) -> list[int]:
    try:
        batches = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"--batches must be integers separated by commas, received {text!r}") from None
    if not batches or min(batches) < 1:
        raise ValueError(f"--batches must be positive integers, received {text!r}")
    return batches


def run(args: argparse.Namespace) -> int:
    """Measure and print the inference table; 1 if a configuration failed."""
    try:
        batches = _batches(args.batches)
        if args.repeats < 1 or args.warmup < 0:
            raise ValueError("--repeats must be >= 1 and --warmup >= 0")
    except ValueError as error:
        print(f"benchmark infer: {error}", file=sys.stderr)
        return 2
    from keras_pose.keypoints import get_keypoint_set

    print(f"benchmark infer: {common.machine_description()}", flush=True)
    load_before = os.getloadavg()
    base = {"model": args.model, "options": model_options(args.model, args.stacks),
            "keypoint_set": args.keypoint_set, "input_size": args.input_size,
            "batches": batches, "warmup": args.warmup,
            "intra": args.intra_threads, "inter": args.inter_threads}
    configs = [("keras-pose SavedModel serving_default", {**base, "kind": "saved_model"})]
    jits = {"both": (False, True), "on": (True,), "off": (False,), "none": ()}[args.jit]
    for jit in jits:
        configs.append((f"keras-pose tf.function jit={'on' if jit else 'off'} (network)",
                        {**base, "kind": "keras", "jit": jit}))
    torch_note = ""
    if args.no_torch:
        torch_note = "PyTorch baseline skipped (--no-torch)"
    elif args.model != "stacked_hourglass":
        torch_note = f"no PyTorch port of {args.model}: baseline skipped"
    elif not torch_available():
        torch_note = "torch is not installed (pip install 'keras-pose[bench]'): baseline skipped"
    else:
        for layout in [s.strip() for s in args.torch_layouts.split(",") if s.strip()]:
            configs.append((f"PyTorch {torch_version()} eager {layout} (network)", {
                "kind": "torch", "num_keypoints": get_keypoint_set(args.keypoint_set)
                .num_keypoints, "stacks": args.stacks, "input_size": args.input_size,
                "batches": batches, "warmup": args.warmup,
                "channels_last": layout == "channels_last"}))

    # Start one at a time (start-up and export are the heavy part), then time in alternation.
    workers, results = [], {}
    for label, spec in configs:
        print(f"  starting {label} ...", flush=True)
        worker = Worker(MODULE, spec, args.timeout)
        try:
            worker.wait_ready()
            workers.append((label, worker))
        except WorkerError as error:
            worker.close()
            print(f"    failed: {error}", flush=True)
            results[label] = {"error": str(error)}
    try:
        for batch in batches:
            print(f"  timing batch {batch}: {args.repeats} rounds over {len(workers)} "
                  "configurations ...", flush=True)
            alternate([w for _, w in workers], args.repeats, name=str(batch))
    except WorkerError as error:
        for _, worker in workers:
            worker.close()
        print(f"benchmark infer: {error}", file=sys.stderr)
        return 1
    for label, worker in workers:
        try:
            results[label] = worker.finish()
        except WorkerError as error:
            worker.close()
            results[label] = {"error": str(error)}
    return _report(args, batches, configs, results, torch_note, load_before)


def _report(args, batches, configs, results, torch_note, load_before) -> int:
    status = 0
    flops = next((r["forward_flops"] for r in results.values() if "forward_flops" in r), None)
    title = (f"Inference, {args.model} "
             f"{'stacks=' + str(args.stacks) + ' ' if args.model in HOURGLASSES else ''}"
             f"input {args.input_size}, {args.keypoint_set}; medians of {args.repeats} calls "
             f"after {args.warmup} warm-up, configurations alternating")
    header = ["configuration", "batch", "ms/call", "IQR", "vs PyTorch", "images/s", "GFLOP/s",
              "peak RSS MiB"]
    rows = []
    for batch in batches:
        key = str(batch)
        torch_medians = {label: common.median(r["named_times"][key])
                         for label, r in results.items()
                         if label.startswith("PyTorch") and "named_times" in r}
        base = min(torch_medians.values()) if torch_medians else None
        for label, _ in configs:
            r = results.get(label, {"error": "not run"})
            if "error" in r:
                rows.append([label, batch, "failed", r["error"][:60], "", "", "", ""])
                status = 1
                continue
            t = common.median(r["named_times"][key])
            suffix = " (baseline)" if base is not None and torch_medians.get(label) == base \
                else ""
            rows.append([label + suffix, batch, f"{t * 1e3:.1f}",
                         common.spread(r["named_times"][key]),
                         f"{t / base:.2f}x" if base else "-", f"{batch / t:.2f}",
                         f"{flops * batch / t / 1e9:.1f}" if flops else "-",
                         f"{r['peak_rss_mib']:.0f}"])
    common.print_table(title, header, rows)
    saved = results.get(configs[0][0], {})
    notes = []
    if "exporter" in saved:
        notes.append(f"SavedModel written by {saved['exporter']}; outputs {saved['outputs']}; "
                     f"it also resizes the uint8 input and decodes keypoints, which the "
                     f"PyTorch baseline does not")
    if flops:
        notes.append(f"FLOPs: {flops / 1e9:.2f} GFLOP per image (per-layer multiply-adds x 2)")
    torch_threads_used = [r.get("threads") for label, r in results.items()
                          if label.startswith("PyTorch") and "threads" in r]
    if torch_threads_used:
        notes.append(f"PyTorch: torch.get_num_threads() = {torch_threads_used[0]}")
    if torch_note:
        notes.append(torch_note)
    common.print_notes(notes, load_before)
    return status


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: ``python -m keras_pose.benchmarks.infer --serve JSON``."""
    return worker_main(SERVERS, argv)


if __name__ == "__main__":
    sys.exit(main())
