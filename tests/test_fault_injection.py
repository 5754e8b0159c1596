"""Fault injection (issue 14): a full disk during conversion, checkpointing, evaluation output
and export; SIGKILL of ``tools/convert_coco.py``; a damaged TFRecord shard met in training.

The disk fills for real: a small tmpfs is mounted (root, or a user namespace that may mount),
filled with a filler file but for a few kilobytes, and the filler is deleted to "free space".
Where mounting is not permitted those tests skip, saying so. Nothing under test is mocked: the
converter, Keras's savers, TensorFlow's TFRecord and SavedModel writers meet ENOSPC from the
kernel.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import uuid

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"


# -- a small disk that can fill up --------------------------------------------------------------


class SmallDisk:
    """A tmpfs of ``size`` bytes at ``root``; :meth:`fill` leaves ``leave`` bytes free,
    :meth:`free` deletes the filler."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.filler = root / f".filler-{uuid.uuid4().hex[:6]}"

    def available(self) -> int:
        stat = os.statvfs(self.root)
        return stat.f_bavail * stat.f_frsize

    def fill(self, leave: int = 0) -> None:
        with open(self.filler, "ab") as f:
            chunk = b"\0" * (1 << 20)
            while self.available() > leave + len(chunk):
                f.write(chunk)
            rest = self.available() - leave
            if rest > 0:
                try:
                    f.write(b"\0" * rest)
                    f.flush()
                except OSError:
                    pass
        assert self.available() <= leave + 4096, self.available()

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def files(self, folder: pathlib.Path) -> dict[str, bytes]:
        """Every file below ``folder`` (filler aside): relative name -> bytes."""
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
                if p.is_file() and p != self.filler}


@pytest.fixture
def small_disk(tmp_path) -> SmallDisk:
    """A 64 MiB tmpfs mounted for the test (skips where mounting is not permitted)."""
    root = tmp_path / "disk"
    root.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs",
                             str(root)], capture_output=True, text=True)
    if result.returncode:
        pytest.skip("a full disk needs a small tmpfs and mounting one is not permitted here "
                    f"(not root?): {result.stderr.strip() or result.returncode}")
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True)


def _no_temporaries(folder: pathlib.Path) -> list[str]:
    """Names below ``folder`` that look like a temporary file or directory (should be none)."""
    return [str(p.relative_to(folder)) for p in folder.rglob("*")
            if ".tmp" in p.name or p.name.startswith(("tmp-", "_tmp_export_"))]


# -- synthetic COCO sets ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    """A synthetic COCO keypoint set of 40 images (annotations, images folder)."""
    from keras_pose.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("coco_small")
    annotations = make_synthetic_dataset(root / "set", 40, 3, image_size=96, workers=1)
    return annotations, annotations.parent / "images"


def _convert_cli(*args: str) -> int:
    """``tools/convert_coco.py ARGS`` in this process."""
    from keras_pose.cli import convert_coco_main

    return convert_coco_main(list(args))


def _annotation_ids(records: pathlib.Path, split: str) -> list[int]:
    import tensorflow as tf

    feature = {"person/annotation_id": tf.io.FixedLenFeature([], tf.int64)}
    ids = []
    for shard in sorted(records.glob(f"{split}-*.tfrecord")):
        for serialized in tf.data.TFRecordDataset(str(shard)):
            ids.append(int(tf.io.parse_single_example(serialized, feature)[
                "person/annotation_id"]))
    return ids


# -- 1. a full disk -----------------------------------------------------------------------------


def test_disk_full_during_conversion_keeps_the_old_split_and_the_next_run_completes(
        small_disk, coco_set, capsys):
    annotations, images = coco_set
    out = small_disk.root / "records"
    command = ["--annotations", str(annotations), "--images", str(images), "--output",
               str(out), "--split", "train", "--shards", "2", "--workers", "1", "--quiet"]
    assert _convert_cli(*command) == 0
    before = small_disk.files(out)
    assert sorted(before) == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
                              "train.manifest.json"]
    capsys.readouterr()

    small_disk.fill(leave=16 * 1024)  # far less than one shard
    assert _convert_cli(*command, "--overwrite", "--crop-size", "128") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "No space left on device" in err or "no space left on device" in err, err
    # The error names the shard being written.
    assert f"writing shard {out}/train-0000" in err, err
    assert small_disk.files(out) == before  # the old split, byte for byte
    assert _no_temporaries(out) == []

    small_disk.free()
    assert _convert_cli(*command, "--overwrite", "--crop-size", "128") == 0
    manifest = json.loads((out / "train.manifest.json").read_text())
    assert manifest["crop_size"] == 128
    ids = _annotation_ids(out, "train")
    assert len(ids) == len(set(ids)) == manifest["num_records"] > 0
    assert _no_temporaries(out) == []


def _tiny_model():
    from tiny_pose import TinyHeatmapPose

    return TinyHeatmapPose(num_keypoints=17, input_size=32)


def _tiny_fit(model, callbacks, epochs: int):
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    y = rng.uniform(0, 1, (8, 8, 8, 17)).astype("float32")
    if not model.compiled:
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model.fit(x, y, batch_size=4, epochs=epochs, callbacks=callbacks, verbose=0)


@pytest.mark.parametrize("what", ["best_checkpoint", "backup"])
def test_disk_full_while_checkpointing_names_the_file_and_keeps_the_previous_one(
        small_disk, what):
    from keras_pose.training import callbacks as cbs

    folder = small_disk.root / "run"
    best = folder / "model.keras"
    backup = folder / "backup"
    folder.mkdir()  # the run makes its directory

    def callbacks():
        if what == "best_checkpoint":
            return [cbs.BestNetworkCheckpoint(_model, best, monitor="loss", mode="min")]
        # Keep the backup after fit ends, as a run stopped part way does.
        return [cbs.AtomicBackupAndRestore(str(backup), delete_checkpoint=False)]

    _model = _tiny_model()
    _tiny_fit(_model, callbacks(), epochs=1)
    before = small_disk.files(folder)
    assert before, "the first epoch saved nothing"

    small_disk.fill(leave=0)
    _model = _tiny_model()
    with pytest.raises(cbs.CheckpointError) as caught:
        _tiny_fit(_model, callbacks(), epochs=3)
    message = str(caught.value)
    assert str(best if what == "best_checkpoint" else backup) in message, message
    assert "intact" in message
    assert small_disk.files(folder) == before  # the previous checkpoint or backup
    assert _no_temporaries(folder) == []

    small_disk.free()
    _model = _tiny_model()
    _tiny_fit(_model, callbacks(), epochs=3)
    if what == "best_checkpoint":
        assert json.loads(best.with_suffix(".best.json").read_text())["epoch"] >= 1
        import keras

        keras.saving.load_model(best, compile=False)
    else:
        assert json.loads((backup / "state.json").read_text())["epoch"] == 3
    assert _no_temporaries(folder) == []


def test_disk_full_writing_evaluation_json_keeps_the_previous_file(small_disk):
    from keras_pose.io import write_json_atomic

    path = small_disk.root / "run" / "evaluation.json"
    write_json_atomic(path, {"pck": 0.5})
    small_disk.fill(leave=0)
    with pytest.raises(OSError) as caught:
        write_json_atomic(path, {"pck": 0.75, "per_keypoint": list(range(20000))})
    assert caught.value.errno == 28 and caught.value.filename == str(path)
    assert str(path) in str(caught.value)
    assert json.loads(path.read_text()) == {"pck": 0.5}
    assert _no_temporaries(path.parent) == []

    small_disk.free()
    write_json_atomic(path, {"pck": 0.75})
    assert json.loads(path.read_text()) == {"pck": 0.75}


@pytest.mark.slow
def test_disk_full_during_export_adds_no_version_and_keeps_models_config(small_disk):
    from keras_pose import export

    base = small_disk.root / "saved_models"
    model = _tiny_model()
    first = export.export_saved_model(model, name="tiny", base=base, keypoint_set="coco17")
    assert first == base / "tiny" / "1"
    before = small_disk.files(base)

    small_disk.fill(leave=8 * 1024)
    with pytest.raises(OSError) as caught:
        export.export_saved_model(model, name="tiny", base=base, keypoint_set="coco17")
    message = str(caught.value)
    assert f"into {base / 'tiny'} failed" in message and "models.config" in message, message
    assert small_disk.files(base) == before  # version 1 and models.config, byte for byte
    assert export.list_versions(base / "tiny") == [1]
    assert _no_temporaries(base) == []

    # models.config itself on a full disk: named, the old one kept.
    (base / "other" / "1").mkdir(parents=True)
    (base / "other" / "1" / "saved_model.pb").touch()  # a second model to list
    small_disk.fill(leave=0)
    with pytest.raises(OSError) as caught:
        export.write_models_config(base)
    assert caught.value.filename == str(base / "models.config"), caught.value
    assert (base / "models.config").read_bytes() == before["models.config"]
    shutil.rmtree(base / "other")
    assert _no_temporaries(base) == []

    small_disk.free()
    second = export.export_saved_model(model, name="tiny", base=base, keypoint_set="coco17")
    assert second == base / "tiny" / "2"
    assert export.list_versions(base / "tiny") == [1, 2]
    assert "/tiny" in (base / "models.config").read_text()
    assert _no_temporaries(base) == []


# -- 2. SIGKILL of tools/convert_coco.py --------------------------------------------------------


@pytest.fixture(scope="module")
def coco_set_large(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    """A synthetic COCO keypoint set of 240 images: a conversion of a few seconds."""
    from keras_pose.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("coco_large")
    annotations = make_synthetic_dataset(root / "set", 240, 5, image_size=128)
    return annotations, annotations.parent / "images"


def _run_until_progress(command: list[str], stderr_path: pathlib.Path, env: dict
                        ) -> subprocess.Popen:
    """Start ``command``; return once its progress bar shows an image done."""
    stderr = stderr_path.open("w")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    import re

    while not re.search(r"train:\s+\d+%.*\| *[1-9]\d*/\d+", stderr_path.read_text()):
        if proc.poll() is not None:
            raise AssertionError(f"finished before any progress: {stderr_path.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no progress: {stderr_path.read_text()[-2000:]}")
        time.sleep(0.02)
    return proc


@pytest.mark.slow
def test_sigkill_of_convert_coco_then_the_same_command_completes(tmp_path, coco_set_large):
    import signal

    annotations, images = coco_set_large
    out = tmp_path / "records"
    command = [sys.executable, str(TOOLS / "convert_coco.py"), "--annotations",
               str(annotations), "--images", str(images), "--output", str(out), "--split",
               "train", "--shards", "3", "--workers", "2"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    proc = _run_until_progress(command, tmp_path / "first.err", env)
    try:
        os.kill(proc.pid, signal.SIGKILL)  # the converter only, as the OOM killer would
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    # Its worker processes notice the dead parent and exit.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the killed converter's workers outlived it by 30 s")
    left = sorted(os.listdir(out))
    assert left and all(".tmp-" in name for name in left), left  # temporaries only

    again = subprocess.run(command + ["--quiet"], env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    manifest = json.loads((out / "train.manifest.json").read_text())
    assert sorted(os.listdir(out)) == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)] + [
        "train.manifest.json"]
    ids = _annotation_ids(out, "train")
    expected = _expected_ids(annotations)
    assert sorted(ids) == sorted(expected)  # every person exactly once
    assert manifest["num_records"] == len(ids) == sum(manifest["records_per_shard"])


def _expected_ids(annotations: pathlib.Path) -> list[int]:
    data = json.loads(annotations.read_text())
    return [a["id"] for a in data["annotations"]
            if not a.get("iscrowd", 0) and a.get("num_keypoints", 1) > 0]


def test_shards_without_a_manifest_are_replaced_by_the_same_command(tmp_path, coco_set,
                                                                   capsys):
    """A SIGKILL between the shards' renames and the manifest (a window of microseconds,
    made here by hand): the same command, without --overwrite, converts the split again."""
    annotations, images = coco_set
    out = tmp_path / "records"
    command = ["--annotations", str(annotations), "--images", str(images), "--output",
               str(out), "--split", "train", "--shards", "2", "--workers", "1", "--quiet"]
    assert _convert_cli(*command) == 0
    expected = sorted(_annotation_ids(out, "train"))
    (out / "train.manifest.json").unlink()
    (out / "train-00001-of-00002.tfrecord").unlink()
    (out / ".train-00001-of-00002.tfrecord.tmp-999999999").write_bytes(b"half")
    capsys.readouterr()
    assert _convert_cli(*command) == 0
    assert "removing an incomplete split 'train'" in capsys.readouterr().err
    assert sorted(_annotation_ids(out, "train")) == expected
    assert sorted(os.listdir(out)) == ["train-00000-of-00002.tfrecord",
                                       "train-00001-of-00002.tfrecord", "train.manifest.json"]


# -- 3. a damaged shard met in training ---------------------------------------------------------


def _tiny_pipeline(tmp_path: pathlib.Path, synthetic_dir: pathlib.Path,
                   records: pathlib.Path) -> pathlib.Path:
    sys.path.insert(0, str(REPO / "tests"))
    from test_run_faults import write_pipeline

    return write_pipeline(tmp_path, synthetic_dir, records=records, epochs=1, steps=4)


@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    """The tiny synthetic set's records (train and val) as the run tests make them."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_run_faults import write_pipeline

    from keras_pose.pipeline import load_pipeline
    from keras_pose.training.inputs import prepare_synthetic_data

    directory = tmp_path_factory.mktemp("synthetic_damaged")
    pipeline = load_pipeline(write_pipeline(directory, directory), [])
    prepare_synthetic_data(pipeline)
    return directory, directory / "records-32"


def _damage(shard: pathlib.Path, how: str) -> None:
    data = bytearray(shard.read_bytes())
    if how == "truncated":
        shard.write_bytes(bytes(data[: len(data) * 2 // 3]))
    else:  # flip bytes in the middle of the file: a record's CRC no longer matches
        middle = len(data) // 2
        for i in range(middle, middle + 16):
            data[i] ^= 0xFF
        shard.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("how,split", [("corrupted", "train"), ("truncated", "val")])
def test_a_damaged_shard_stops_training_naming_the_shard(tmp_path, tiny_records, capsys, how,
                                                        split):
    from keras_pose.cli import train_main

    synthetic_dir, source = tiny_records
    records = tmp_path / "records"
    shutil.copytree(source, records)
    shard = sorted(records.glob(f"{split}-*.tfrecord"))[0]
    _damage(shard, how)
    pipeline = _tiny_pipeline(tmp_path, synthetic_dir, records)

    started = time.monotonic()
    status = train_main(["--pipeline", str(pipeline), "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2, err[-3000:]
    assert time.monotonic() - started < 300
    assert "Traceback" not in err
    assert "damaged TFRecord shard" in err, err[-3000:]
    assert f"{shard}: {'corrupted' if how == 'corrupted' else 'truncated'} record" in err, err
    assert f"convert the split again into {records} with --overwrite" in err
    assert "tools/convert_coco.py" in err
    # Only the damaged shard is named.
    others = [p for p in records.glob("*.tfrecord") if p != shard]
    assert not any(f"{p}:" in err for p in others)


# -- 1b. a full disk under a whole run ----------------------------------------------------------


@pytest.mark.slow
def test_disk_full_during_a_run_stops_it_naming_the_file_and_the_same_command_resumes(
        small_disk, tiny_records, capsys):
    from keras_pose.cli import train_main

    synthetic_dir, records = tiny_records
    sys.path.insert(0, str(REPO / "tests"))
    from test_run_faults import write_pipeline

    pipeline = write_pipeline(small_disk.root, synthetic_dir, records=records, epochs=2,
                              steps=2)
    out = small_disk.root / "run"
    small_disk.fill(leave=96 * 1024)  # the logs fit, a checkpoint does not
    status = train_main(["--pipeline", str(pipeline), "--output", str(out)])
    err = capsys.readouterr().err
    assert status == 1, err[-3000:]
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith("error: training stopped: saving "), message
    assert "No space left on device" in message or "errno = 28" in message, message
    assert "Free space" in message and "resumes from the backup" in message
    assert _no_temporaries(out) == [], _no_temporaries(out)

    small_disk.free()
    assert train_main(["--pipeline", str(pipeline), "--output", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["val_persons"] == 5
    assert _no_temporaries(out) == []


def test_disk_full_at_the_manifest_keeps_the_old_split(small_disk, coco_set, capsys):
    """The shards fit, the manifest does not: the old split stays whole (its files are only
    removed once the new manifest is on disk)."""
    annotations, images = coco_set
    out = small_disk.root / "records"

    def command(folder, *extra):
        return ["--annotations", str(annotations), "--images", str(images), "--output",
                str(folder), "--split", "train", "--shards", "2", "--workers", "1", "--quiet",
                *extra]

    assert _convert_cli(*command(out)) == 0
    before = small_disk.files(out)
    # Measure what the new split takes (same options: the same bytes), then leave room for
    # its shards but not its manifest.
    scratch = small_disk.root / "scratch"
    free = small_disk.available()
    assert _convert_cli(*command(scratch, "--crop-size", "128")) == 0
    used = free - small_disk.available()
    manifest_pages = -(-(scratch / "train.manifest.json").stat().st_size // 4096) * 4096
    shutil.rmtree(scratch)
    capsys.readouterr()

    small_disk.fill(leave=used - manifest_pages)
    assert _convert_cli(*command(out, "--crop-size", "128", "--overwrite")) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"writing {out / 'train.manifest.json'} failed" in err, err
    assert "No space left on device" in err
    assert small_disk.files(out) == before
    assert _no_temporaries(out) == []

    small_disk.free()
    assert _convert_cli(*command(out, "--crop-size", "128", "--overwrite")) == 0
    assert json.loads((out / "train.manifest.json").read_text())["crop_size"] == 128
