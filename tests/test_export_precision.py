"""bfloat16 serving exports: the hardware check, the bfloat16 graph against the float32 one, and
the export's PCK check on held-out records (both scores printed, a large drop refused)."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from keras_pose import export, metrics
from keras_pose.cli import export_main
from keras_pose.data.dataset import make_dataset
from keras_pose.keypoints import COCO17
from keras_pose.models.fold import cast_network
from keras_pose.precision import (
    BFLOAT16,
    FLOAT32,
    PrecisionError,
    bfloat16_hardware,
    check_precision,
    read_cpu_flags,
)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from test_export import ENV, SAVED_MODEL_CLI, _image  # noqa: E402
from tiny_pose import ConstantCoordinatePose, TinyCoordinatePose, TinyHeatmapPose  # noqa: E402

HARDWARE = bfloat16_hardware()
needs_bfloat16 = pytest.mark.skipif(HARDWARE is None,
                                    reason="no bfloat16 hardware (AMX/AVX512-BF16 or GPU >= 8.0)")
CPUINFO = """processor\t: 0
model name\t: Some CPU
flags\t\t: fpu sse2 avx2 avx512f {extra}
"""


def _cpu_flags(tmp_path, extra: str):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(extra=extra))
    return read_cpu_flags(str(path))


def test_bfloat16_needs_bfloat16_hardware(tmp_path):
    plain = _cpu_flags(tmp_path, "avx512_vnni")
    with pytest.raises(PrecisionError, match=r"amx_bf16, avx512_bf16.*export float32"):
        check_precision(BFLOAT16, cpu_flags=plain, gpus=[])
    with pytest.raises(PrecisionError, match="compute capability 8.0"):
        check_precision(BFLOAT16, cpu_flags=plain, gpus=[(7, 5)])  # a T4: no bfloat16 units
    assert check_precision(BFLOAT16, cpu_flags=plain, gpus=[(7, 5), (8, 6)]) == "GPU 8.6"
    assert check_precision(BFLOAT16, cpu_flags=_cpu_flags(tmp_path, "avx512_bf16"),
                           gpus=[]) == "avx512_bf16"
    assert check_precision(BFLOAT16, cpu_flags=_cpu_flags(tmp_path, "amx_bf16 amx_tile"),
                           gpus=[]) == "amx_bf16"
    assert check_precision(FLOAT32, cpu_flags=plain, gpus=[]) is None
    with pytest.raises(PrecisionError, match="float32, bfloat16"):
        check_precision("float16", cpu_flags=plain, gpus=[])


def test_cast_network_copies_the_weights_in_bfloat16():
    model = TinyHeatmapPose(num_keypoints=5, input_size=32, seed=3)
    copy = cast_network(model, "bfloat16")
    for layer in model.layers:
        for original, cast in zip(layer.weights, copy.get_layer(layer.name).weights):
            assert (original.dtype, cast.dtype) == ("float32", "bfloat16")
            np.testing.assert_array_equal(_bfloat16(original.numpy()),
                                          np.asarray(cast.numpy(), np.float64))
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    expected = np.asarray(model(images)[-1])
    output = copy(images)[-1]
    assert output.dtype == "bfloat16"
    # Two convs in bfloat16 (8 significant bits): within 2% of the output's range.
    error = np.abs(np.asarray(tf.cast(output, tf.float32)) - expected)
    assert error.max() < 0.02 * np.abs(expected).max()


@pytest.mark.skipif(HARDWARE is not None, reason="this machine has bfloat16 hardware")
def test_bfloat16_export_refused_without_hardware(tmp_path, capsys):
    model_file = tmp_path / "tiny.keras"
    TinyHeatmapPose(num_keypoints=17, input_size=32).save(model_file)
    status = export_main(["--model", str(model_file), "--name", "tiny", "--base",
                          str(tmp_path / "base"), "--precision", "bfloat16"])
    assert status == 2 and "bfloat16 needs a CPU with bfloat16" in capsys.readouterr().err
    assert not (tmp_path / "base").exists()


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """float32 and bfloat16 exports of a tiny heatmap and a tiny coordinate model."""
    base = tmp_path_factory.mktemp("saved_models")
    heatmap = TinyHeatmapPose(num_keypoints=17, input_size=64, seed=1)
    coordinate = TinyCoordinatePose(num_keypoints=17, input_size=(64, 48), seed=2)
    paths = {}
    for name, model in (("heatmap", heatmap), ("coordinate", coordinate)):
        for precision in (FLOAT32, BFLOAT16):
            paths[name, precision] = export.export_saved_model(
                model, name=name, base=base, keypoint_set="coco17", precision=precision,
                update_config=False)
    return paths


def _conv_dtypes(path) -> set[str]:
    """The dtypes the SavedModel's Conv2D ops compute in."""
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((path / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    return {tf.dtypes.as_dtype(n.attr["T"].type).name for n in nodes if n.op == "Conv2D"}


@pytest.mark.slow  # two saved_model_cli processes: ~20 s on 2 busy cores
@needs_bfloat16
def test_bfloat16_export_signatures_metadata_and_graph(exports):
    f32, bf16 = exports["heatmap", FLOAT32], exports["heatmap", BFLOAT16]
    shown = {}
    for path in (f32, bf16):
        text = subprocess.run([*SAVED_MODEL_CLI, "show", "--dir", str(path), "--all"],
                              capture_output=True, text=True, env=ENV, check=True).stdout
        # Without the line listing the graph's ops (a Python set: its order varies).
        shown[path] = [line for line in text.splitlines()
                       if "contains the following ops" not in line]
    # The same signatures, inputs and float32 outputs: clients cannot tell the two apart.
    assert shown[f32] == shown[bf16]
    assert "outputs['keypoints'] tensor_info:\n        dtype: DT_FLOAT" in "\n".join(shown[bf16])
    info = json.loads((bf16 / "assets.extra" / export.METADATA_FILE).read_text())
    assert info["precision"] == "bfloat16"
    assert json.loads((f32 / "assets.extra" / export.METADATA_FILE).read_text())[
        "precision"] == "float32"
    # The network really computes in bfloat16 (and the float32 export does not).
    assert _conv_dtypes(bf16) == {"bfloat16"}
    assert _conv_dtypes(f32) == {"float32"}


@needs_bfloat16
def test_bfloat16_keypoints_close_to_float32(exports):
    images = np.stack([_image(120, 90, seed=seed) for seed in range(4)])
    side = 1.25 * 120  # the crop of the whole image (margin x its larger side)
    for name, input_width in (("heatmap", 64), ("coordinate", 48)):
        outputs = {}
        for precision in (FLOAT32, BFLOAT16):
            predictor = export.load_predictor(exports[name, precision])
            outputs[precision] = predictor.predict(images)
            assert outputs[precision]["keypoints"].dtype == np.float32
            assert outputs[precision]["scores"].dtype == np.float32
        error = np.abs(outputs[FLOAT32]["keypoints"] - outputs[BFLOAT16]["keypoints"])
        if name == "heatmap":
            # bfloat16 moves the heatmap values by ~0.4% (8 significant bits): a keypoint
            # changes only where the argmax or the quarter-pixel neighbour comparison flips,
            # which for these images it nowhere does (measured: identical keypoints).
            np.testing.assert_array_equal(error, 0.0)
        else:
            # Regressed coordinates carry bfloat16's rounding (2^-8 relative) accumulated over
            # the dense layer's sum: 1% of the crop side bounds it (measured: 0.6%).
            assert error.max() < 0.01 * side
            assert error.max() > 0.0  # it did compute in bfloat16
            assert error.max() < side / input_width  # and stays within an input pixel


# -- the PCK check of the export ---------------------------------------------------------------


@pytest.fixture(scope="module")
def records(coco_sample, tmp_path_factory):
    from keras_pose.data.convert import convert_coco

    out = tmp_path_factory.mktemp("records")
    convert_coco(coco_sample / "person_keypoints_sample.json", coco_sample / "images", out, "val",
                 shards=1, workers=0, crop_size=64, progress=False, log=lambda message: None)
    pattern = str(out / "val-*.tfrecord")
    batches = list(make_dataset(pattern, batch_size=64, num_keypoints=17, training=False,
                                deterministic=True))
    fields = {key: np.concatenate([np.asarray(b[key]) for b in batches])
              for key in ("keypoints", "image_keypoints", "visibility", "crop_box")}
    return pattern, fields


def _pck(offsets, fields) -> float:
    """PCK@0.2 torso of a network that always predicts ``offsets`` (normalized, +-0.5)."""
    crop_box = fields["crop_box"].astype(np.float64)
    predicted = crop_box[:, None, 0:2] + (offsets[None] + 0.5) * crop_box[:, None, 2:4]
    gt, visibility = fields["image_keypoints"].astype(np.float64), fields["visibility"]
    return metrics.pck(predicted, gt, visibility, metrics.torso_sizes(gt, visibility, COCO17),
                       0.2).overall


def _bfloat16(values) -> np.ndarray:
    return tf.cast(tf.cast(np.asarray(values, np.float32), tf.bfloat16), tf.float64).numpy()


def _mean_offsets(fields) -> np.ndarray:
    """The mean labeled pose, normalized: a constant network with a non-trivial PCK."""
    normalized = fields["keypoints"] / 64.0 - 0.5
    labeled = (fields["visibility"] > 0)[..., None]
    mean = (normalized * labeled).sum(0) / np.maximum(labeled.sum(0), 1)
    return np.where(labeled.sum(0) > 0, mean, 0.0)


def _printed_pcks(out: str) -> tuple[float, float, float]:
    match = re.search(r"float32 ([\d.]+), bfloat16 ([\d.]+), change ([+-][\d.]+) points", out)
    assert match, out
    return tuple(float(v) for v in match.groups())


@needs_bfloat16
def test_export_prints_both_pcks_and_writes(records, tmp_path, capsys):
    pattern, fields = records
    offsets = _mean_offsets(fields)
    model_file = tmp_path / "constant.keras"
    ConstantCoordinatePose(offsets, input_size=(40, 40)).save(model_file)
    base = tmp_path / "base"
    status = export_main(["--model", str(model_file), "--name", "constant", "--base", str(base),
                          "--precision", "bfloat16", "--records", pattern, "--no-config"])
    out = capsys.readouterr().out
    assert status == 0, out
    f32, bf16, change = _printed_pcks(out)
    # The constant network's keypoints are known: its offsets, and in bfloat16 the offsets
    # rounded to bfloat16 (a zero kernel adds nothing); PCK scored here independently.
    expected_f32, expected_bf16 = _pck(offsets, fields), _pck(_bfloat16(offsets), fields)
    assert 0.1 < expected_f32 < 0.9  # a PCK that rounding could move
    assert f32 == pytest.approx(100 * expected_f32, abs=0.006)
    assert bf16 == pytest.approx(100 * expected_bf16, abs=0.006)
    assert change == pytest.approx(bf16 - f32, abs=0.011)
    assert f"on {len(fields['crop_box'])} persons" in out
    info = json.loads((base / "constant" / "1" / "assets.extra" / export.METADATA_FILE)
                      .read_text())
    assert info["precision"] == "bfloat16"


@needs_bfloat16
def test_export_refuses_a_large_pck_drop(records, tmp_path, capsys):
    pattern, fields = records
    offsets = _mean_offsets(fields)
    # offsets + 1000 - 1000: in bfloat16 (steps of 4 near 1000) every offset rounds to 0.
    shift = 1000.0
    model_file = tmp_path / "cancelling.keras"
    ConstantCoordinatePose(offsets, input_size=(40, 40), shift=shift).save(model_file)
    expected_drop = 100 * (_pck(offsets, fields) - _pck(_bfloat16(offsets + shift) - shift,
                                                         fields))
    assert expected_drop > 0.5
    base = tmp_path / "base"
    argv = ["--model", str(model_file), "--name", "cancelling", "--base", str(base),
            "--precision", "bfloat16", "--records", pattern, "--check-records", "8"]
    status = export_main(argv)
    captured = capsys.readouterr()
    assert status == 1
    f32, bf16, change = _printed_pcks(captured.out)
    assert "on 8 persons" in captured.out  # --check-records bounds the check
    assert change < -0.5
    assert "more than --max-pck-drop 0.5; nothing was exported" in captured.err
    assert not list((base / "cancelling").glob("*")) and not (base / "models.config").exists()
    # The threshold is the flag's: allowing the drop exports.
    assert export_main([*argv, "--max-pck-drop", "100"]) == 0
    assert export.list_versions(base / "cancelling") == [1]
