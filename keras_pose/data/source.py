"""The converter's input: a person-keypoint dataset in memory, in COCO form.

Every dataset reader (COCO, LSP/LSPET, MPII) turns its files into a :class:`PersonSource`; the
one converter core (``keras_pose.data.convert.convert_source``) turns that into TFRecord shards,
a manifest and a ground-truth file. The source's ``dataset`` is a COCO keypoint dict:

* ``images``: ``id``, ``file_name`` (relative to ``images_dir``), ``width``/``height`` when
  known (the converter then checks them against the decoded image);
* ``annotations``: ``id``, ``image_id``, ``category_id``, ``keypoints`` (flat ``x, y, v``),
  ``bbox`` (``x, y, w, h``), ``area``, ``iscrowd``, ``num_keypoints`` and, beyond COCO, an
  optional ``head_size`` (PCKh size in image pixels, 0 = unknown);
* ``categories``: one ``person`` category whose ``keypoints`` names a known keypoint set.

Like every COCO-format dict or file of the project, ``dataset`` holds keypoints in COCO's
pixel-index convention (see ``keras_pose.keypoints``); the converter core moves them into the
continuous convention (``+0.5``) when it makes records. Readers other than COCO read their
files into continuous coordinates, compute boxes and head sizes there, and write the
annotations with :func:`person_annotation`, which stores pixel indices (``-0.5``); unlabeled
keypoints are ``(0, 0, 0)``.

This module imports no TensorFlow (converter workers import it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Any

import numpy as np

from keras_pose import keypoints as kp_lib

# How the manifest and the ground-truth file name the coordinate conventions.
CONTINUOUS_CONVENTION = (
    "continuous pixel coordinates: the pixel with index (col, row) covers "
    "[col, col + 1) x [row, row + 1), its centre is (col + 0.5, row + 0.5)"
)
INDEX_CONVENTION = (
    "COCO's pixel indices: keypoint (x, y) is the centre of the pixel with index (col, row) = "
    "(x, y), continuous (x + 0.5, y + 0.5); bbox x, y, w, h in pixel edges"
)


class AnnotationFormatError(ValueError):
    """An annotation file that cannot be read as person keypoints; the message names the file."""


@dataclasses.dataclass
class PersonSource:
    """A person-keypoint dataset, ready for the converter core.

    Attributes:
        format: ``"coco"``, ``"lsp"``, ``"lspet"`` or ``"mpii"``.
        dataset: the COCO keypoint dict (see the module docstring).
        path: the annotation file it was read from.
        sha256: hex SHA-256 of that file's bytes.
        images_dir: the folder the images' ``file_name``s are relative to.
        keypoint_set: the keypoint layout of ``dataset``.
        category_id: the id of the category that carries the keypoints.
        boxes_may_leave_image: person boxes and labeled keypoints may lie partly outside the
            image. False for COCO (its boxes and keypoints are inside by definition, so an
            outside one is bad input); True where boxes are derived (LSP, MPII) or annotators
            clicked joints just past the border, which crops handle (they pad black) and the
            trainer weights 0 once outside the network input.
        ground_truth: write ``SPLIT.annotations.json`` (the converted persons, COCO's
            pixel-index convention); False where the source file itself is that (COCO).
        head_size_source: what the annotations' ``head_size`` holds: ``"head_boxes"``,
            ``"keypoints"`` (the keypoint set's head pair, the stand-in) or ``"none"``.
        details: further ``source`` entries of the manifest (image range, layout, files).
    """

    format: str
    dataset: dict
    path: str
    sha256: str
    images_dir: str
    keypoint_set: kp_lib.KeypointSet
    category_id: int = 1
    boxes_may_leave_image: bool = False
    ground_truth: bool = True
    head_size_source: str = "none"
    details: dict = dataclasses.field(default_factory=dict)

    def images_by_id(self) -> dict:
        """``image id -> image dict`` (a later duplicate id wins, as in pycocotools)."""
        return {image["id"]: image for image in self.dataset["images"]}


def read_bytes(path: str | os.PathLike, what: str) -> tuple[bytes, str]:
    """Read a whole annotation file and hash it.

    Args:
        path: the file.
        what: how to name it in messages (``"joints file"``).

    Returns:
        ``(bytes, hex SHA-256)``.

    Raises:
        AnnotationFormatError: the file cannot be read; the message names it.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise AnnotationFormatError(
            f"cannot read {what} {os.fspath(path)}: {e.strerror or e}"
        ) from None
    return raw, hashlib.sha256(raw).hexdigest()


def parse_range(value: str | tuple[int, int] | list | None) -> tuple[int, int] | None:
    """A 1-based inclusive index range, from ``"A-B"`` (or ``(A, B)``); ``None``/``""`` = all.

    Raises:
        ValueError: not two integers ``1 <= A <= B``.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", value)
        if not match:
            raise ValueError(f"range must be 'A-B' (1-based, inclusive), received {value!r}")
        first, last = int(match.group(1)), int(match.group(2))
    else:
        first, last = (int(v) for v in value)
    if not 1 <= first <= last:
        raise ValueError(
            f"range must satisfy 1 <= A <= B (1-based, inclusive), received {first}-{last}"
        )
    return first, last


def range_indices(image_range: tuple[int, int] | None, count: int, path: str,
                  unit: str) -> range:
    """0-based indices of a 1-based inclusive range over ``count`` items of a file.

    Raises:
        AnnotationFormatError: the range reaches past the file's items; names the file.
    """
    if image_range is None:
        return range(count)
    first, last = image_range
    if last > count:
        raise AnnotationFormatError(
            f"{path}: range {first}-{last} reaches past the file's {count} {unit}"
        )
    return range(first - 1, last)


def person_category(keypoint_set: kp_lib.KeypointSet, category_id: int = 1) -> dict:
    """The COCO ``person`` category of a keypoint set (skeleton 1-based, as COCO writes it)."""
    return {
        "id": category_id, "name": "person", "supercategory": "person",
        "keypoints": list(keypoint_set.names),
        "skeleton": [[a + 1, b + 1] for a, b in keypoint_set.skeleton],
    }


def box_around_keypoints(points: np.ndarray, expand: float) -> list[float]:
    """The box ``x, y, w, h`` around the labeled keypoints, grown ``expand * max(w, h)`` each way.

    The same absolute amount on every side keeps a thin (e.g. standing, side-on) person's box
    wide enough for the arms' swing. A person with no labeled keypoint gets a 1-pixel
    placeholder box at the origin (the ``min_keypoints`` filter drops it); one whose labeled
    keypoints coincide gets a zero-size box (reported as bad input: nothing gives its size).

    Args:
        points: ``[K, 3]`` continuous ``x, y, v``.
        expand: fraction of the larger side added on each side.

    Returns:
        ``[x, y, w, h]`` floats.
    """
    labeled = points[:, 2] > 0
    if not labeled.any():
        return [0.0, 0.0, 1.0, 1.0]
    low = points[labeled, :2].min(axis=0)
    high = points[labeled, :2].max(axis=0)
    pad = expand * float((high - low).max())
    return [float(low[0] - pad), float(low[1] - pad),
            float(high[0] - low[0] + 2 * pad), float(high[1] - low[1] + 2 * pad)]


def keypoint_head_sizes(points: np.ndarray, keypoint_set: kp_lib.KeypointSet) -> np.ndarray:
    """The stand-in PCKh size per person: the head pair's distance, 0 where unknown.

    The same stand-in as ``keras_pose.metrics.head_sizes(gt=...)`` (upper neck to head top
    for MPII, neck to head top for LSP), with 0 instead of NaN (the records' "unknown").

    Args:
        points: ``[N, K, 3]`` continuous ``x, y, v``.
        keypoint_set: the layout; a set without a head pair gives zeros.

    Returns:
        ``[N]`` float64.
    """
    if keypoint_set.head is None:
        return np.zeros(len(points))
    a, b = keypoint_set.head
    size = np.linalg.norm(points[:, a, :2] - points[:, b, :2], axis=-1)
    return np.where((points[:, a, 2] > 0) & (points[:, b, 2] > 0), size, 0.0)


def person_annotation(ann_id: int, image_id: int, points: np.ndarray, bbox: list[float],
                      head_size: float = 0.0, category_id: int = 1) -> dict:
    """One COCO annotation dict from ``[K, 3]`` continuous keypoints (unlabeled ones zeroed).

    The keypoints are written in COCO's pixel-index convention (``-0.5``); ``bbox`` (pixel
    edges) and ``head_size`` (a length) are the same in both conventions.
    """
    points = kp_lib.keypoints_to_coco(np.where(points[:, 2:3] > 0, points, 0.0))
    flat = [value for x, y, v in points for value in (float(x), float(y), int(v))]
    return {
        "id": int(ann_id), "image_id": int(image_id), "category_id": category_id,
        "iscrowd": 0, "keypoints": flat,
        "num_keypoints": int((points[:, 2] > 0).sum()),
        "bbox": [float(v) for v in bbox], "area": float(bbox[2] * bbox[3]),
        "head_size": float(head_size),
    }


def describe(value: Any) -> str:
    """A short repr for messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
