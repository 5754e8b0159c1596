"""The typed split manifest: file round trip, old versions, errors naming the file and field."""

from __future__ import annotations

import dataclasses
import json

import pytest

from keras_pose.data.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    Manifest,
    ManifestError,
    manifest_name,
)


def _manifest(**values) -> Manifest:
    fields = dict(
        split="val", num_records=5, num_images=3,
        shards=("val-00000-of-00002.tfrecord", "val-00001-of-00002.tfrecord"),
        records_per_shard=(3, 2),
        skipped={"count": 1, "reasons": {"missing_image": 1}, "messages": ["image 7: gone"]},
        keypoint_set="lsp14", num_keypoints=14, keypoint_names=tuple(f"k{i}" for i in range(14)),
        crop_size=64, margin=1.25, context=1.5, context_pad=16, stored_size=96,
        min_keypoints=1, jpeg_quality=95, seed=None,
        source={"format": "lsp", "sha256": "ab" * 32, "image_range": [4, 8],
                "array_shape": [3, 14, 2000]},
        head_size={"source": "keypoints", "description": "d", "units": "image pixels"},
        ground_truth={"path": "val.annotations.json", "coordinates": "pixel indices"},
        created="2026-11-30T05:00:00+00:00",
    )
    return Manifest(**{**fields, **values})


def _written(tmp_path, value: dict):
    path = tmp_path / manifest_name("val")
    path.write_text(json.dumps(value))
    return path


def test_round_trip_through_the_file(tmp_path):
    manifest = _manifest()
    path = tmp_path / manifest_name("val")
    manifest.write(path)
    text = json.loads(path.read_text())
    # The file keeps the keys and order the converters always wrote; ``path`` is not one.
    assert list(text)[:6] == ["format", "version", "split", "num_records", "num_images",
                              "num_shards"]
    assert text["format"] == MANIFEST_FORMAT and text["version"] == MANIFEST_VERSION
    assert text["num_shards"] == 2 and text["shards"][1] == "val-00001-of-00002.tfrecord"
    assert text["seed"] is None and "path" not in text
    read = Manifest.from_json(path)
    assert read == manifest and read.path == str(path) and read.directory == str(tmp_path)
    assert read.shards == manifest.shards and isinstance(read.keypoint_names, tuple)
    assert read.source["image_range"] == [4, 8] and read.num_shards == 2


def test_version_3_reads_as_the_crop_alone(tmp_path):
    value = _manifest().to_dict()
    for key in ("context", "context_pad", "stored_size"):
        del value[key]
    value["version"] = 3
    read = Manifest.from_json(_written(tmp_path, value))
    assert (read.context, read.context_pad, read.stored_size, read.version) == (1.0, 0, 64, 3)


def test_integers_read_as_float_fields(tmp_path):
    value = {**_manifest().to_dict(), "margin": 2, "context": 1}
    read = Manifest.from_json(_written(tmp_path, value))
    assert read.margin == 2.0 and isinstance(read.margin, float)


@pytest.mark.parametrize("change, message", [
    ({"version": 9}, "unsupported manifest version 9"),
    ({"version": 1}, "unsupported manifest version 1"),
    ({"version": "4"}, "field 'version' is missing or not an integer"),
    ({"format": "other"}, "field 'format' is 'other'"),
    ({"crop_size": "64"}, "field 'crop_size' must be an integer, received '64'"),
    ({"num_records": True}, "field 'num_records' must be an integer"),
    ({"margin": None}, "field 'margin' must be a number"),
    ({"shards": "val-00000-of-00001.tfrecord"}, "field 'shards' must be a list of str"),
    ({"records_per_shard": [3, "2"]}, "field 'records_per_shard' must be a list of int"),
    ({"source": []}, "field 'source' must be an object"),
    ({"num_shards": 3}, "field 'num_shards' is 3 but 'shards' names 2"),
    ({"records_per_shard": [5]}, "'records_per_shard' has 1 entries for 2 shards"),
])
def test_bad_fields_name_the_file_and_the_field(tmp_path, change, message):
    path = _written(tmp_path, {**_manifest().to_dict(), **change})
    with pytest.raises(ManifestError, match=message) as error:
        Manifest.from_json(path)
    assert str(error.value).startswith(f"{path}: ")


@pytest.mark.parametrize("field", ["keypoint_set", "crop_size", "source", "created"])
def test_a_missing_field_is_named(tmp_path, field):
    value = _manifest().to_dict()
    del value[field]
    path = _written(tmp_path, value)
    with pytest.raises(ManifestError, match=f"{path}: field '{field}' is missing"):
        Manifest.from_json(path)


def test_not_json_not_an_object_or_no_file(tmp_path):
    path = tmp_path / manifest_name("val")
    path.write_text("{")
    with pytest.raises(ManifestError, match=f"{path}: not valid JSON"):
        Manifest.from_json(path)
    path.write_text("[]")
    with pytest.raises(ManifestError, match="not a keras-pose manifest"):
        Manifest.from_json(path)
    with pytest.raises(FileNotFoundError, match="manifest not found: .*train.manifest.json"):
        Manifest.from_json(tmp_path / manifest_name("train"))


def test_a_manifest_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _manifest().num_records = 6
