"""Run-level faults (issue 14): missing manifests, the TensorBoard writers, a NaN loss, failures
after training, SIGTERM during ``model.fit``. Each drives the real run (``train_main`` or
``tools/train.py``) on a tiny synthetic pipeline: a 2-stack hourglass on 32-pixel crops."""

from __future__ import annotations

import json
import pathlib
import re
import shutil

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN = REPO / "tools" / "train.py"

TINY = """
name = "{name}"
[model]
name = "stacked_hourglass"
input_size = 32
options = {{ num_stacks = 2, num_features = 8, depth = 1 }}
[data]
crop_size = 32
shuffle_buffer = 8
{data}
[data.synthetic]
enabled = {synthetic}
directory = "{synthetic_dir}"
num_train_images = 8
num_val_images = 4
image_size = 64
[optimizer]
name = "adam"
learning_rate = {learning_rate}
[schedule]
kind = "{schedule}"
step_epochs = 1
factor = {factor}
[train]
batch_size = 2
epochs = {epochs}
steps_per_epoch = {steps}
[callbacks]
pck_every = 1
images_every = 1
num_images = 1
[export]
enabled = {export}
name = "{name}"
base = "{base}"
"""


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> pathlib.Path:
    """The tiny synthetic dataset and its records, made once for the module (runs reuse it)."""
    from keras_pose.pipeline import load_pipeline
    from keras_pose.training.inputs import prepare_synthetic_data

    directory = tmp_path_factory.mktemp("synthetic")
    pipeline = load_pipeline(write_pipeline(directory, directory), [])
    prepare_synthetic_data(pipeline)
    return directory


def write_pipeline(tmp_path: pathlib.Path, synthetic_dir: pathlib.Path, *, name="tiny",
                   epochs=1, steps=2, export=False, learning_rate=1e-3, schedule="constant",
                   factor=0.1, records: pathlib.Path | None = None,
                   val_annotations: str = "", base: pathlib.Path | None = None
                   ) -> pathlib.Path:
    """A tiny pipeline file: synthetic data, or the records in ``records`` when given."""
    data = ""
    if records is not None:
        data = (f'train_records = "{records}/train-*.tfrecord"\n'
                f'val_records = "{records}/val-*.tfrecord"\n')
    if val_annotations:
        data += f'val_annotations = "{val_annotations}"\n'
    path = tmp_path / f"{name}.toml"
    path.write_text(TINY.format(
        name=name, data=data, synthetic=str(records is None).lower(),
        synthetic_dir=synthetic_dir, learning_rate=learning_rate, schedule=schedule,
        factor=factor, epochs=epochs, steps=steps, export=str(export).lower(),
        base=base or tmp_path / "saved_models"))
    return path


def train_main(pipeline: pathlib.Path, output: pathlib.Path) -> int:
    """``tools/train.py --pipeline PIPELINE --output OUTPUT`` in this process."""
    from keras_pose.cli import train_main as main

    return main(["--pipeline", str(pipeline), "--output", str(output)])


# -- 1. a records glob without its manifest -----------------------------------------------------


@pytest.mark.parametrize("split", ["train", "val"])
def test_records_without_manifest_are_a_run_error(tmp_path, synthetic_dir, capsys, split):
    records = tmp_path / "records"
    shutil.copytree(synthetic_dir / "records-32", records)
    (records / f"{split}.manifest.json").unlink()
    pipeline = write_pipeline(tmp_path, synthetic_dir, records=records)

    assert train_main(pipeline, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert f"[data] {split}_records = '{records}/{split}-*.tfrecord'" in err, err
    assert f"{records / split}.manifest.json" in err and "not found" in err
    assert "tools/convert_coco.py" in err and "--overwrite" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "logs").exists()  # stopped before training


# -- 2. one event file per TensorBoard directory ------------------------------------------------


def _event_tags(events: pathlib.Path) -> set[str]:
    import tensorflow as tf

    return {value.tag for event in tf.compat.v1.train.summary_iterator(str(events))
            for value in event.summary.value}


@pytest.mark.slow
def test_each_tensorboard_directory_has_one_event_file_with_every_tag(tmp_path, synthetic_dir):
    pipeline = write_pipeline(tmp_path, synthetic_dir, epochs=1, steps=2)
    out = tmp_path / "run"
    assert train_main(pipeline, out) == 0

    files: dict[str, list[pathlib.Path]] = {}
    for events in (out / "logs").rglob("events.out.tfevents.*"):
        files.setdefault(events.parent.name, []).append(events)
    # TensorBoard follows only the newest event file of a directory: one writer each.
    assert {name: len(found) for name, found in files.items()} == {
        "train": 1, "validation": 1, "pose": 1}, files
    tags = {name: _event_tags(found[0]) for name, found in files.items()}
    assert {"epoch_loss", "epoch_loss_stack_1", "epoch_loss_stack_2",
            "epoch_learning_rate"} <= tags["train"], tags["train"]
    assert {"epoch_loss", "epoch_pck", "epoch_pck_bbox"} <= tags["validation"], tags
    assert {"keypoint_pck_torso@0.2/nose", "keypoint_pck_bbox@0.05/right_ankle",
            "skeletons/ground_truth_vs_predicted",
            "heatmaps/target_vs_predicted"} <= tags["pose"], tags["pose"]


# -- 3. a loss that becomes NaN -----------------------------------------------------------------


@pytest.mark.slow
def test_nan_loss_stops_the_run_naming_step_and_output(tmp_path, synthetic_dir, capsys):
    import csv
    import math

    import keras
    import numpy as np
    import tensorflow as tf

    # Epoch 1 learns at 1e-3; from epoch 2 the step schedule multiplies it to 1e27: with batch
    # norms a rate of 1e6 could take more than one epoch to overflow, 1e27 overflows at once.
    pipeline = write_pipeline(tmp_path, synthetic_dir, epochs=3, steps=4, schedule="step",
                              factor=1e30, export=True)
    out = tmp_path / "run"
    assert train_main(pipeline, out) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: the loss became "), err
    assert re.search(r"at training step \d+ \(epoch 2/3, batch [1-4]/4\)", message), message
    # Which output (this seed: stack_1 first; both named if both go).
    assert re.search(r"output 'stack_[12]' loss = (nan|inf)", message), message
    assert "best checkpoint" in message and str(out / "model.keras") in message
    assert "learning_rate" in message

    # The finished epoch's artefacts are intact; nothing of epoch 2 reached them.
    best = json.loads((out / "model.best.json").read_text())
    assert best["epoch"] == 1
    network = keras.saving.load_model(out / "model.keras", compile=False)
    assert all(np.isfinite(w).all() for w in network.get_weights())
    with (out / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == [0] and math.isfinite(float(rows[0]["loss"]))
    assert json.loads((out / "backup" / "state.json").read_text())["epoch"] == 1
    steps = {(value.tag, event.step)
             for events in (out / "logs" / "train").glob("events.out.tfevents.*")
             for event in tf.compat.v1.train.summary_iterator(str(events))
             for value in event.summary.value}
    assert ("epoch_loss", 0) in steps and ("epoch_loss", 1) not in steps, steps
    assert not (out / "summary.json").exists() and not (tmp_path / "saved_models").exists()


# -- 4. failures after training lose nothing ----------------------------------------------------


@pytest.mark.slow
def test_a_failed_export_keeps_the_evaluation_and_says_how_to_export(tmp_path, synthetic_dir,
                                                                      capsys):
    base = tmp_path / "saved_models"
    base.write_text("a file where the export base directory should be\n")
    pipeline = write_pipeline(tmp_path, synthetic_dir, export=True, base=base)
    out = tmp_path / "run"
    assert train_main(pipeline, out) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "the export failed: NotADirectoryError" in captured.err, captured.err
    assert str(base) in captured.err
    assert (f"finish by hand: python tools/export.py --model {out} --name tiny --base {base}"
            in captured.err), captured.err
    assert "tools/evaluate.py" not in captured.err  # the evaluation succeeded
    assert "NotADirectoryError" in (out / "export.error.txt").read_text()

    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["val_pck_torso@0.2"] <= 1.0
    assert "export" not in summary and "NotADirectoryError" in summary["failed"]["export"]["error"]
    assert (out / "evaluation.json").exists() and (out / "model.keras").exists()
    assert "val PCK@0.2 torso" in captured.out and "export     : FAILED" in captured.out

    # Training is kept: with the cause fixed, the same command only evaluates and exports.
    assert json.loads((out / "backup" / "state.json").read_text())["epoch"] == 1
    assert "run the same command again: training is done" in captured.err
    epochs_before = _epochs_done(out / "history.csv")
    base.unlink()
    assert train_main(pipeline, out) == 0
    assert _epochs_done(out / "history.csv") == epochs_before == [0]  # no epoch trained again
    assert (base / "tiny" / "1" / "saved_model.pb").exists()
    assert not (out / "backup").exists()  # the run is complete
    summary = json.loads((out / "summary.json").read_text())
    assert summary["export"] == str(base / "tiny" / "1") and "failed" not in summary


@pytest.mark.slow
def test_a_failed_evaluation_still_exports_and_says_how_to_evaluate(tmp_path, synthetic_dir,
                                                                     capsys):
    records = tmp_path / "records"
    shutil.copytree(synthetic_dir / "records-32", records)
    annotations = tmp_path / "val.json"
    annotations.write_text("this is not JSON\n")
    base = tmp_path / "saved_models"
    pipeline = write_pipeline(tmp_path, synthetic_dir, export=True, base=base, records=records,
                              val_annotations=str(annotations))
    out = tmp_path / "run"
    assert train_main(pipeline, out) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert (f"the final evaluation failed: ValueError: {annotations}: not valid JSON"
            in captured.err), captured.err
    assert (f"finish by hand: python tools/evaluate.py --model {out} --records "
            f"'{records}/val-*.tfrecord' --annotations {annotations} "
            f"--metrics pck_torso@0.2,pck_bbox@0.05 --output {out}") in captured.err
    assert "tools/export.py" not in captured.err  # the export succeeded

    assert (base / "tiny" / "1" / "saved_model.pb").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["export"] == str(base / "tiny" / "1")
    assert "val_pck_torso@0.2" not in summary and "evaluation" not in summary
    assert "not valid JSON" in summary["failed"]["evaluation"]["error"]
    assert not (out / "evaluation.json").exists() and (out / "model.keras").exists()
    assert f"SavedModel : {base / 'tiny' / '1'}" in captured.out
    assert "evaluation : FAILED" in captured.out


# -- 5. SIGTERM during model.fit ----------------------------------------------------------------


def _epochs_done(history: pathlib.Path) -> list[int]:
    import csv

    if not history.exists():
        return []
    with history.open() as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_sigterm_during_fit_stops_cleanly_and_the_same_command_resumes(tmp_path, synthetic_dir):
    import os
    import signal
    import subprocess
    import sys
    import time

    epochs = 5
    pipeline = write_pipeline(tmp_path, synthetic_dir, epochs=epochs, steps=30)
    out = tmp_path / "run"
    command = [sys.executable, str(TRAIN), "--pipeline", str(pipeline), "--output", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    history = out / "history.csv"
    with (tmp_path / "first.out").open("w") as stdout, \
            (tmp_path / "first.err").open("w") as stderr:
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=stdout, stderr=stderr)
        try:
            deadline = time.time() + 300
            while len(_epochs_done(history)) < 2:
                assert proc.poll() is None, (tmp_path / "first.err").read_text()[-3000:]
                assert time.time() < deadline, "training too slow to reach epoch 2"
                time.sleep(0.2)
            time.sleep(0.5)  # into the next epoch
            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    err = (tmp_path / "first.err").read_text()
    assert returncode == 128 + signal.SIGTERM, (returncode, err[-3000:])
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: stopped by SIGTERM during epoch "), message
    state = json.loads((out / "backup" / "state.json").read_text())
    resume_from = state["epoch"]
    done_before = _epochs_done(history)
    # The backup holds every logged epoch: nothing logged is lost, nothing half done is kept.
    assert done_before == list(range(resume_from)) and 2 <= resume_from < epochs, done_before
    assert re.search(r"during epoch \d/5 \(after training step \d+\)", message), message
    assert f"Run the same command to resume from epoch {resume_from + 1}." in message, message
    assert not list((out / "backup").glob("tmp-*"))  # no half-written backup

    resumed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _epochs_done(history) == list(range(epochs))
    assert not (out / "backup").exists()
    assert json.loads((out / "summary.json").read_text())["val_persons"] == 5
