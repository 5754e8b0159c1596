"""Inference: a keras-pose SavedModel's latency (batch 1) and throughput (batch 8) vs CPU runtimes.

keras-pose side: the network exported with ``keras_pose.export.save_saved_model`` (the graph TF
Serving runs: crop and resize of the uint8 image, the network, heatmap decoding, the map back
to image pixels), loaded with ``tf.saved_model.load`` and called through ``serving_default`` on
uint8 images of the network's input size. Also the bare network in-process as a
``tf.function`` with XLA off and on (float32 input, final heatmaps out), and under the
``mixed_bfloat16`` policy where the CPU has bfloat16 instructions; there also the SavedModel
exported with ``precision="bfloat16"`` (the network in bfloat16, the rest as in float32),
compared by name with OpenVINO's bfloat16 row (the issue's bound: within 1.2x of it). And the
same network exported with ``tools/export.py --format`` (``keras_pose.export.formats``: TFLite
float32 and int8 on the LiteRT interpreter, ONNX on ONNX Runtime), timed through
``export.load_predictor`` on the same uint8 images as the SavedModel row (the host crops and
decodes with the SavedModel's code; only the network runs in the file's runtime); int8 is
calibrated on the random benchmark crops, which sets its speed, not its accuracy
(``tests/test_export_formats.py`` checks that).

Baselines (``baselines.INFER_BASELINES``; each optional, skipped with a printed reason when its
package is absent): the PyTorch port (``torch_hourglass.py``) in eager mode (NCHW and
channels_last) and through ``torch.compile``, all under ``torch.inference_mode()``; ONNX
Runtime on the port's ``torch.onnx.export`` (all graph optimizations); OpenVINO on the port
with the float32 and the bfloat16 inference-precision hints (its default on a bfloat16 CPU is
bfloat16). Float32 input, network only (no resize, no decoding), every runtime on all cores.
Each row is compared with the fastest baseline of its own precision at that batch size, and
the table names that baseline.

Each configuration runs in its own process; calls are timed in alternation across processes
(``workers.py``), so load drifts into every configuration alike.

Example: ``python tools/benchmark.py infer --model stacked_hourglass --stacks 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from keras_pose.benchmarks import baselines, common
from keras_pose.benchmarks.train import (
    HOURGLASSES,
    MODELS,
    configure_tf_threads,
    forward_flops,
    model_options,
    torch_threads,
)
from keras_pose.benchmarks.workers import Worker, WorkerError, alternate, serve, worker_main
from keras_pose.precision import BFLOAT16, FLOAT32, bfloat16_support, read_cpu_flags
from keras_pose.resources import peak_rss_mib

MODULE = "keras_pose.benchmarks.infer"
SAVED_MODEL_BFLOAT16 = "keras-pose SavedModel serving_default bfloat16"
# The like-for-like row of the bfloat16 SavedModel (issue 15: within 1.2x of it).
OPENVINO_BFLOAT16 = next(b.label for b in baselines.INFER_BASELINES if b.name == "openvino-bf16")


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

        export.save_saved_model(network, path, keypoint_set=keypoint_set,
                                precision=spec.get("export_precision", FLOAT32))
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
    import keras
    import tensorflow as tf

    keras.mixed_precision.set_global_policy(spec.get("policy", "float32"))
    network, _ = _build_network(spec)

    @tf.function(jit_compile=spec["jit"], reduce_retracing=True)
    def predict(images):
        outputs = network(images, training=False)
        final = outputs[-1] if isinstance(outputs, (list, tuple)) else outputs
        return tf.cast(final, tf.float32)

    inputs = {b: tf.constant(_images(b, spec["input_size"])) for b in spec["batches"]}
    steps = {str(b): (lambda b=b: predict(inputs[b]).numpy()) for b in spec["batches"]}
    serve(steps, spec["warmup"], {}, lambda: {"peak_rss_mib": peak_rss_mib()})


class _LastStack:
    """Wraps the port so exporters see one output: the last stack's heatmaps."""

    def __new__(cls, model):
        import torch

        class LastStack(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, images):
                return self.inner(images)[-1]

        return LastStack(model).eval()


def _torch_steps(model, arrays: dict, spec: dict) -> dict:
    import torch

    inputs = {b: torch.from_numpy(x) for b, x in arrays.items()}
    if spec.get("layout") == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        inputs = {b: x.contiguous(memory_format=torch.channels_last) for b, x in inputs.items()}
    if spec.get("compile"):
        model = torch.compile(model)

    def make_step(batch):
        def step():
            with torch.inference_mode():
                return model(inputs[batch]).numpy()
        return step

    return {str(b): make_step(b) for b in arrays}


def _onnxruntime_steps(model, arrays: dict, spec: dict, directory: str) -> dict:
    import onnxruntime as ort
    import torch

    path = os.path.join(directory, "hourglass.onnx")
    size = spec["input_size"]
    # The TorchScript exporter (dynamo=False): the dynamo one needs onnxscript besides onnx.
    torch.onnx.export(model, (torch.zeros(1, 3, size, size),), path, input_names=["images"],
                      output_names=["heatmaps"], dynamic_axes={"images": {0: "batch"}},
                      dynamo=False)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = torch_threads()
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return {str(b): (lambda x=x: session.run(None, {"images": x})[0]) for b, x in arrays.items()}


def _openvino_steps(model, arrays: dict, spec: dict) -> dict:
    import openvino as ov
    import torch

    size = spec["input_size"]
    converted = ov.convert_model(model, example_input=torch.zeros(1, 3, size, size))
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": spec["hint"], "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": torch_threads()}
    steps = {}
    for batch, x in arrays.items():
        shaped = converted.clone()
        shaped.reshape([batch, 3, size, size])  # static shapes: OpenVINO's fastest plan
        request = core.compile_model(shaped, "CPU", config).create_infer_request()

        def step(request=request, x=x):
            request.infer({0: x})
            return request.get_output_tensor(0).data
        steps[str(batch)] = step
    return steps


def serve_baseline(spec: dict) -> None:
    """The PyTorch port through one baseline runtime (``spec["runtime"]``), float32 input."""
    import tempfile

    import numpy as np
    import torch

    from keras_pose.benchmarks import torch_hourglass as th

    torch.set_num_threads(torch_threads())
    torch.manual_seed(0)
    model = _LastStack(th.StackedHourglass(spec["num_keypoints"], spec["stacks"]))
    arrays = {b: _images(b, spec["input_size"], channels_first=True) for b in spec["batches"]}
    with torch.inference_mode():
        reference = model(torch.from_numpy(arrays[spec["batches"][0]])).numpy()
    directory = tempfile.mkdtemp(prefix="keras_pose_bench_")
    runtime = spec["runtime"]
    if runtime == "torch":
        steps = _torch_steps(model, arrays, spec)
    elif runtime == "onnxruntime":
        steps = _onnxruntime_steps(model, arrays, spec, directory)
    elif runtime == "openvino":
        steps = _openvino_steps(model, arrays, spec)
    else:
        raise ValueError(f"unknown baseline runtime {runtime!r}")
    # The same heatmaps as eager PyTorch (float32 rounding; bfloat16 keeps ~3 digits).
    output = np.asarray(steps[str(spec["batches"][0])](), np.float32)
    meta = {"threads": torch_threads(), "params": th.count_parameters(model),
            "max_abs_diff": float(np.abs(output - reference).max()),
            "reference_scale": float(np.abs(reference).max())}
    serve(steps, spec["warmup"], meta, lambda: {"peak_rss_mib": peak_rss_mib()})


def serve_file_export(spec: dict) -> None:
    """``export.load_predictor`` on a TFLite or ONNX export (``spec["format"]``, ``"quantize"``)
    of the network, uint8 images as the SavedModel row; the file is written here."""
    configure_tf_threads(spec.get("intra", 0), spec.get("inter", 0))
    import tempfile

    import numpy as np

    from keras_pose import export
    from keras_pose.export import formats

    network, keypoint_set = _build_network(spec)
    size, quantize = spec["input_size"], spec.get("quantize")
    directory = tempfile.mkdtemp(prefix="keras_pose_bench_")
    serving = export.ServingFunctions(network, keypoint_set=keypoint_set)
    if spec["format"] == formats.TFLITE:
        calibration = ([crop[None] for crop in _images(16, size)] if quantize == "int8"
                       else None)
        data = formats.convert_tflite(serving, quantize, calibration)
    else:
        data = formats.convert_onnx(serving)
    path = os.path.join(directory, formats.MODEL_FILES[spec["format"]])
    with open(path, "wb") as file:
        file.write(data)
    info = formats.file_metadata(network, keypoint_set, export.DEFAULT_MARGIN, False, None,
                                 spec["format"], quantize)
    with open(os.path.join(directory, export.METADATA_FILE), "w") as file:
        file.write(json.dumps(info))
    predictor = export.load_predictor(path)
    inputs = {b: _images(b, size, dtype="uint8") for b in spec["batches"]}
    # The network's heatmaps in the file against the folded Keras network's (float rounding;
    # int8 shows its quantization error).
    crops = _images(spec["batches"][0], size)
    reference = np.asarray(serving._final(crops))
    output = formats.NETWORKS[spec["format"]](path)(crops)
    meta = {"file_bytes": len(data), "max_abs_diff": float(np.abs(output - reference).max()),
            "reference_scale": float(np.abs(reference).max())}
    steps = {str(b): (lambda b=b: predictor.predict(inputs[b])["keypoints"])
             for b in spec["batches"]}
    serve(steps, spec["warmup"], meta, lambda: {"peak_rss_mib": peak_rss_mib()})


SERVERS = {"saved_model": serve_saved_model, "keras": serve_keras_function,
           "baseline": serve_baseline, "file_export": serve_file_export}

# --formats: (label, format, quantize, precision, the packages it needs).
FILE_EXPORTS = {
    "tflite": ("keras-pose TFLite float32 (LiteRT, Predictor)", "tflite", None, FLOAT32,
               ("ai_edge_litert",)),
    "tflite_dynamic": ("keras-pose TFLite dynamic int8 (LiteRT, Predictor)", "tflite",
                       "dynamic", "int8", ("ai_edge_litert",)),
    "tflite_int8": ("keras-pose TFLite int8 (LiteRT, Predictor)", "tflite", "int8", "int8",
                    ("ai_edge_litert",)),
    "onnx": ("keras-pose ONNX (ONNX Runtime, Predictor)", "onnx", None, FLOAT32,
             ("tf2onnx", "onnxruntime")),
}


def file_export_configs(names: str, base: dict) -> tuple[list[tuple[str, dict]], list[str]]:
    """``[(label, worker spec)]`` of the ``--formats`` rows whose packages are installed, and
    the skip notes of the others."""
    import importlib.util

    if names.strip() == "none":
        return [], []
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in FILE_EXPORTS]
    if unknown:
        raise ValueError(f"--formats: unknown {unknown}; names: {', '.join(FILE_EXPORTS)}")
    configs, notes = [], []
    for name in chosen:
        label, file_format, quantize, precision, packages = FILE_EXPORTS[name]
        missing = [p for p in packages if importlib.util.find_spec(p) is None]
        if missing:
            notes.append(f"{label} skipped: {', '.join(missing)} not installed "
                         "(pip install 'keras-pose[export]')")
            continue
        configs.append((label, {**base, "kind": "file_export", "format": file_format,
                                "quantize": quantize, "precision": precision}))
    return configs, notes


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
    parser.add_argument("--bfloat16", default="auto", choices=("auto", "off"),
                        help="auto: also time the bare network under mixed_bfloat16 where the "
                             "CPU has bfloat16 instructions")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per batch size")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--intra-threads", type=int, default=0)
    parser.add_argument("--inter-threads", type=int, default=0)
    parser.add_argument("--baselines", default="all",
                        help="comma-separated names, 'all' or 'none'; names: "
                             + ", ".join(b.name for b in baselines.INFER_BASELINES))
    parser.add_argument("--formats", default="tflite,tflite_dynamic,tflite_int8,onnx",
                        help="exported files to time through the Predictor, comma-separated, "
                             "or 'none'; names: " + ", ".join(FILE_EXPORTS))
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


def baseline_configs(args: argparse.Namespace, batches: list[int],
                     registry=baselines.INFER_BASELINES, cpu_flags=None
                     ) -> tuple[list[tuple[str, dict]], list[str]]:
    """``[(label, worker spec)]`` of the baselines that run here, and the skip notes."""
    if args.baselines.strip() == "none":
        return [], ["baselines skipped (--baselines none)"]
    chosen, notes = baselines.select(registry, baselines.parse_names(args.baselines),
                                     cpu_flags)
    if args.model != "stacked_hourglass":
        return [], [f"no PyTorch port of {args.model}: baselines skipped"]
    from keras_pose.keypoints import get_keypoint_set

    num_keypoints = get_keypoint_set(args.keypoint_set).num_keypoints
    configs = [(b.label, {**b.spec, "kind": "baseline", "precision": b.precision,
                          "baseline": True, "num_keypoints": num_keypoints,
                          "stacks": args.stacks, "input_size": args.input_size,
                          "batches": batches, "warmup": args.warmup}) for b in chosen]
    return configs, notes


def run(args: argparse.Namespace, registry=baselines.INFER_BASELINES) -> int:
    """Measure and print the inference table; 1 if a configuration failed.

    ``registry``: the candidate baselines (:mod:`keras_pose.benchmarks.baselines`).
    """
    try:
        batches = _batches(args.batches)
        if args.repeats < 1 or args.warmup < 0:
            raise ValueError("--repeats must be >= 1 and --warmup >= 0")
        configs, skip_notes = [], []
        base = {"model": args.model, "options": model_options(args.model, args.stacks),
                "keypoint_set": args.keypoint_set, "input_size": args.input_size,
                "batches": batches, "warmup": args.warmup,
                "intra": args.intra_threads, "inter": args.inter_threads}
        configs.append(("keras-pose SavedModel serving_default",
                        {**base, "kind": "saved_model", "precision": FLOAT32}))
        jits = {"both": (False, True), "on": (True,), "off": (False,), "none": ()}[args.jit]
        for jit in jits:
            configs.append((f"keras-pose tf.function jit={'on' if jit else 'off'} (network)",
                            {**base, "kind": "keras", "jit": jit, "precision": FLOAT32}))
        flags = read_cpu_flags()
        if args.bfloat16 == "auto":
            if bfloat16_support(flags):
                configs.append((SAVED_MODEL_BFLOAT16,
                                {**base, "kind": "saved_model", "precision": BFLOAT16,
                                 "export_precision": BFLOAT16}))
                configs.append(("keras-pose tf.function mixed_bfloat16 (network)",
                                {**base, "kind": "keras", "jit": False, "precision": BFLOAT16,
                                 "policy": "mixed_bfloat16"}))
            else:
                skip_notes.append("keras-pose bfloat16 SavedModel and mixed_bfloat16 skipped: "
                                  "this CPU has no bfloat16 instructions")
        extra, notes = file_export_configs(args.formats, base)
        configs += extra
        skip_notes += notes
        extra, notes = baseline_configs(args, batches, registry, flags)
        configs += extra
        skip_notes += notes
    except ValueError as error:
        print(f"benchmark infer: {error}", file=sys.stderr)
        return 2
    print(f"benchmark infer: {common.machine_description()}", flush=True)
    for note in skip_notes:
        print(f"  {note}", flush=True)
    load_before = os.getloadavg()

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
    return report(args, batches, configs, results, skip_notes, load_before)


def fastest_baselines(batch: int, configs, results) -> dict[str, tuple[str, float]]:
    """``{precision: (label, median seconds)}`` of the fastest baseline at ``batch``."""
    medians = {label: (spec["precision"], common.median(results[label]["named_times"][str(batch)]))
               for label, spec in configs
               if spec.get("baseline") and "named_times" in results.get(label, {})}
    return baselines.fastest(medians)


def report(args, batches, configs, results, notes, load_before) -> int:
    """Print the table (each row against the fastest baseline of its precision); 1 on failure."""
    status = 0
    flops = next((r["forward_flops"] for r in results.values() if "forward_flops" in r), None)
    title = (f"Inference, {args.model} "
             f"{'stacks=' + str(args.stacks) + ' ' if args.model in HOURGLASSES else ''}"
             f"input {args.input_size}, {args.keypoint_set}; medians of {args.repeats} calls "
             f"after {args.warmup} warm-up, configurations alternating")
    header = ["configuration", "precision", "batch", "ms/call", "IQR",
              "vs fastest baseline (same precision)", "images/s", "GFLOP/s", "peak RSS MiB"]
    rows, summary = [], []
    for batch in batches:
        key = str(batch)
        best = fastest_baselines(batch, configs, results)
        for precision, (label, seconds) in sorted(best.items()):
            summary.append(f"fastest {precision} baseline at batch {batch}: {label}, "
                           f"{seconds * 1e3:.1f} ms")
        for label, spec in configs:
            r = results.get(label, {"error": "not run"})
            precision = spec["precision"]
            if "error" in r:
                rows.append([label, precision, batch, "failed", r["error"][:60], "", "", "", ""])
                status = 1
                continue
            t = common.median(r["named_times"][key])
            fastest = best.get(precision)
            suffix = " (fastest baseline)" if fastest and fastest[0] == label else ""
            ratio = f"{t / fastest[1]:.2f}x" if fastest else "-"
            rows.append([label + suffix, precision, batch, f"{t * 1e3:.1f}",
                         common.spread(r["named_times"][key]), ratio, f"{batch / t:.2f}",
                         f"{flops * batch / t / 1e9:.1f}" if flops else "-",
                         f"{r['peak_rss_mib']:.0f}"])
    common.print_table(title, header, rows)
    saved = results.get(configs[0][0], {})
    notes = [*summary, *notes]
    if "exporter" in saved:
        notes.append(f"SavedModel written by {saved['exporter']}; outputs {saved['outputs']}; "
                     f"it also resizes the uint8 input and decodes keypoints, which the "
                     f"baselines do not")
    notes += bfloat16_ratio_notes(batches, results)
    if flops:
        notes.append(f"FLOPs: {flops / 1e9:.2f} GFLOP per image (per-layer multiply-adds x 2)")
    for label, spec in configs:
        r = results.get(label, {})
        if spec.get("kind") == "file_export" and "max_abs_diff" in r:
            notes.append(f"{label}: {r['file_bytes'] / 1e6:.2f} MB file, max |heatmap - Keras| "
                         f"= {r['max_abs_diff']:.2g} (heatmaps up to "
                         f"{r['reference_scale']:.2g})")
        if spec.get("baseline") and "max_abs_diff" in r:
            notes.append(f"{label}: max |heatmap - eager PyTorch| = {r['max_abs_diff']:.2g} "
                         f"(heatmaps up to {r['reference_scale']:.2g}), {r['threads']} threads")
    if any(spec.get("baseline") for _, spec in configs):
        notes.append(f"baselines: {baselines.versions()}")
    common.print_notes(notes, load_before)
    return status


def bfloat16_ratio_notes(batches, results) -> list[str]:
    """The bfloat16 SavedModel against OpenVINO's bfloat16 row and the float32 SavedModel."""
    ours, openvino = results.get(SAVED_MODEL_BFLOAT16, {}), results.get(OPENVINO_BFLOAT16, {})
    float32 = results.get("keras-pose SavedModel serving_default", {})
    notes = []
    for batch in batches:
        key = str(batch)
        if key not in ours.get("named_times", {}):
            continue
        mine = common.median(ours["named_times"][key])
        parts = [f"bfloat16 SavedModel at batch {batch}: {mine * 1e3:.1f} ms"]
        if key in float32.get("named_times", {}):
            f32 = common.median(float32["named_times"][key])
            parts.append(f"float32 SavedModel {f32 * 1e3:.1f} ms ({f32 / mine:.2f}x faster)")
        if key in openvino.get("named_times", {}):
            theirs = common.median(openvino["named_times"][key])
            parts.append(f"{OPENVINO_BFLOAT16} {theirs * 1e3:.1f} ms: ratio "
                         f"{mine / theirs:.2f}x (target <= 1.2x; the SavedModel also crops and "
                         "decodes)")
        notes.append(", ".join(parts))
    return notes


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: ``python -m keras_pose.benchmarks.infer --serve JSON``."""
    return worker_main(SERVERS, argv)


if __name__ == "__main__":
    sys.exit(main())
