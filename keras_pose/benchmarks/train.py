"""Training step: keras-pose's full step vs a PyTorch port of the same network and loss.

The keras-pose step is ``PoseTrainer.train_step`` run through Keras's compiled train function
(the function ``fit`` calls), built exactly as a pipeline builds it (``run.build_trainer``,
``run.make_optimizer``: RMSprop 2.5e-4, the pipeline's augmentation and sampler), on a
reader-like batch of uint8 crops, keypoints and visibility: augmentation (random affine warp,
flips), heatmap targets, the network, the summed masked loss and the update are all timed.
The baseline is the PyTorch port in ``keras_pose/benchmarks/torch_hourglass.py`` (same layers,
same parameter count, same loss, RMSprop) fed a ready float batch and ready targets of the same
size, with PyTorch's defaults and ``torch.set_num_threads(os.cpu_count())``; its data
preparation is not timed, which favours it. The candidates (``baselines.TRAIN_BASELINES``,
each skipped with a printed reason when torch is absent, bfloat16 ones also on a CPU without
bfloat16 instructions): eager NCHW and channels_last, ``torch.compile``, and bfloat16
autocast eager and compiled. They are timed in alternation first; the fastest of each
precision is then the baseline of every keras-pose configuration of that precision
(``float32`` against float32, ``mixed_bfloat16`` against bfloat16 autocast).

Each configuration runs in its own process; keras-pose and baseline steps are timed in
alternation (see ``workers.py``), so machine load drifts into both sides alike. GFLOP/s use
FLOPs counted per layer (multiply-adds x 2 of every convolution and dense layer of the Keras
model; a training step counted as 3 forward passes: forward, gradient w.r.t. activations,
gradient w.r.t. weights), against this machine's measured float32 matmul rate
(``tf.linalg.matmul`` of two 4096x4096 matrices).

Example: ``python tools/benchmark.py train --model stacked_hourglass --stacks 2 --batch 8``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from keras_pose.benchmarks import baselines, common
from keras_pose.benchmarks.workers import Worker, WorkerError, alternate, serve, worker_main
from keras_pose.resources import peak_rss_mib

MODULE = "keras_pose.benchmarks.train"
MODELS = ("stacked_hourglass", "residual_stacked_hourglass", "chained_prediction", "deeppose")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
HOURGLASSES = ("stacked_hourglass", "residual_stacked_hourglass")
DEFAULT_CONFIGS = "off:float32,on:float32"


# ----------------------------------------------------------------------------------------------
# Helpers shared with the inference benchmark and the tests


def forward_flops(model) -> int:
    """FLOPs of one forward pass of a Keras model for one example (multiply-adds x 2).

    Counts ``Conv2D``, ``Conv2DTranspose``, ``DepthwiseConv2D`` and ``Dense`` layers at every
    call in the functional graph (nested models included); normalization, activations, pooling
    and additions are left out (a few percent for these networks).

    Args:
        model: a built functional ``keras.Model``.

    Returns:
        The FLOP count.
    """
    import keras

    from keras_pose.compat import call_count, calls

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer) * max(1, call_count(layer))
            continue
        for node in calls(layer):
            if not node.input_tensors or not node.output_tensors:
                continue  # the input layer
            in_shape = tuple(node.input_tensors[0].shape)
            out_shape = tuple(node.output_tensors[0].shape)
            total += 2 * _layer_macs(layer, in_shape, out_shape)
    return int(total)


def _prod(values) -> int:
    result = 1
    for v in values:
        result *= int(v)
    return result


def _layer_macs(layer, in_shape: tuple, out_shape: tuple) -> int:
    import keras

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return _prod(out_shape[1:]) * kh * kw
    if isinstance(layer, keras.layers.Conv2DTranspose):
        kh, kw = layer.kernel_size
        return _prod(in_shape[1:]) * kh * kw * int(out_shape[-1])
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        cin = int(in_shape[-1]) // int(getattr(layer, "groups", 1) or 1)
        return _prod(out_shape[1:]) * kh * kw * cin
    if isinstance(layer, keras.layers.Dense):
        return _prod(out_shape[1:]) * int(in_shape[-1])
    return 0


def synthetic_batch(batch_size: int, crop_size: int, num_keypoints: int, seed: int = 0
                    ) -> dict[str, Any]:
    """A reader-like batch (numpy): uint8 crops, keypoints in crop pixels, visibility, box.

    Keypoints fall in the central 60% of the crop; about one in eight is unlabeled.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    keypoints = rng.uniform(0.2, 0.8, (batch_size, num_keypoints, 2)) * crop_size
    visibility = np.where(rng.uniform(size=(batch_size, num_keypoints)) < 0.125, 0, 2)
    return {
        "image": rng.integers(0, 256, (batch_size, crop_size, crop_size, 3), dtype=np.uint8),
        "keypoints": keypoints.astype(np.float32),
        "visibility": visibility.astype(np.int32),
        "crop_box": np.tile(np.array([[0, 0, crop_size, crop_size]], np.float32),
                            (batch_size, 1)),
    }


def model_options(model: str, stacks: int) -> dict:
    """Builder options for the benchmark's ``--model`` and ``--stacks``."""
    return {"num_stacks": stacks} if model in HOURGLASSES else {}


def benchmark_pipeline(spec: dict):
    """The ``Pipeline`` a user would write for this configuration (defaults elsewhere)."""
    import dataclasses

    from keras_pose.pipeline import Pipeline

    pipeline = Pipeline(name="benchmark")
    return dataclasses.replace(
        pipeline,
        model=dataclasses.replace(pipeline.model, name=spec["model"],
                                  input_size=spec["input_size"], options=spec["options"]),
        data=dataclasses.replace(pipeline.data, keypoint_set=spec["keypoint_set"],
                                 crop_size=spec["crop_size"]),
        augment=dataclasses.replace(pipeline.augment, enabled=spec["augment"]),
        train=dataclasses.replace(pipeline.train, batch_size=spec["batch"],
                                  jit_compile="true" if spec["jit"] else "false",
                                  mixed_precision=spec["precision"]),
    )


def configure_tf_threads(intra: int, inter: int) -> None:
    """Thread-pool sizes (0 = TensorFlow's default); must run before TF initializes."""
    import tensorflow as tf

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)


def torch_threads() -> int:
    return os.cpu_count() or 1


# ----------------------------------------------------------------------------------------------
# Worker processes


def matmul_rate(size: int, repeats: int = 5) -> dict:
    """TensorFlow's float32 matmul rate on this machine (GFLOP/s), in this process."""
    import tensorflow as tf

    a = tf.random.uniform((size, size), dtype=tf.float32)
    b = tf.random.uniform((size, size), dtype=tf.float32)
    times = common.time_call(lambda: tf.linalg.matmul(a, b).numpy(), repeats, 1)
    return {"times": times, "gflops": 2 * size**3 / common.median(times) / 1e9}


def serve_matmul(spec: dict) -> None:
    configure_tf_threads(spec.get("intra", 0), spec.get("inter", 0))
    result = matmul_rate(spec["size"], spec.get("repeats", 5))
    serve(lambda: None, 0, {}, finish=lambda: result)


def serve_keras(spec: dict) -> None:
    """The compiled keras-pose training step on a reader-like batch."""
    configure_tf_threads(spec.get("intra", 0), spec.get("inter", 0))
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_pose.keypoints import get_keypoint_set
    from keras_pose.training import run
    from keras_pose.training.strategy import resolve_jit_compile

    pipeline = benchmark_pipeline(spec)
    keras.mixed_precision.set_global_policy(pipeline.train.mixed_precision)
    keras.utils.set_random_seed(0)
    keypoint_set = get_keypoint_set(pipeline.data.keypoint_set)
    trainer = run.build_trainer(pipeline, keypoint_set.num_keypoints)
    trainer.compile(optimizer=run.make_optimizer(pipeline),
                    jit_compile=resolve_jit_compile(pipeline.train.jit_compile))
    batch = {k: tf.constant(v) for k, v in synthetic_batch(
        spec["batch"], spec["crop_size"], keypoint_set.num_keypoints).items()}
    trainer.make_train_function()
    losses = []

    def step():
        losses.append(float(trainer.train_function([batch])["loss"]))

    def finish() -> dict:
        def prepared(b):
            out = trainer.prepare(b, training=True, step=0)
            # Reduce both results so neither the warp nor the targets is pruned as unused.
            return tf.reduce_sum(out["images"]) + tf.reduce_sum(out["targets"])

        prepare = tf.function(prepared, jit_compile=trainer.jit_compile)
        prepare_times = common.time_call(lambda: prepare(batch).numpy(), 5, 2)
        return {"prepare_times": prepare_times, "last_loss": losses[-1],
                "finite": bool(np.all(np.isfinite(losses))),
                "peak_rss_mib": peak_rss_mib()}

    network = trainer.network
    meta = {
        "params": int(sum(np.prod(w.shape) for w in network.trainable_weights)),
        "forward_flops": forward_flops(network),
        "sampler": trainer.sampler,
        "jit": bool(trainer.jit_compile),
        "intra": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter": tf.config.threading.get_inter_op_parallelism_threads(),
    }
    serve(step, spec["warmup"], meta, finish)


def serve_torch(spec: dict) -> None:
    """One PyTorch training step of the hourglass port (forward, loss, backward, RMSprop).

    ``spec``: ``layout`` (``nchw`` or ``channels_last``), ``compile`` (``torch.compile`` the
    model), ``autocast`` (forward and loss under ``torch.autocast("cpu", torch.bfloat16)``: the
    convolutions in bfloat16, weights and the update in float32, like Keras's
    ``mixed_bfloat16``).
    """
    import contextlib

    import numpy as np
    import torch

    from keras_pose.benchmarks import torch_hourglass as th

    torch.set_num_threads(torch_threads())
    torch.manual_seed(0)
    model = th.StackedHourglass(spec["num_keypoints"], spec["stacks"])
    rng = np.random.default_rng(0)
    b, size, k = spec["batch"], spec["input_size"], spec["num_keypoints"]
    images = torch.from_numpy(rng.uniform(0, 255, (b, 3, size, size)).astype(np.float32))
    targets = torch.from_numpy(rng.uniform(0, 1, (b, k, size // 4, size // 4)).astype(np.float32))
    weights = torch.from_numpy((rng.uniform(size=(b, k)) > 0.125).astype(np.float32))
    if spec.get("layout", "nchw") == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.RMSprop(model.parameters(), lr=2.5e-4, alpha=0.99, eps=1e-8)
    forward = torch.compile(model) if spec.get("compile") else model

    def precision():
        if spec.get("autocast"):
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with precision():
            loss = th.summed_loss(forward(images), targets, weights)
        loss.backward()
        optimizer.step()
        return float(loss)

    meta = {"params": th.count_parameters(model), "threads": torch.get_num_threads(),
            "version": torch.__version__}
    serve(step, spec["warmup"], meta, lambda: {"peak_rss_mib": peak_rss_mib()})


SERVERS = {"matmul": serve_matmul, "keras": serve_keras, "torch": serve_torch}


# ----------------------------------------------------------------------------------------------
# The subcommand


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``benchmark.py train``."""
    parser.add_argument("--model", default="stacked_hourglass", choices=MODELS)
    parser.add_argument("--stacks", type=int, default=2, help="hourglass stacks (default 2)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--crop-size", type=int, default=256,
                        help="side of the stored crops the step warps from (256 or 320)")
    parser.add_argument("--keypoint-set", default="mpii16", choices=("mpii16", "coco17"),
                        help="mpii16 (16 keypoints) matches the parameter counts of docs/models.md")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                        help="keras-pose configurations JIT:PRECISION, comma-separated, JIT in "
                             f"on/off, PRECISION in {PRECISIONS} (default {DEFAULT_CONFIGS})")
    parser.add_argument("--no-augment", action="store_true",
                        help="resize only (the step without random warps)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--intra-threads", type=int, default=0,
                        help="TF intra-op threads (0 = TF default)")
    parser.add_argument("--inter-threads", type=int, default=0,
                        help="TF inter-op threads (0 = TF default)")
    parser.add_argument("--baselines", default="all",
                        help="comma-separated names, 'all' or 'none'; the fastest of each "
                             "precision is the baseline; names: "
                             + ", ".join(b.name for b in baselines.TRAIN_BASELINES))
    parser.add_argument("--matmul-size", type=int, default=4096)
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds allowed for a worker's start-up, and for each step")


def all_argv(args: argparse.Namespace) -> list[str]:
    """``benchmark.py all``: the 2-stack hourglass at batch 8; XLA on and off, and bfloat16."""
    return ["--model", "stacked_hourglass", "--stacks", "2", "--batch", "8", "--repeats", "3",
            "--configs", "off:float32,on:float32,off:mixed_bfloat16"]


def parse_configs(text: str) -> list[tuple[bool, str]]:
    """``"off:float32,on:float32"`` -> ``[(False, "float32"), (True, "float32")]``."""
    configs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        jit, _, precision = item.partition(":")
        if jit not in ("on", "off") or precision not in PRECISIONS:
            raise ValueError(f"--configs: {item!r} is not JIT:PRECISION with JIT on/off and "
                             f"PRECISION one of {list(PRECISIONS)}")
        configs.append((jit == "on", precision))
    if not configs:
        raise ValueError("--configs names no configuration")
    return configs


def _validate(args: argparse.Namespace) -> list[tuple[bool, str]]:
    for name in ("batch", "repeats", "input_size", "crop_size", "stacks"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, "
                             f"received {getattr(args, name)}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, received {args.warmup}")
    if args.baselines.strip() != "none":
        baselines.select(baselines.TRAIN_BASELINES, baselines.parse_names(args.baselines), ())
    return parse_configs(args.configs)


def _start(spec: dict, timeout: float, label: str) -> Worker | dict:
    """Start a worker and wait until it is warm; a dict with ``error`` if it failed."""
    print(f"  starting {label} ...", flush=True)
    worker = Worker(MODULE, spec, timeout)
    try:
        worker.wait_ready()
    except WorkerError as error:
        worker.close()
        print(f"    {label} failed: {error}", flush=True)
        return {"error": str(error)}
    return worker


def _finish(worker: Worker, label: str) -> dict:
    try:
        result = worker.finish()
    except WorkerError as error:
        worker.close()
        return {"error": str(error)}
    print(f"    {label}: median {common.median(result['times']):.3f} s over "
          f"{len(result['times'])} steps", flush=True)
    return result


def run(args: argparse.Namespace, registry=baselines.TRAIN_BASELINES) -> int:
    """Measure and print the training-step tables; 1 if a configuration failed.

    ``registry``: the candidate baselines (:mod:`keras_pose.benchmarks.baselines`).
    """
    try:
        configs = _validate(args)
    except ValueError as error:
        print(f"benchmark train: {error}", file=sys.stderr)
        return 2
    from keras_pose.keypoints import get_keypoint_set

    num_keypoints = get_keypoint_set(args.keypoint_set).num_keypoints
    threads = {"intra": args.intra_threads, "inter": args.inter_threads}
    print(f"benchmark train: {common.machine_description()}", flush=True)
    load_before = os.getloadavg()

    matmul = _start({"kind": "matmul", "size": args.matmul_size, **threads}, args.timeout,
                    f"matmul {args.matmul_size}^3 float32")
    if isinstance(matmul, Worker):
        matmul = _matmul_result(matmul)

    # Baselines: every candidate timed in alternation; the fastest of each precision stays.
    precisions = {baselines.precision_of(precision) for _, precision in configs}
    skip_notes, baseline_results, kept = _baseline_phase(args, num_keypoints, registry,
                                                         precisions)

    keras_results = []
    for jit, precision in configs:
        label = f"keras-pose jit={'on' if jit else 'off'} {precision}"
        spec = {"kind": "keras", "model": args.model,
                "options": model_options(args.model, args.stacks),
                "keypoint_set": args.keypoint_set, "batch": args.batch,
                "input_size": args.input_size, "crop_size": args.crop_size, "jit": jit,
                "precision": precision, "augment": not args.no_augment,
                "warmup": args.warmup, **threads}
        worker = _start(spec, args.timeout, label)
        if not isinstance(worker, Worker):
            keras_results.append((label, precision, worker, None))
            continue
        baseline = kept.get(baselines.precision_of(precision))
        rounds = [worker] + ([baseline[1]] if baseline else [])
        first = len(baseline[1].times) if baseline else 0
        try:
            alternate(rounds, args.repeats)
        except WorkerError as error:
            worker.close()
            keras_results.append((label, precision, {"error": str(error)}, None))
            continue
        paired = (baseline[0], baseline[1].times[first:]) if baseline else None
        keras_results.append((label, precision, _finish(worker, label), paired))

    kept_final = {precision: (label, _finish(worker, label))
                  for precision, (label, worker) in kept.items()}
    return _report(args, matmul, keras_results, baseline_results, kept_final, skip_notes,
                   load_before)


def _matmul_result(worker: Worker) -> dict:
    try:
        return worker.finish()
    except WorkerError as error:
        worker.close()
        return {"error": str(error)}


def _baseline_phase(args, num_keypoints: int, registry, precisions: set[str]):
    """Start the baselines of the wanted precisions, time them in alternation, keep the fastest
    of each precision alive.

    Returns:
        (skip notes, [(label, precision, result)] of every baseline,
        ``{precision: (label, Worker)}`` of the kept ones).
    """
    if args.baselines.strip() == "none":
        return ["baselines skipped (--baselines none)"], [], {}
    if args.model != "stacked_hourglass":
        return [f"no PyTorch port of {args.model}: baselines skipped"], [], {}
    chosen, notes = baselines.select(registry, baselines.parse_names(args.baselines))
    for missing in sorted(precisions - {b.precision for b in chosen}):
        notes.append(f"no {missing} baseline runs here: keras-pose {missing} rows have no ratio")
    started, results = [], []
    for baseline in chosen:
        if baseline.precision not in precisions:
            continue  # no keras-pose configuration at this precision to compare with
        spec = {**baseline.spec, "kind": "torch", "num_keypoints": num_keypoints,
                "stacks": args.stacks, "batch": args.batch, "input_size": args.input_size,
                "warmup": args.warmup}
        worker = _start(spec, args.timeout, baseline.label)
        if isinstance(worker, Worker):
            started.append((baseline, worker))
        else:
            results.append((baseline.label, baseline.precision, worker))
    if not started:
        return notes, results, {}
    try:
        alternate([w for _, w in started], args.repeats)
    except WorkerError as error:
        for _, w in started:
            w.close()
        return [*notes, f"baselines failed: {error}"], results, {}
    best = baselines.fastest({b.label: (b.precision, common.median(w.times))
                              for b, w in started})
    kept = {}
    for baseline, worker in started:
        print(f"    {baseline.label}: median {common.median(worker.times):.3f} s", flush=True)
        if best[baseline.precision][0] == baseline.label:
            kept[baseline.precision] = (baseline.label, worker)
            result = {**worker.meta, "times": list(worker.times)}
        else:
            result = _finish(worker, baseline.label)
        results.append((baseline.label, baseline.precision, result))
    return notes, results, kept


def _report(args, matmul, keras_results, baseline_results, kept_final, notes,
            load_before) -> int:
    status = 0
    peak = matmul.get("gflops")
    flops = next((r["forward_flops"] for _, _, r, _ in keras_results if "forward_flops" in r),
                 None)
    train_flops = 3 * flops * args.batch if flops else None

    def rate(seconds):
        return train_flops / seconds / 1e9 if train_flops else None

    def cells(seconds, r):
        g = rate(seconds)
        return [f"{g:.1f}" if g else "-", f"{100 * g / peak:.0f}%" if g and peak else "-",
                f"{r['peak_rss_mib']:.0f}", f"{r['params']:,}"]

    header = ["configuration", "s/step", "IQR", "fastest baseline of the same precision",
              "its s/step (same rounds)", "ratio", "GFLOP/s", "% of matmul", "peak RSS MiB",
              "params"]
    rows = []
    for label, _, r, paired in keras_results:
        if "error" in r:
            rows.append([label, "failed", r["error"][:70], "", "", "", "", "", "", ""])
            status = 1
            continue
        t = common.median(r["times"])
        base = common.median(paired[1]) if paired else None
        rows.append([label, f"{t:.3f}", common.spread(r["times"]),
                     paired[0] if paired else "-", f"{base:.3f}" if base else "-",
                     f"{t / base:.2f}x" if base else "-", *cells(t, r)])
    for precision, (label, r) in sorted(kept_final.items()):
        if "error" in r:
            rows.append([label, "failed", r["error"][:70], "", "", "", "", "", "", ""])
            status = 1
            continue
        t = common.median(r["times"])
        rows.append([f"{label} (all rounds)", f"{t:.3f}", common.spread(r["times"]),
                     f"fastest {precision}", "-", "1.00x", *cells(t, r)])
    title = (f"Training step, {args.model} "
             f"{'stacks=' + str(args.stacks) + ' ' if args.model in HOURGLASSES else ''}"
             f"batch {args.batch}, input {args.input_size}, crops {args.crop_size}, "
             f"{args.keypoint_set}; medians of {args.repeats} steps after {args.warmup} "
             "warm-up, keras-pose and baseline steps alternating")
    common.print_table(title, header, rows)

    if baseline_results:
        kept_labels = {label for label, _ in kept_final.values()}
        baseline_rows = []
        for label, precision, r in baseline_results:
            if "error" in r:
                baseline_rows.append([label, precision, "failed", r["error"][:70]])
                status = 1
            else:
                mark = " (fastest: kept)" if label in kept_labels else ""
                baseline_rows.append([label + mark, precision,
                                      f"{common.median(r['times'][:args.repeats]):.3f}",
                                      common.spread(r["times"][:args.repeats])])
        common.print_table("Baselines (alternating; the fastest of each precision is kept)",
                           ["configuration", "precision", "s/step", "IQR"], baseline_rows)

    details = []
    for label, _, r, _ in keras_results:
        if "prepare_times" in r:
            details.append([label, r["sampler"],
                            f"{common.median(r['prepare_times']) * 1e3:.1f}",
                            f"{r['last_loss']:.5f}", str(r["finite"]),
                            f"{r['intra']}/{r['inter']}"])
    if details:
        common.print_table("keras-pose step details",
                           ["configuration", "warp sampler", "augment+targets ms (alone)",
                            "last loss", "finite", "TF intra/inter threads (0 = default)"],
                           details)
    notes = list(notes)
    if flops:
        notes.append(f"FLOPs: {flops / 1e9:.2f} GFLOP per example forward (per-layer "
                     f"multiply-adds x 2, conv and dense layers); training step = 3 x forward x "
                     f"batch = {train_flops / 1e9:.1f} GFLOP")
    if peak:
        notes.append(f"matmul: TF float32 {args.matmul_size}^3 = {peak:.1f} GFLOP/s "
                     "(median of 5) on this machine")
    else:
        notes.append(f"matmul: failed ({matmul.get('error')})")
    threads = next((r["threads"] for _, (_, r) in kept_final.items() if "threads" in r), None)
    if threads:
        notes.append(f"baselines: {baselines.versions()}, torch.get_num_threads() = {threads}, "
                     "fed a ready float batch and targets (their data preparation is not timed)")
    common.print_notes(notes, load_before)
    return status


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: ``python -m keras_pose.benchmarks.train --serve JSON``."""
    return worker_main(SERVERS, argv)


if __name__ == "__main__":
    sys.exit(main())
