"""Training end to end: artefacts, TensorBoard tags, kill-and-resume, bad records, learning."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import keras
import pytest

from keras_pose.cli import train_main

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN = REPO / "tools" / "train.py"

TINY = """
name = "{name}"
[model]
name = "stacked_hourglass"
input_size = 64
options = {{ num_stacks = 2, num_features = 16, depth = 2 }}
[data]
crop_size = 64
shuffle_buffer = 64
[data.synthetic]
enabled = true
directory = "{data}"
num_train_images = 24
num_val_images = 6
image_size = 128
[targets]
sigma = 2.0
[optimizer]
name = "adam"
learning_rate = 1e-3
[schedule]
kind = "constant"
[train]
batch_size = 4
epochs = {epochs}
steps_per_epoch = {steps}
[callbacks]
pck_every = 1
images_every = 1
num_images = 2
[export]
enabled = {export}
name = "{name}"
base = "{base}"
"""


def write_pipeline(tmp_path, name="tiny", epochs=2, steps=3, export=False) -> pathlib.Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(TINY.format(name=name, data=tmp_path / "synthetic", epochs=epochs,
                                steps=steps, export=str(export).lower(),
                                base=tmp_path / "saved_models"))
    return path


@dataclasses.dataclass
class TrainResult:
    returncode: int
    stdout: str
    stderr: str


def run_train(args, cwd) -> TrainResult:
    """``tools/train.py ARGS`` run in ``cwd`` in this process (a subprocess would import
    TensorFlow again: seconds), its exit status and printed output captured."""
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(stdout), \
                contextlib.redirect_stderr(stderr):
            status = train_main([str(a) for a in args])
    finally:
        # A run sets its pipeline's dtype policy globally; the next test expects the default.
        keras.mixed_precision.set_global_policy("float32")
    return TrainResult(status, stdout.getvalue(), stderr.getvalue())


def event_tags(log_dir: pathlib.Path) -> dict[str, set[str]]:
    """Tags per plugin in every event file below ``log_dir``, read with TensorBoard's reader."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    tags: dict[str, set[str]] = {}
    for events in log_dir.rglob("events.out.tfevents.*"):
        acc = ea.EventAccumulator(str(events), size_guidance={ea.TENSORS: 0, ea.IMAGES: 0})
        acc.Reload()
        sub = events.parent.name
        for tag in acc.Tags()["tensors"]:
            plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
            tags.setdefault(plugin, set()).add(f"{sub}/{tag}")
    return tags


@pytest.mark.slow
def test_train_writes_everything_a_user_needs(tmp_path):
    pipeline = write_pipeline(tmp_path, export=True)
    out = tmp_path / "runs" / "tiny"
    result = run_train(["--pipeline", str(pipeline), "--output", str(out)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val PCK@0.2 torso" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["val_pck_torso@0.2"] <= 1.0
    assert summary["headline"] == "pck_torso@0.2"
    assert set(summary["per_keypoint_pck_torso@0.2"]) >= {"nose", "left_ankle"}
    # TensorFlow alone takes a few hundred MiB; a figure near 0 would be a unit mistake.
    assert 200 < summary["peak_rss_mib"] < 16_000, summary["peak_rss_mib"]
    assert f"peak memory {summary['peak_rss_mib']:,} MiB" in result.stdout
    assert (out / "model.keras").exists()
    assert (out / "pipeline.resolved.toml").read_text().count("[train]") == 1
    assert not (out / "backup").exists() or not any((out / "backup").iterdir())
    assert (tmp_path / "saved_models" / "tiny" / "1" / "saved_model.pb").exists()

    tags = event_tags(out / "logs")
    scalars = tags["scalars"]
    for tag in ("train/epoch_loss", "train/epoch_loss_stack_1", "train/epoch_loss_stack_2",
                "train/epoch_learning_rate", "validation/epoch_loss", "validation/epoch_pck",
                "validation/epoch_pck_bbox", "pose/keypoint_pck_torso@0.2/nose",
                "pose/keypoint_pck_bbox@0.05/right_ankle"):
        assert tag in scalars, (tag, sorted(scalars))
    assert {"pose/skeletons/ground_truth_vs_predicted",
            "pose/heatmaps/target_vs_predicted"} <= tags["images"]


def test_missing_records_is_a_clear_error(tmp_path, monkeypatch, capsys):
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\n[data]\ntrain_records = "nothing/train-*.tfrecord"\n'
                    'val_records = "nothing/val-*.tfrecord"\n')
    monkeypatch.chdir(tmp_path)
    status = train_main(["--pipeline", str(path), "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2
    assert "train_records = 'nothing/train-*.tfrecord' matches no file" in err
    assert "Traceback" not in err


def test_bad_pipeline_key_exits_with_message(tmp_path, monkeypatch, capsys):
    path = tmp_path / "p.toml"
    path.write_text("[train]\nepohcs = 3\n")
    monkeypatch.chdir(tmp_path)
    status = train_main(["--pipeline", str(path)])
    err = capsys.readouterr().err
    assert status == 2
    assert "unknown key 'epohcs' in [train]" in err and str(path) in err
    assert "Traceback" not in err


def _epochs_done(history: pathlib.Path) -> list[int]:
    if not history.exists():
        return []
    with history.open() as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_killed_run_resumes_and_finishes_planned_epochs(tmp_path):
    epochs = 5
    pipeline = write_pipeline(tmp_path, epochs=epochs, steps=12)
    out = tmp_path / "run"
    args = [sys.executable, str(TRAIN), "--pipeline", str(pipeline), "--output", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    history = out / "history.csv"
    deadline = time.time() + 400
    try:
        while len(_epochs_done(history)) < 2:
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.time() < deadline, "training too slow to reach epoch 2"
            time.sleep(0.2)
        time.sleep(1.0)  # into the next epoch
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    state = json.loads((out / "backup" / "state.json").read_text())
    resume_from = state["epoch"]  # epochs whose state was saved before the kill
    done_before = _epochs_done(history)
    assert 2 <= resume_from < epochs
    # Logs are written before the backup, so no logged epoch is lost (one may be re-run).
    assert done_before[:resume_from] == list(range(resume_from))

    result = run_train(["--pipeline", str(pipeline), "--output", str(out)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    done = _epochs_done(history)
    # The resumed run trained exactly the remaining planned epochs, in order.
    assert done[len(done_before):] == list(range(resume_from, epochs)), (done_before, done)
    assert not (out / "backup").exists()


# -- the configured metrics ---------------------------------------------------------------------


def _lsp_val_batches(count: int = 6, crop: int = 32):
    """Reader-like batches of lsp14 persons (crop pixels map to image pixels by x2 + offset)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    keypoints = rng.uniform(2, crop - 2, size=(count, 14, 2)).astype(np.float32)
    crop_box = np.tile(np.float32([10, 20, 2 * crop, 2 * crop]), (count, 1))
    visibility = np.full((count, 14), 2, np.int32)
    visibility[0, 3] = 0
    data = {
        "image": rng.integers(0, 255, size=(count, crop, crop, 3)).astype(np.uint8),
        "keypoints": keypoints,
        "image_keypoints": crop_box[:, None, :2] + 2 * keypoints,
        "crop_box": crop_box,
        "visibility": visibility,
        "bbox": np.tile(np.float32([20, 30, 40, 50]), (count, 1)),
        "area": np.full(count, 2000, np.float32),
        "image_id": np.arange(count, dtype=np.int64),
        "annotation_id": np.arange(count, dtype=np.int64),
        "head_size": np.float32([12, 0, 30, 0, 5, 8])[:count],
    }
    return tf.data.Dataset.from_tensor_slices(data).batch(4)


def test_pck_callback_logs_the_configured_metrics(tmp_path):
    import types

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_pose import TinyHeatmapPose

    from keras_pose import evaluate
    from keras_pose.keypoints import COCO17, LSP14
    from keras_pose.training.callbacks import PCKCallback

    names = ["pckh@0.5", "pck_torso@0.1", "poster_acc@0.5", "pck_bbox@0.05"]
    network = TinyHeatmapPose(num_keypoints=14, input_size=32)
    callback = PCKCallback(_lsp_val_batches(), LSP14, log_dir=str(tmp_path / "pose"),
                           total_epochs=1, metric_names=names)
    callback.set_model(types.SimpleNamespace(network=network, sampler="gather"))
    assert callback.monitor == "val_pckh@0.5"
    logs: dict = {}
    callback.on_epoch_end(0, logs)
    assert list(logs) == ["val_pckh@0.5", "val_pck_torso@0.1", "val_poster_acc@0.5",
                          "val_pck_bbox"]
    expected = evaluate.metric_report(
        evaluate.predict_records(network, _lsp_val_batches(), keypoint_set=LSP14), LSP14, names)
    for name, key in zip(names, logs, strict=True):
        assert logs[key] == (expected[name] or 0.0)
    assert callback.last["per_keypoint"] == expected["per_keypoint"]
    scalars = event_tags(tmp_path)["scalars"]
    for name in names:
        assert f"pose/keypoint_{name}/head_top" in scalars, sorted(scalars)
    with pytest.raises(ValueError, match="'pckh@half': the threshold after '@'"):
        PCKCallback(_lsp_val_batches(), LSP14, metric_names=["pckh@half"])
    with pytest.raises(ValueError, match="defines no head pair"):
        PCKCallback(_lsp_val_batches(), COCO17, metric_names=["pckh"])


def test_best_checkpoint_ignores_a_record_of_another_monitor(tmp_path):
    from keras_pose.io import write_json_atomic
    from keras_pose.training.callbacks import BestNetworkCheckpoint

    path = tmp_path / "model.keras"
    write_json_atomic(path.with_suffix(".best.json"), {"monitor": "val_pck", "value": 0.9,
                                                       "epoch": 3})
    assert BestNetworkCheckpoint(None, path, monitor="val_pck").best == 0.9
    assert BestNetworkCheckpoint(None, path, monitor="val_pckh@0.5").best == float("-inf")


def test_poster_accuracy_with_a_coordinate_model_is_refused_at_start():
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_pose import TinyCoordinatePose, TinyHeatmapPose

    from keras_pose.keypoints import LSP14
    from keras_pose.pipeline import PipelineError, load_pipeline
    from keras_pose.training import run

    pipeline = load_pipeline(None, ['data.keypoint_set="lsp14"',
                                    'callbacks.metrics=["pck_torso", "poster_acc"]'])
    network = TinyCoordinatePose(num_keypoints=14)
    # Keras numbers a layer name it has seen before in the process (tiny_coordinate_pose_1).
    with pytest.raises(PipelineError, match="poster_acc@0.5: it needs heatmaps and the model "
                       r"'tiny_coordinate_pose(_\d+)?' outputs coordinates"):
        run._checked_metrics(pipeline, LSP14, network)
    heatmaps = TinyHeatmapPose(num_keypoints=14, input_size=32)
    assert run._checked_metrics(pipeline, LSP14, heatmaps) == ["pck_torso", "poster_acc"]


# COCO joint (or pair averaged) for each lsp14 joint: enough to make an LSP-style dataset out
# of the synthetic persons (head top stands on the nose).
LSP_FROM_COCO = (16, 14, 12, 11, 13, 15, 10, 8, 6, 5, 7, 9, (5, 6), 0)


def _as_lsp14(coco_json: pathlib.Path, output: pathlib.Path) -> pathlib.Path:
    """The synthetic COCO annotations re-labeled with lsp14's keypoints."""
    import numpy as np

    from keras_pose.keypoints import LSP14

    data = json.loads(coco_json.read_text())
    for ann in data["annotations"]:
        coco = np.asarray(ann["keypoints"], np.float64).reshape(17, 3)
        lsp = []
        for source in LSP_FROM_COCO:
            if isinstance(source, tuple):
                pair = coco[list(source)]
                labeled = bool(np.all(pair[:, 2] > 0))
                lsp.append([*pair[:, :2].mean(0), 2.0] if labeled else [0.0, 0.0, 0.0])
            else:
                lsp.append(coco[source].tolist())
        ann["keypoints"] = [float(v) for point in lsp for v in point]
        ann["num_keypoints"] = int(sum(point[2] > 0 for point in lsp))
    data["categories"] = [{"id": 1, "name": "person", "keypoints": list(LSP14.names),
                           "skeleton": [[a + 1, b + 1] for a, b in LSP14.skeleton]}]
    output.write_text(json.dumps(data))
    return output


@pytest.mark.slow
def test_a_run_on_a_keypoint_set_without_oks_sigmas_skips_coco_ap(tmp_path, capsys):
    from keras_pose.data import convert, synthetic
    from keras_pose.pipeline import load_pipeline
    from keras_pose.training.run import train
    from keras_pose.training.summary import format_summary

    splits = synthetic.make_splits(tmp_path / "synthetic", 4, 3, 0, image_size=64,
                                   progress=False)
    records = tmp_path / "records"
    for split, coco_json in splits.items():
        lsp = _as_lsp14(coco_json, coco_json.with_name("lsp14.json"))
        convert.convert_coco(lsp, coco_json.parent / "images", records, split, workers=0,
                             crop_size=32, progress=False, log=lambda message: None)
    pipeline = load_pipeline(None, [
        'name="lsp"', 'model.name="stacked_hourglass"', "model.input_size=32",
        "model.options={num_stacks=1, num_features=8, depth=1}",
        'data.keypoint_set="lsp14"', "data.crop_size=32", "data.shuffle_buffer=8",
        f'data.train_records="{records}/train-*.tfrecord"',
        f'data.val_records="{records}/val-*.tfrecord"',
        f'data.val_annotations="{splits["val"].with_name("lsp14.json")}"',
        "train.batch_size=2", "train.epochs=1", "train.steps_per_epoch=2",
        'callbacks.metrics=["pckh@0.5", "pck_torso@0.2", "poster_acc@0.5"]',
        "callbacks.num_images=1", "export.enabled=true", 'export.name="lsp"',
        f'export.base="{tmp_path / "saved_models"}"',
    ])
    summary = train(pipeline, tmp_path / "run", verbose=0)
    printed = capsys.readouterr().out
    assert "COCO AP skipped: keypoint set 'lsp14' has no OKS sigmas" in printed
    assert summary["coco_ap"] is None and "no OKS sigmas" in summary["coco_skipped"]
    assert summary["headline"] == "pckh@0.5"
    for name in ("pckh@0.5", "pck_torso@0.2", "poster_acc@0.5"):
        assert summary[f"val_{name}"] is None or 0.0 <= summary[f"val_{name}"] <= 1.0
    assert list(summary["per_keypoint_pckh@0.5"])[-2:] == ["neck", "head_top"]
    assert pathlib.Path(summary["export"], "saved_model.pb").exists()
    best = json.loads((tmp_path / "run" / "model.best.json").read_text())
    assert best["monitor"] == "val_pckh@0.5"
    evaluation = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert set(evaluation["metrics"]["per_keypoint"]) == {"pckh@0.5", "pck_torso@0.2",
                                                           "poster_acc@0.5"}
    # The final evaluation scores without and with the flip test (the papers report with it),
    # whatever [callbacks] flip_test says (that one is the validation during training).
    flipped = evaluation["flip_test"]
    assert set(flipped["metrics"]["per_keypoint"]) == set(evaluation["metrics"]["per_keypoint"])
    assert summary["val_pckh@0.5_flip_test"] == flipped["metrics"]["pckh@0.5"]
    assert summary["coco_ap_flip_test"] is None
    import keras

    from keras_pose import evaluate
    from keras_pose.data.dataset import make_dataset
    from keras_pose.keypoints import LSP14

    network = keras.saving.load_model(tmp_path / "run" / "model.keras", compile=False)
    dataset = make_dataset(f"{records}/val-*.tfrecord", batch_size=2, num_keypoints=14,
                           training=False, deterministic=True)
    for flip, scores in ((False, evaluation["metrics"]), (True, flipped["metrics"])):
        again = evaluate.metric_report(
            evaluate.predict_records(network, dataset, keypoint_set=LSP14, flip_test=flip),
            LSP14, ["pckh@0.5", "pck_torso@0.2", "poster_acc@0.5"])
        for name in ("pckh@0.5", "pck_torso@0.2", "poster_acc@0.5"):
            assert again[name] == pytest.approx(scores[name], abs=1e-6), (flip, name)
    text = format_summary(summary)
    assert "val PCKh@0.5 :" in text and "PCK@0.2 torso:" in text and "poster acc@0.5:" in text
    assert f"(flip test {summary['val_pckh@0.5_flip_test']:.3f})" in text
    assert "COCO AP: skipped (no OKS sigmas)" in text
    assert "per keypoint (PCKh@0.5, without flip test):" in text


def test_summary_shows_the_flip_tested_headline_beside_the_plain_one():
    from keras_pose.training.run import _metric_summary
    from keras_pose.training.summary import format_summary

    def report(value, ap):
        return {"metrics": {"metrics": ["pck_torso@0.2"], "pck_torso@0.2": value,
                            "per_keypoint": {"pck_torso@0.2": {"nose": value}},
                            "num_persons": 3},
                "coco": {"AP": ap}}

    summary = _metric_summary({**report(0.5, 0.25), "flip_test": report(0.625, 0.375)})
    assert summary["val_pck_torso@0.2"] == 0.5 and summary["coco_ap"] == 0.25
    assert summary["val_pck_torso@0.2_flip_test"] == 0.625
    assert summary["coco_ap_flip_test"] == 0.375
    summary.update(pipeline="p", model="m", wall_seconds=1.0, train_seconds=1.0,
                   peak_rss_mib=300, run_dir="r", tensorboard="t", best_checkpoint="c")
    text = format_summary(summary)
    assert "val PCK@0.2 torso : 0.500 (flip test 0.625)" in text
    assert "COCO AP: 0.250 (flip test 0.375)" in text


def test_no_flip_test_for_networks_trained_without_mirrored_inputs():
    from keras_pose.pipeline import load_pipeline
    from keras_pose.training.run import flip_test_skipped

    quickstart = load_pipeline(REPO / "pipelines" / "quickstart.toml")
    assert quickstart.augment.flip_prob == 0.0
    assert "trained without mirrored inputs" in flip_test_skipped(quickstart)
    assert flip_test_skipped(load_pipeline(REPO / "pipelines" / "lspet.toml")) is None
    off = load_pipeline(REPO / "pipelines" / "lspet.toml", ["augment.enabled=false"])
    assert flip_test_skipped(off) is not None
