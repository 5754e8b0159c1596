"""Benchmarks: the PyTorch port is the same network as keras-pose's (parameters, FLOPs, outputs,
loss and gradients with copied weights), FLOP counting, the worker protocol and the CLI."""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_pose.benchmarks import baselines, infer, memory, train
from keras_pose.benchmarks.baselines import Baseline
from keras_pose.benchmarks.workers import Worker, WorkerError, alternate
from keras_pose.models import build_model
from keras_pose.precision import BFLOAT16, FLOAT32, bfloat16_support, read_cpu_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(
    not HAS_TORCH,
    reason="torch is not installed (optional extra: pip install 'keras-pose[bench]')")


def _randomize_batch_norm(model, seed: int = 0) -> None:
    """Non-trivial BN statistics, so that a wrong mapping of them cannot go unnoticed."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape),
                               rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape),
                               rng.uniform(0.5, 1.5, variance.shape)])


# ----------------------------------------------------------------------------------------------
# The PyTorch port


@needs_torch
def test_torch_port_has_newells_parameter_counts():
    from keras_pose.benchmarks import torch_hourglass as th

    # docs/models.md section 3: 352,640 + N * 3,073,808 + (N - 1) * 70,144 at 16 keypoints.
    for stacks in (1, 2, 4):
        expected = 352_640 + stacks * 3_073_808 + (stacks - 1) * 70_144
        assert th.count_parameters(th.StackedHourglass(16, stacks)) == expected
    assert th.count_parameters(th.StackedHourglass(16, 2)) == 6_570_400


@needs_torch
def test_torch_port_matches_the_keras_model_with_copied_weights():
    """The benchmarked network itself (2 stacks, 256 px, 16 keypoints): same parameter count
    and, with the Keras weights copied in, the same heatmaps on the same input."""
    import torch

    from keras_pose.benchmarks import torch_hourglass as th

    keras.utils.set_random_seed(0)
    model = build_model("stacked_hourglass", num_keypoints=16, input_shape=(256, 256, 3),
                        num_stacks=2)
    _randomize_batch_norm(model)
    port = th.from_keras(model).eval()
    keras_params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert th.count_parameters(port) == keras_params == 6_570_400

    images = np.random.default_rng(1).uniform(0, 255, (1, 256, 256, 3)).astype(np.float32)
    expected = [np.asarray(o) for o in model(images, training=False)]
    with torch.inference_mode():
        actual = [o.permute(0, 2, 3, 1).numpy()
                  for o in port(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())]
    assert len(actual) == len(expected) == 2
    for a, e in zip(actual, expected):
        assert a.shape == e.shape == (1, 64, 64, 16)
        assert np.abs(a - e).max() <= 1e-3 * max(1.0, np.abs(e).max())
        assert np.abs(e).max() > 0.1  # not trivially equal


@needs_torch
def test_torch_port_trains_like_the_keras_model():
    """Training mode (batch statistics): the same summed masked loss and the same gradients."""
    import tensorflow as tf
    import torch

    from keras_pose import losses
    from keras_pose.benchmarks import torch_hourglass as th

    keras.utils.set_random_seed(3)
    model = build_model("stacked_hourglass", num_keypoints=4, input_shape=(64, 64, 3),
                        num_stacks=2, num_features=32, depth=2)
    _randomize_batch_norm(model, seed=3)
    port = th.from_keras(model).train()
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    target = rng.uniform(0, 1, (3, 16, 16, 4)).astype(np.float32)
    weights = (rng.uniform(size=(3, 4)) > 0.3).astype(np.float32)

    with tf.GradientTape() as tape:
        outputs = model(images, training=True)
        keras_loss = tf.add_n([losses.heatmap_mse(target, o, weights) for o in outputs])
    layers = {layer.name: layer for layer in model.layers}
    checked = {"stem_conv": port.stem_conv, "stack_1_hg2_low1_res1_conv2":
               port.hourglasses[0].low1[0].conv2, "stack_2": port.heads[1]}
    keras_grads = tape.gradient(keras_loss, [layers[n].kernel for n in checked])

    torch_loss = th.summed_loss(port(torch.from_numpy(images).permute(0, 3, 1, 2)),
                                torch.from_numpy(target).permute(0, 3, 1, 2),
                                torch.from_numpy(weights))
    torch_loss.backward()
    assert float(torch_loss) == pytest.approx(float(keras_loss), rel=1e-4)
    for (name, conv), grad in zip(checked.items(), keras_grads):
        expected = np.asarray(grad).transpose(3, 2, 0, 1)  # HWIO -> OIHW
        actual = conv.weight.grad.numpy()
        # Relative L2 error, the usual gradient-check measure. The stem's gradient comes back
        # through two stacks of training-mode batch norms, whose backward pass subtracts batch
        # means (cancellation): float32 kernels that sum in another order (TensorFlow with one
        # op thread against several) differ by up to ~1.3e-3 there; a wrong weight mapping or
        # formula differs by order 1.
        scale = np.linalg.norm(expected)
        assert scale > 0, name
        assert np.linalg.norm(actual - expected) <= 5e-3 * scale, name


TORCH_FLOPS = """
import torch
from torch.utils.flop_counter import FlopCounterMode
from keras_pose.benchmarks import torch_hourglass as th
port = th.StackedHourglass(16, 2, num_features=64, depth=3).eval()
with FlopCounterMode(display=False) as counter, torch.no_grad():
    port(torch.zeros(1, 3, 128, 128))
print(counter.get_total_flops())
"""


@pytest.mark.slow
@needs_torch
def test_keras_flop_count_matches_torchs_own_counter():
    # Torch's counter in a process without TensorFlow: with PyPI's CUDA torch, importing its
    # triton after TensorFlow crashes the process (torch 2.14, TF 2.21).
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    counted = subprocess.run([sys.executable, "-c", TORCH_FLOPS], capture_output=True,
                             text=True, timeout=300, env={**os.environ, "PYTHONPATH": path})
    assert counted.returncode == 0, counted.stderr[-2000:]
    model = build_model("stacked_hourglass", num_keypoints=16, input_shape=(128, 128, 3),
                        num_stacks=2, num_features=64, depth=3)
    assert train.forward_flops(model) == int(counted.stdout.split()[-1])


# ----------------------------------------------------------------------------------------------
# Benchmark helpers


def test_forward_flops_by_hand():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8*4 outputs x 3*3*3 = 6,912
    y = keras.layers.Conv2D(2, 1, strides=2)(x)  # 4*4*2 outputs x 4 = 128
    z = keras.layers.Conv2DTranspose(3, 2, strides=2)(y)  # 4*4*2 inputs x 2*2 x 3 = 384
    w = keras.layers.Dense(5)(keras.layers.Flatten()(y))  # 32 x 5 = 160
    model = keras.Model(inputs, [z, w])
    assert train.forward_flops(model) == 2 * (6_912 + 128 + 384 + 160)


def test_synthetic_batch_is_reader_like():
    batch = train.synthetic_batch(3, 320, 17, seed=1)
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (3, 320, 320, 3)
    assert batch["keypoints"].shape == (3, 17, 2) and batch["keypoints"].dtype == np.float32
    assert 0.2 * 320 <= batch["keypoints"].min() and batch["keypoints"].max() <= 0.8 * 320
    assert set(np.unique(batch["visibility"])) <= {0, 2}
    np.testing.assert_array_equal(batch["crop_box"][1], [0, 0, 320, 320])


def test_benchmark_pipeline_is_a_valid_pipeline():
    spec = {"model": "stacked_hourglass", "input_size": 256, "options": {"num_stacks": 2},
            "keypoint_set": "mpii16", "crop_size": 320, "augment": True, "batch": 8,
            "jit": False, "precision": "mixed_bfloat16"}
    pipeline = train.benchmark_pipeline(spec)
    pipeline.validate("benchmark")
    assert pipeline.model.options == {"num_stacks": 2}
    assert (pipeline.data.crop_size, pipeline.train.batch_size) == (320, 8)
    assert (pipeline.train.jit_compile, pipeline.train.mixed_precision) == ("false",
                                                                          "mixed_bfloat16")


def test_configs_are_parsed_and_validated():
    assert train.parse_configs("off:float32, on:mixed_bfloat16") == [
        (False, "float32"), (True, "mixed_bfloat16")]
    for bad in ("maybe:float32", "on:float64", ""):
        with pytest.raises(ValueError, match="configs"):
            train.parse_configs(bad)


@pytest.mark.parametrize("module", [train, infer])
def test_all_argv_parses_with_the_subcommand_parser(module):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    args = parser.parse_args(module.all_argv(argparse.Namespace()))
    assert args.model == "stacked_hourglass" and args.stacks == 2
    if module is train:
        assert args.batch == 8
        assert (False, "float32") in train.parse_configs(args.configs)
        assert (True, "float32") in train.parse_configs(args.configs)


def test_memory_runs_are_valid_shortened_pipelines(tmp_path):
    from keras_pose.cli import DEFAULT_PIPELINE
    from keras_pose.pipeline import load_pipeline

    parser = argparse.ArgumentParser()
    memory.add_arguments(parser)
    args = parser.parse_args(["--steps", "40", "--data-dir", str(tmp_path / "data")])
    quick = load_pipeline(DEFAULT_PIPELINE, memory._overrides("quickstart", args, tmp_path))
    main_job = load_pipeline(DEFAULT_PIPELINE)
    # The quickstart run is the main job's pipeline, shortened and pointed at temporary folders.
    assert quick.model == main_job.model and quick.data.crop_size == main_job.data.crop_size
    assert quick.train.batch_size == main_job.train.batch_size == 16
    assert quick.train.epochs * quick.train.steps_per_epoch == 40
    assert quick.data.synthetic.directory == str(tmp_path / "data")
    two = load_pipeline(DEFAULT_PIPELINE, memory._overrides("hourglass2", args, tmp_path))
    assert two.model.options == {"num_stacks": 2, "num_features": 256, "depth": 4}
    assert (two.model.input_size, two.data.crop_size, two.train.batch_size) == (256, 256, 8)


# ----------------------------------------------------------------------------------------------
# Baseline registry and like-for-like tables

ABSENT = "keras_pose_no_such_package"


def _registry():
    """A registry whose first baseline needs a package that is not installed."""
    return (Baseline("absent", "Absent runtime", FLOAT32, (ABSENT,)),
            Baseline("fp32", "Float runtime", FLOAT32, ("numpy",), {"runtime": "torch"}),
            Baseline("bf16", "Bfloat runtime", BFLOAT16, ("numpy",), {"runtime": "torch"}))


def test_select_skips_absent_packages_and_bfloat16_without_cpu_support():
    chosen, notes = baselines.select(_registry(), cpu_flags={"avx2", "avx512f"})
    assert [b.name for b in chosen] == ["fp32"]
    assert notes == [
        f"Absent runtime skipped: {ABSENT} not installed (pip install 'keras-pose[bench]')",
        "Bfloat runtime skipped: this CPU has no bfloat16 instructions (none of amx_bf16, "
        "avx512_bf16 in /proc/cpuinfo)"]
    chosen, notes = baselines.select(_registry(), cpu_flags={"avx512_bf16"})
    assert [b.name for b in chosen] == ["fp32", "bf16"] and len(notes) == 1
    chosen, _ = baselines.select(_registry(), names=["bf16"], cpu_flags={"amx_bf16"})
    assert [b.name for b in chosen] == ["bf16"]
    with pytest.raises(ValueError, match="unknown.*'nope'"):
        baselines.select(_registry(), names=["nope"], cpu_flags=set())


def test_cpu_flags_decide_bfloat16(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU\n"
                       "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16\n\n")
    flags = read_cpu_flags(str(cpuinfo))
    assert {"avx512_bf16", "amx_bf16"} <= flags
    assert bfloat16_support(flags) == "amx_bf16"
    assert bfloat16_support({"avx512f", "avx512_bf16"}) == "avx512_bf16"
    assert bfloat16_support({"avx512f", "avx2"}) is None
    assert read_cpu_flags(str(tmp_path / "missing")) is None
    assert bfloat16_support(None) is None


def test_registries_pair_every_keras_precision_with_a_baseline():
    for registry in (baselines.INFER_BASELINES, baselines.TRAIN_BASELINES):
        assert len({b.name for b in registry}) == len(registry)
        assert {b.precision for b in registry} == {FLOAT32, BFLOAT16}
    assert baselines.precision_of("float32") == FLOAT32
    assert baselines.precision_of("mixed_bfloat16") == BFLOAT16
    assert baselines.precision_of("mixed_float16") == "mixed_float16"  # no CPU baseline


def _infer_args(**overrides):
    parser = argparse.ArgumentParser()
    infer.add_arguments(parser)
    args = parser.parse_args(["--stacks", "1", "--input-size", "64", "--repeats", "3"])
    return argparse.Namespace(**{**vars(args), **overrides})


def test_infer_baselines_absent_package_is_skipped_with_its_reason():
    configs, notes = infer.baseline_configs(_infer_args(), [1, 8], _registry(),
                                            cpu_flags={"avx2"})
    assert [label for label, _ in configs] == ["Float runtime"]
    spec = configs[0][1]
    assert (spec["kind"], spec["runtime"], spec["precision"], spec["batches"]) == (
        "baseline", "torch", FLOAT32, [1, 8])
    assert any(f"{ABSENT} not installed" in note for note in notes)
    configs, notes = infer.baseline_configs(_infer_args(baselines="none"), [1], _registry())
    assert configs == [] and notes == ["baselines skipped (--baselines none)"]


def test_infer_file_export_rows_and_their_skip_notes(monkeypatch):
    base = {"batches": [1]}
    configs, notes = infer.file_export_configs("tflite,onnx", base)
    assert len(configs) + len(notes) == 2  # each a row, or a note saying why not
    assert all(spec["kind"] == "file_export" and spec["batches"] == [1] for _, spec in configs)
    assert [spec["format"] for _, spec in configs] in (["tflite", "onnx"], ["tflite"],
                                                       ["onnx"], [])
    # A missing runtime is a skip note naming the package, not a failed row.
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ai_edge_litert" else real(name, *a))
    configs, notes = infer.file_export_configs("tflite_int8", base)
    assert configs == [] and "ai_edge_litert not installed" in notes[0]
    assert infer.file_export_configs("none", base) == ([], [])
    with pytest.raises(ValueError, match="unknown"):
        infer.file_export_configs("tflite,coreml", base)


def _rows(text: str, first: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("|")[1:-1]]
            for line in text.splitlines() if line.startswith(f"| {first}")]


def test_infer_table_compares_each_row_with_the_fastest_baseline_of_its_precision(capsys):
    ms = 1e-3
    # (label, precision, is baseline, median at batch 1, median at batch 8)
    table = [("keras-pose SavedModel serving_default", FLOAT32, False, 90, 700),
             ("keras-pose tf.function mixed_bfloat16 (network)", BFLOAT16, False, 50, 300),
             ("PyTorch eager NCHW", FLOAT32, True, 120, 650),
             ("ONNX Runtime", FLOAT32, True, 100, 800),
             ("OpenVINO bf16 hint", BFLOAT16, True, 40, 320)]
    configs = [(label, {"precision": p, "baseline": base}) for label, p, base, _, _ in table]
    results = {label: {"named_times": {"1": [t1 * ms] * 3, "8": [t8 * ms] * 3},
                       "peak_rss_mib": 100.0}
               for label, _, _, t1, t8 in table}
    status = infer.report(_infer_args(), [1, 8], configs, results, ["a skip note"],
                          os.getloadavg())
    out = capsys.readouterr().out
    assert status == 0
    # The fastest float32 baseline changes with the batch size; bfloat16 has its own.
    assert "fastest float32 baseline at batch 1: ONNX Runtime, 100.0 ms" in out
    assert "fastest float32 baseline at batch 8: PyTorch eager NCHW, 650.0 ms" in out
    assert "fastest bfloat16 baseline at batch 1: OpenVINO bf16 hint, 40.0 ms" in out
    assert "a skip note" in out
    saved = _rows(out, "keras-pose SavedModel")
    assert [(r[2], r[5]) for r in saved] == [("1", "0.90x"), ("8", "1.08x")]
    bf16 = _rows(out, "keras-pose tf.function mixed_bfloat16")
    assert [(r[2], r[5]) for r in bf16] == [("1", "1.25x"), ("8", "0.94x")]
    assert [r[0] for r in _rows(out, "ONNX Runtime")] == ["ONNX Runtime (fastest baseline)",
                                                          "ONNX Runtime"]
    assert [r[5] for r in _rows(out, "PyTorch eager NCHW")] == ["1.20x", "1.00x"]


def test_infer_names_the_bfloat16_saved_model_ratio_to_openvino(capsys):
    ms = 1e-3
    table = [("keras-pose SavedModel serving_default", FLOAT32, False, 100, 800),
             (infer.SAVED_MODEL_BFLOAT16, BFLOAT16, False, 50, 300),
             ("PyTorch eager bf16", BFLOAT16, True, 30, 400),
             (infer.OPENVINO_BFLOAT16, BFLOAT16, True, 40, 250)]
    configs = [(label, {"precision": p, "baseline": base}) for label, p, base, _, _ in table]
    results = {label: {"named_times": {"1": [t1 * ms] * 3, "8": [t8 * ms] * 3},
                       "peak_rss_mib": 100.0}
               for label, _, _, t1, t8 in table}
    infer.report(_infer_args(), [1, 8], configs, results, [], os.getloadavg())
    out = capsys.readouterr().out
    # Against OpenVINO's bfloat16 row by name, even where another bfloat16 baseline is faster.
    assert ("bfloat16 SavedModel at batch 1: 50.0 ms, float32 SavedModel 100.0 ms (2.00x "
            "faster), OpenVINO bf16 hint 40.0 ms: ratio 1.25x") in out
    assert "bfloat16 SavedModel at batch 8: 300.0 ms, float32 SavedModel 800.0 ms (2.67x " \
           "faster), OpenVINO bf16 hint 250.0 ms: ratio 1.20x" in out
    assert [r[5] for r in _rows(out, infer.SAVED_MODEL_BFLOAT16)] == ["1.67x", "1.20x"]


def test_infer_table_without_baselines_has_no_ratio(capsys):
    configs = [("keras-pose SavedModel serving_default", {"precision": FLOAT32})]
    results = {configs[0][0]: {"named_times": {"1": [0.1, 0.1]}, "peak_rss_mib": 1.0}}
    infer.report(_infer_args(), [1], configs, results, [], os.getloadavg())
    out = capsys.readouterr().out
    assert _rows(out, "keras-pose SavedModel")[0][5] == "-"
    assert "fastest float32 baseline" not in out


def _train_args(**overrides):
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args(["--stacks", "1", "--repeats", "2"])
    return argparse.Namespace(**{**vars(args), **overrides})


def test_train_baseline_phase_skips_absent_packages_without_starting_workers():
    notes, results, kept = train._baseline_phase(
        _train_args(baselines="absent"), 16, _registry(), {FLOAT32})
    assert results == [] and kept == {}
    assert notes[0].startswith(f"Absent runtime skipped: {ABSENT} not installed")
    assert "no float32 baseline runs here" in notes[1]


def test_train_table_compares_like_for_like(capsys):
    def result(times):
        return {"times": times, "peak_rss_mib": 10.0, "params": 1000, "forward_flops": 10**9}

    keras_results = [
        ("keras-pose jit=off float32", "float32", result([2.0, 2.2, 2.4]),
         ("PyTorch torch.compile", [3.0, 3.2, 3.4])),
        ("keras-pose jit=off mixed_bfloat16", "mixed_bfloat16", result([1.0, 1.1, 1.2]),
         ("PyTorch bf16 autocast", [1.3, 1.4, 1.5])),
        ("keras-pose jit=off mixed_float16", "mixed_float16", result([5.0]), None)]
    kept = {FLOAT32: ("PyTorch torch.compile", result([3.0, 3.2, 3.4, 3.1])),
            BFLOAT16: ("PyTorch bf16 autocast", result([1.3, 1.4, 1.5]))}
    all_baselines = [("PyTorch eager NCHW", FLOAT32, result([3.5, 3.6])),
                     ("PyTorch torch.compile", FLOAT32, result([3.0, 3.1])),
                     ("PyTorch bf16 autocast", BFLOAT16, result([1.3, 1.4]))]
    status = train._report(_train_args(batch=8), {"gflops": 100.0}, keras_results,
                           all_baselines, kept, [], os.getloadavg())
    out = capsys.readouterr().out
    assert status == 0
    fp32 = _rows(out, "keras-pose jit=off float32")[0]
    assert fp32[1:6] == ["2.200", fp32[2], "PyTorch torch.compile", "3.200", "0.69x"]
    bf16 = _rows(out, "keras-pose jit=off mixed_bfloat16")[0]
    assert bf16[3:6] == ["PyTorch bf16 autocast", "1.400", "0.79x"]
    assert _rows(out, "keras-pose jit=off mixed_float16")[0][3:6] == ["-", "-", "-"]
    assert _rows(out, "PyTorch torch.compile (all rounds)")[0][3] == "fastest float32"
    assert _rows(out, "PyTorch torch.compile (fastest: kept)")[0][1] == FLOAT32
    assert _rows(out, "PyTorch eager NCHW")[0][2] == "3.550"
    # GFLOP/s: 3 passes x 1 GFLOP x batch 8 / 2.2 s.
    assert float(fp32[6]) == pytest.approx(24 / 2.2, abs=0.05)


@pytest.mark.slow
def test_worker_protocol_alternates_and_reports(tmp_path):
    """A matmul worker (no model): warm-up, timed steps on request, final statistics."""
    spec = {"kind": "matmul", "size": 64, "repeats": 2}
    worker = Worker("keras_pose.benchmarks.train", spec, timeout=120)
    try:
        worker.wait_ready()
        alternate([worker], rounds=3, pause=0)
        result = worker.finish()
    finally:
        worker.close()
    assert len(result["times"]) == 3 and all(t >= 0 for t in result["times"])
    assert result["gflops"] > 0 and len(result["times"]) == 3


def test_worker_failure_is_reported_not_hung():
    worker = Worker("keras_pose.benchmarks.train", {"kind": "no-such-kind"}, timeout=120)
    with pytest.raises(WorkerError, match="exit"):
        worker.wait_ready()
    worker.close()


def _run_benchmark(args, timeout=600):
    # This checkout's keras_pose, whatever an editable install points at.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path}
    return subprocess.run([sys.executable, str(REPO / "tools" / "benchmark.py"), *args],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=str(REPO))


@pytest.mark.slow
def test_train_benchmark_prints_its_table():
    result = _run_benchmark(["train", "--stacks", "1", "--batch", "2", "--input-size", "64",
                             "--crop-size", "80", "--repeats", "2", "--warmup", "1",
                             "--configs", "off:float32", "--matmul-size", "256",
                             "--baselines", "torch-channels-last"])
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Training step, stacked_hourglass stacks=1 batch 2" in out
    assert "keras-pose jit=off float32" in out and "peak RSS MiB" in out
    if HAS_TORCH:
        assert "PyTorch eager channels_last (all rounds)" in out
        row = next(line for line in out.splitlines()
                   if line.startswith("| keras-pose jit=off float32 "))
        cells = [cell.strip() for cell in row.split("|")]
        assert cells[4] == "PyTorch eager channels_last"
        assert cells[6].endswith("x") and float(cells[6][:-1]) == pytest.approx(
            float(cells[2]) / float(cells[5]), rel=0.02, abs=0.006)  # all printed rounded
    else:
        assert "PyTorch eager channels_last skipped: torch not installed" in out


@pytest.mark.slow
def test_infer_benchmark_prints_its_table():
    result = _run_benchmark(["infer", "--stacks", "1", "--input-size", "64", "--repeats", "2",
                             "--warmup", "1", "--batches", "1,2", "--jit", "off",
                             "--bfloat16", "off", "--baselines", "torch-nchw",
                             "--formats", "tflite"])
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "keras-pose SavedModel serving_default" in out
    rows = [line for line in out.splitlines() if line.startswith("| keras-pose SavedModel")]
    assert len(rows) == 2  # batch 1 and batch 2
    if importlib.util.find_spec("ai_edge_litert") is not None:
        assert len(_rows(out, "keras-pose TFLite float32")) == 2
    if HAS_TORCH:
        assert "PyTorch eager NCHW (fastest baseline)" in out
        assert "fastest float32 baseline at batch 2: PyTorch eager NCHW" in out
    else:
        assert "PyTorch eager NCHW skipped: torch not installed" in out


@pytest.mark.slow
def test_memory_benchmark_reports_the_runs_peak(tmp_path):
    result = _run_benchmark(["memory", "--runs", "quickstart", "--steps", "2",
                             "--data-dir", str(tmp_path / "data"),
                             "--set", "data.synthetic.num_train_images=24",
                             "--set", "data.synthetic.num_val_images=6"])
    assert result.returncode == 0, result.stderr[-3000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| quickstart "))
    cells = [cell.strip() for cell in row.split("|")]
    assert cells[3:6] == ["128", "16", "2"]
    assert 200 < float(cells[6].replace(",", "")) < 16_000  # MiB; TensorFlow alone is ~500
    assert "(made the data)" in cells[7]
    # The training-alone peak (noted at the first validation) is at most the run's.
    training = int(re.search(r"training alone ([\d,]+) MiB", cells[7]).group(1).replace(",", ""))
    assert 200 < training <= float(cells[6].replace(",", ""))

