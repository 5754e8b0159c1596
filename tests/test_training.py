"""Training end to end: artefacts, TensorBoard tags, kill-and-resume, bad records, learning."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

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


def run_train(args, cwd, timeout=600, **kwargs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(TRAIN), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


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


def test_missing_records_is_a_clear_error(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\n[data]\ntrain_records = "nothing/train-*.tfrecord"\n'
                    'val_records = "nothing/val-*.tfrecord"\n')
    result = run_train(["--pipeline", str(path), "--output", str(tmp_path / "run")],
                       cwd=tmp_path, timeout=300)
    assert result.returncode == 2
    assert "train_records = 'nothing/train-*.tfrecord' matches no file" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_pipeline_key_exits_with_message(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[train]\nepohcs = 3\n")
    result = run_train(["--pipeline", str(path)], cwd=tmp_path, timeout=300)
    assert result.returncode == 2
    assert "unknown key 'epohcs' in [train]" in result.stderr and str(path) in result.stderr
    assert "Traceback" not in result.stderr


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
