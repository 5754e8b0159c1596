"""The manifest of a converted split (``OUT/SPLIT.manifest.json``) as a typed value.

The converters (``keras_pose.data.convert``) write it last, after every shard, so a split is
complete exactly when its manifest exists; the reader (``keras_pose.data.dataset``), the
training run's cache and checks, the tools and the benchmarks read it back through
:meth:`Manifest.from_json`, whose errors name the file and the field.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from typing import Any

from keras_pose import io as io_lib

MANIFEST_FORMAT = "keras_pose.person_tfrecord"
# 2: ``source.format``, ``source.image_range``, ``head_size`` and ``ground_truth`` entries.
# 3: COCO-format keypoints are read as pixel indices (+0.5): records of version 2 made from
#    COCO files sit half a pixel off, so caches must not reuse them.
# 4: records store ``context`` around the crop (``image/context_pad``); the manifest says how
#    much (``context``, ``context_pad``, ``stored_size``).
MANIFEST_VERSION = 4
# Versions 2 and 3 still read (without context: the crop alone); version 1 lacks the
# ``head_size`` and ``ground_truth`` entries evaluation needs.
OLDEST_READABLE_VERSION = 2
# What a version-2 or -3 manifest stands for where it has no entry.
_BEFORE_CONTEXT = {"context": 1.0, "context_pad": 0}


def manifest_name(split: str) -> str:
    """``SPLIT.manifest.json``: the file name of a split's manifest, beside its shards."""
    return f"{split}.manifest.json"


class ManifestError(ValueError):
    """A manifest that cannot be read; the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A converted split: its shards, counts, crop and where its persons came from.

    Attributes:
        split: the split name, prefix of the shards and the manifest (``train``, ``val``).
        num_records: persons written (one record each).
        num_images: images those persons come from.
        shards: shard file names, in the folder of the manifest.
        records_per_shard: records in each shard, in the order of ``shards``.
        skipped: ``count``, ``reasons`` (``{reason: count}``) and the first ``messages``.
        keypoint_set: name of the records' keypoint set (``keras_pose.keypoints``).
        num_keypoints: K of that set.
        keypoint_names: its keypoint names in order.
        crop_size: side of the person crop in pixels.
        margin: crop side / the longer side of the person box.
        context: stored side / crop side (1: the crop alone).
        context_pad: pixels of context stored on each side of the crop.
        stored_size: side of the stored image, ``crop_size + 2 * context_pad``.
        min_keypoints: fewest labeled keypoints a stored person has.
        jpeg_quality: JPEG quality of the stored images.
        seed: seed of the image order shuffle; ``None`` kept image-id order.
        source: ``format``, ``annotations`` (path), ``sha256``, ``images`` (folder),
            ``image_range`` and the format's further entries (layout, head boxes).
        head_size: what the records' ``head_size`` holds (``source``, ``description``,
            ``units``).
        ground_truth: ``path`` of the split's COCO-format ground truth and its
            ``coordinates`` convention.
        created: UTC time of the conversion, ISO 8601.
        version: converter version that wrote it (:data:`MANIFEST_VERSION` for new ones).
        format: always :data:`MANIFEST_FORMAT`.
        path: the file it was read from (``None`` for one not read from disk); not written.
    """

    split: str
    num_records: int
    num_images: int
    shards: tuple[str, ...]
    records_per_shard: tuple[int, ...]
    skipped: dict[str, Any]
    keypoint_set: str
    num_keypoints: int
    keypoint_names: tuple[str, ...]
    crop_size: int
    margin: float
    context: float
    context_pad: int
    stored_size: int
    min_keypoints: int
    jpeg_quality: int
    seed: int | None
    source: dict[str, Any]
    head_size: dict[str, Any]
    ground_truth: dict[str, Any]
    created: str
    version: int = MANIFEST_VERSION
    format: str = MANIFEST_FORMAT
    path: str | None = dataclasses.field(default=None, compare=False)

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    @property
    def directory(self) -> str:
        """The folder of the shards (that of :attr:`path`)."""
        if self.path is None:
            raise ValueError(f"manifest of split {self.split!r} was not read from a file")
        return os.path.dirname(self.path)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the file (keys in the order the converters always wrote)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del values["path"]
        head = {"format": values.pop("format"), "version": values.pop("version"),
                "split": values.pop("split"), "num_records": values.pop("num_records"),
                "num_images": values.pop("num_images"), "num_shards": self.num_shards}
        return io_lib._json_ready({**head, **values})

    def to_json(self) -> str:
        """The file's text: indented JSON with a final newline."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def write(self, path: str | os.PathLike) -> None:
        """Write the manifest to ``path`` atomically."""
        io_lib.write_text_atomic(path, self.to_json())

    @classmethod
    def from_dict(cls, value: Any, path: str | os.PathLike | None = None) -> Manifest:
        """A manifest from its JSON object; errors name ``path`` and the field.

        Raises:
            ManifestError: not an object, another format, an unsupported version, a missing
                field or one of the wrong type.
        """
        where = os.fspath(path) if path is not None else "manifest"
        if not isinstance(value, dict):
            raise ManifestError(f"{where}: not a keras-pose manifest (a JSON "
                                f"{type(value).__name__}, not an object)")
        if "format" in value and value["format"] != MANIFEST_FORMAT:
            raise ManifestError(f"{where}: field 'format' is {value['format']!r}, not "
                                f"{MANIFEST_FORMAT!r}: not a keras-pose manifest")
        version = value.get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise ManifestError(f"{where}: field 'version' is missing or not an integer "
                                f"({version!r}): not a keras-pose manifest")
        if not OLDEST_READABLE_VERSION <= version <= MANIFEST_VERSION:
            raise ManifestError(
                f"{where}: unsupported manifest version {version} (this keras-pose reads "
                f"versions {OLDEST_READABLE_VERSION} to {MANIFEST_VERSION}); convert the split "
                "again")
        if version < 4:
            value = {**_BEFORE_CONTEXT, "stored_size": value.get("crop_size"), **value}
        hints = typing.get_type_hints(cls)
        fields = {}
        for field in dataclasses.fields(cls):
            if field.name == "path":
                continue
            if field.name not in value:
                if field.default is not dataclasses.MISSING:
                    continue
                raise ManifestError(f"{where}: field {field.name!r} is missing")
            fields[field.name] = _checked(value[field.name], hints[field.name], field.name,
                                          where)
        manifest = cls(**fields, path=None if path is None else os.fspath(path))
        if "num_shards" in value and value["num_shards"] != manifest.num_shards:
            raise ManifestError(f"{where}: field 'num_shards' is {value['num_shards']!r} but "
                                f"'shards' names {manifest.num_shards}")
        if len(manifest.records_per_shard) != manifest.num_shards:
            raise ManifestError(f"{where}: field 'records_per_shard' has "
                                f"{len(manifest.records_per_shard)} entries for "
                                f"{manifest.num_shards} shards")
        return manifest

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> Manifest:
        """Read a manifest file.

        Raises:
            FileNotFoundError: no such file (named).
            ManifestError: not JSON, or as :meth:`from_dict`; the message names the file.
        """
        try:
            value = io_lib.read_json(path, "manifest")
        except FileNotFoundError:
            raise
        except ValueError as error:
            raise ManifestError(str(error)) from None
        return cls.from_dict(value, path)


def _checked(value: Any, annotation: Any, name: str, where: str) -> Any:
    """``value`` as the field's type (lists as tuples, ints as floats), or a ManifestError."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(annotation):
            return None
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        origin = typing.get_origin(annotation)
    if origin is tuple:
        item = typing.get_args(annotation)[0]
        if isinstance(value, list) and all(_is(v, item) for v in value):
            return tuple(value)
        wanted = f"a list of {item.__name__}"
    elif origin is dict:
        if isinstance(value, dict):
            return value
        wanted = "an object"
    else:
        if _is(value, annotation):
            return float(value) if annotation is float else value
        wanted = {int: "an integer", float: "a number", str: "a string"}[annotation]
    raise ManifestError(f"{where}: field {name!r} must be {wanted}, received {value!r}")


def _is(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)
