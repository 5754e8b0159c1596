"""Atomic writes: complete files only, with the permissions an ordinary open() gives."""

from __future__ import annotations

import os
import pathlib
import stat
import sys

import pytest

from keras_pose import io

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


@pytest.fixture
def umask():
    """Sets the process umask for one test and restores it afterwards."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077], ids=["022", "002", "077"])
def test_atomic_writes_get_the_mode_open_would_give(tmp_path, umask, mask):
    umask(mask)
    with open(tmp_path / "plain.txt", "w") as file:
        file.write("x")
    expected = 0o666 & ~mask
    assert _mode(tmp_path / "plain.txt") == expected
    written = [io.write_bytes_atomic(tmp_path / "a.bin", b"\x00"),
               io.write_text_atomic(tmp_path / "sub" / "b.txt", "text"),
               io.write_json_atomic(tmp_path / "c.json", {"v": 1})]
    for path in written:
        assert _mode(path) == expected, (oct(_mode(path)), path)
    assert _mode(tmp_path / "sub") == 0o777 & ~mask
    # Replacing a file keeps the rule, and no temporary is left behind.
    io.write_json_atomic(tmp_path / "c.json", {"v": 2})
    assert _mode(tmp_path / "c.json") == expected
    assert not list(tmp_path.rglob("*.tmp"))
    assert io.current_umask() == mask


def test_synthetic_data_and_manifest_are_readable_by_others(tmp_path, umask):
    """The files a teammate or a TF Serving container reads: synthetic images and annotations,
    the converter's manifest (and its shards)."""
    from keras_pose.data import convert, synthetic

    umask(0o022)
    annotations = synthetic.make_synthetic_dataset(tmp_path / "synth", 3, seed=0, image_size=96,
                                                   workers=1, progress=False)
    files = [annotations, *sorted((annotations.parent / "images").iterdir())]
    convert.convert_coco(annotations, annotations.parent / "images", tmp_path / "records",
                         "train", shards=1, workers=1, crop_size=64)
    files += sorted((tmp_path / "records").iterdir())
    assert any(p.name == convert.manifest_name("train") for p in files)
    for path in files:
        assert _mode(path) == 0o644, (oct(_mode(path)), path.name)


def test_export_versions_and_models_config_follow_the_umask(tmp_path, umask):
    """TensorFlow makes a SavedModel's folders 0o755 whatever the umask; an export's version
    directory and everything in it get what mkdir and open would give."""
    from tiny_pose import TinyHeatmapPose

    from keras_pose import export

    umask(0o002)
    version = export.export_saved_model(TinyHeatmapPose(num_keypoints=17, input_size=32),
                                        name="tiny", base=tmp_path / "saved_models",
                                        keypoint_set="coco17")
    assert _mode(tmp_path / "saved_models" / "models.config") == 0o664
    paths = [version, *version.rglob("*")]
    assert any(p.is_dir() and p.name == "variables" for p in paths)
    for path in paths:
        expected = 0o775 if path.is_dir() else 0o664
        assert _mode(path) == expected, (oct(_mode(path)), path.relative_to(version))
