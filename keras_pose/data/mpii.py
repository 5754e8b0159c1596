"""MPII Human Pose in the common JSON layout -> a :class:`~keras_pose.data.source.PersonSource`.

The JSON is the one the widely used PyTorch codes (HRNet, MMPose) read: a list with one entry
per person::

    {"image": "015601864.jpg", "joints": [[x, y] x 16], "joints_vis": [0 or 1 x 16],
     "center": [x, y], "scale": s}

Joints are in the ``mpii16`` order. Coordinates are MATLAB's 1-based pixel coordinates (those
codes subtract 1 on load): pixel index ``i`` (0-based) is ``i + 1`` there, so the project's
continuous coordinate (``keras_pose.keypoints``) is ``value - 0.5``. ``joints_vis`` says
whether a joint is annotated (unannotated ones hold ``(-1, -1)`` or similar): 1 becomes COCO
visibility 2 (this JSON keeps no separate occlusion flag), 0 becomes ``(0, 0, 0)``.

Person box: MPII's own person scale, not the joints: ``scale * 200`` pixels is the person's
height, and ``center`` a rough torso position. The box is the square of side
``200 * scale`` centred ``15 * scale`` pixels below ``center`` -- the shift and, with the
converter's default crop margin of 1.25, the crop size of HRNet's MPII loader. MPII's
evaluation normalises by this scale, and it holds the person even where joints are missing.

Head sizes (PCKh): with a head-box file in the layout of MPII's ``gt_valid.mat`` /
``mpii_gt_val.mat`` (``headboxes_src`` ``(2, 2, N)``: ``[[x1, y1], [x2, y2]]`` per person, in
the order of the JSON entries, optionally ``pos_gt_src`` ``(16, 2, N)`` and ``jnt_missing``
``(16, N)``), each person's ``head_size`` is 0.6 x the head box diagonal, the MPII benchmark's
normaliser. Without one it is the upper neck to head-top distance, the common stand-in
(0 where either joint is missing).
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import scipy.io

from keras_pose import keypoints as kp_lib
from keras_pose import metrics
from keras_pose.data import source as source_lib
from keras_pose.data.source import AnnotationFormatError, describe

K = kp_lib.MPII16.num_keypoints
# MATLAB's 1-based pixel coordinate -> continuous coordinate.
MATLAB_OFFSET = 1.0 - kp_lib.PIXEL_CENTER_OFFSET
# HRNet's MPII loader: person height = 200 * scale; the box centre sits 15 * scale lower.
SCALE_PIXELS = 200.0
CENTER_SHIFT = 15.0
# A head-box file's joints must match the JSON's to this many pixels, or the orders differ.
HEAD_BOX_MATCH_PX = 1.0


def _number_list(value, length: int) -> bool:
    return (isinstance(value, list) and len(value) == length and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def _check_entry(entry, index: int, path: str) -> None:
    where = f"{path}: entry {index}"
    if not isinstance(entry, dict):
        raise AnnotationFormatError(f"{where} is not an object: {describe(entry)}")
    missing = [k for k in ("image", "joints", "joints_vis", "center", "scale") if k not in entry]
    if missing:
        raise AnnotationFormatError(f"{where} lacks {missing} (found {sorted(entry)})")
    where = f"{where} (image {entry['image']!r})"
    if not isinstance(entry["image"], str) or not entry["image"]:
        raise AnnotationFormatError(f"{where}: 'image' must be a file name")
    joints = entry["joints"]
    if not isinstance(joints, list) or len(joints) != K or not all(
            _number_list(j, 2) for j in joints):
        raise AnnotationFormatError(
            f"{where}: 'joints' must be {K} [x, y] number pairs, found {describe(joints)}")
    if not _number_list(entry["joints_vis"], K) or not all(
            v in (0, 1) for v in entry["joints_vis"]):
        raise AnnotationFormatError(
            f"{where}: 'joints_vis' must be {K} flags 0 or 1, found "
            f"{describe(entry['joints_vis'])}")
    for k, (xy, flag) in enumerate(zip(joints, entry["joints_vis"])):
        if flag and not all(np.isfinite(xy)):
            raise AnnotationFormatError(
                f"{where}: labeled joint {k} ({kp_lib.MPII16.names[k]}) is not finite: {xy}")
    if not _number_list(entry["center"], 2) or not _number_list([entry["scale"]], 1):
        raise AnnotationFormatError(
            f"{where}: 'center' must be [x, y] and 'scale' a number, found "
            f"{describe(entry['center'])}, {describe(entry['scale'])}")


def read_annotations(path: str | os.PathLike) -> tuple[list[dict], str]:
    """Read and check an MPII JSON annotation file.

    Args:
        path: the JSON file.

    Returns:
        ``(entries, sha256)``: the list of person entries, the file's hash.

    Raises:
        AnnotationFormatError: unreadable, not JSON, not a list of person entries, or an
            entry with missing or malformed fields or a non-finite labeled joint; the message
            names the file and the entry.
    """
    path = os.fspath(path)
    raw, sha256 = source_lib.read_bytes(path, "annotation file")
    try:
        entries = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AnnotationFormatError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(entries, list):
        raise AnnotationFormatError(
            f"{path}: the top level is a {type(entries).__name__}; the MPII JSON is a list of "
            "person entries with 'image', 'joints', 'joints_vis', 'center' and 'scale'")
    for index, entry in enumerate(entries):
        _check_entry(entry, index, path)
    return entries, sha256


def entry_points(entry: dict) -> np.ndarray:
    """``[16, 3]`` continuous ``x, y`` and COCO visibility of one entry (unlabeled zeroed)."""
    labeled = np.asarray(entry["joints_vis"]) > 0
    xy = np.asarray(entry["joints"], np.float64) - MATLAB_OFFSET
    xy = np.where(labeled[:, None], xy, 0.0)
    return np.concatenate([xy, np.where(labeled, 2.0, 0.0)[:, None]], axis=-1)


def entry_box(entry: dict) -> list[float]:
    """The square person box ``x, y, w, h`` (continuous) from MPII's centre and scale."""
    scale = float(entry["scale"])
    cx, cy = (float(v) - MATLAB_OFFSET for v in entry["center"])
    cy += CENTER_SHIFT * scale
    side = SCALE_PIXELS * scale
    return [cx - side / 2, cy - side / 2, side, side]


def _mat_array(data: dict, name: str, path: str, shape: tuple) -> np.ndarray:
    if name not in data:
        found = sorted(k for k in data if not k.startswith("__"))
        raise AnnotationFormatError(f"{path}: no variable {name!r} (found {found or 'none'})")
    array = np.asarray(data[name])
    if not np.issubdtype(array.dtype, np.number) or array.shape != shape:
        raise AnnotationFormatError(
            f"{path}: variable {name!r} must be a numeric array of shape {shape}, found "
            f"{array.dtype} {array.shape}")
    return array.astype(np.float64)


def read_head_boxes(path: str | os.PathLike, entries: list[dict]) -> tuple[np.ndarray, str]:
    """Read MPII head boxes for the JSON's entries and check that they belong to them.

    Args:
        path: a ``.mat`` file with ``headboxes_src`` ``(2, 2, N)`` (and optionally
            ``pos_gt_src`` ``(16, 2, N)`` and ``jnt_missing`` ``(16, N)``), N = the entries.
        entries: the JSON entries, in the file's order.

    Returns:
        ``(boxes, sha256)``: float64 ``[N, 4]`` continuous ``x1, y1, x2, y2``, the file's hash.

    Raises:
        AnnotationFormatError: unreadable, missing variable, wrong shape, non-finite box, or
            (with ``pos_gt_src``) joints that differ from the JSON's (another split's file).
    """
    path = os.fspath(path)
    raw, sha256 = source_lib.read_bytes(path, "head-box file")
    try:
        data = scipy.io.loadmat(io.BytesIO(raw))
    except Exception as e:  # noqa: BLE001 - scipy raises several types for non-MATLAB bytes
        raise AnnotationFormatError(f"{path} is not a MATLAB .mat file scipy can read: {e}"
                                    ) from None
    n = len(entries)
    boxes = _mat_array(data, "headboxes_src", path, (2, 2, n))
    boxes = boxes.transpose(2, 0, 1).reshape(n, 4) - MATLAB_OFFSET
    bad = ~np.all(np.isfinite(boxes), axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise AnnotationFormatError(
            f"{path}: head box of entry {i} (image {entries[i]['image']!r}) is not finite")
    if "pos_gt_src" in data:
        _check_same_joints(data, entries, path)
    return boxes, sha256


def _check_same_joints(data: dict, entries: list[dict], path: str) -> None:
    n = len(entries)
    positions = _mat_array(data, "pos_gt_src", path, (K, 2, n)).transpose(2, 0, 1)
    missing = (_mat_array(data, "jnt_missing", path, (K, n)).T > 0
               if "jnt_missing" in data else np.zeros((n, K), bool))
    for i, entry in enumerate(entries):
        both = (np.asarray(entry["joints_vis"]) > 0) & ~missing[i]
        gap = np.abs(np.asarray(entry["joints"], np.float64) - positions[i])[both]
        if gap.size and gap.max() > HEAD_BOX_MATCH_PX:
            raise AnnotationFormatError(
                f"{path}: its joints of entry {i} differ from the annotation file's (image "
                f"{entry['image']!r}, by up to {gap.max():.1f} px): the head boxes belong to "
                "another split or order")


def load_mpii(annotations: str | os.PathLike, images: str | os.PathLike,
              head_boxes: str | os.PathLike | None = None,
              image_range: str | tuple[int, int] | None = None) -> source_lib.PersonSource:
    """An MPII JSON (and optional head-box ``.mat``) and its images folder as a source.

    Args:
        annotations: the JSON file (``train.json``, ``valid.json``).
        images: the folder holding the images named by the entries.
        head_boxes: ``.mat`` with the entries' head boxes (see module docstring); ``None`` =
            the upper neck to head-top stand-in.
        image_range: 1-based inclusive range of JSON entries (persons); ``None`` = all.

    Returns:
        A :class:`~keras_pose.data.source.PersonSource`: entry ``i`` (1-based) has annotation
        id ``i``; images are numbered from 1 in order of first appearance in the file.

    Raises:
        AnnotationFormatError: see :func:`read_annotations` and :func:`read_head_boxes`;
            also a range past the file's entries.
    """
    path = os.fspath(annotations)
    span = source_lib.parse_range(image_range)
    entries, sha256 = read_annotations(path)
    indices = source_lib.range_indices(span, len(entries), path, "person entries")
    points = np.stack([entry_points(e) for e in entries]) if entries else np.zeros((0, K, 3))
    details: dict = {"image_range": list(span) if span else None,
                     "num_persons_in_file": len(entries),
                     "box": "square of side 200 * scale centred 15 * scale below 'center'"}
    if head_boxes is not None:
        boxes, head_sha = read_head_boxes(head_boxes, entries)
        sizes = metrics.head_sizes(boxes)
        details["head_boxes"] = {"path": os.path.abspath(head_boxes), "sha256": head_sha}
    else:
        sizes = source_lib.keypoint_head_sizes(points, kp_lib.MPII16)
    # Ids over the whole file, so a range's images keep the ids they have in the full set.
    image_ids: dict[str, int] = {}
    for entry in entries:
        image_ids.setdefault(entry["image"], len(image_ids) + 1)
    annotations_list = [
        source_lib.person_annotation(i + 1, image_ids[entries[i]["image"]], points[i],
                                     entry_box(entries[i]), sizes[i])
        for i in indices
    ]
    used = {a["image_id"] for a in annotations_list}
    dataset = {
        "images": [{"id": v, "file_name": k} for k, v in image_ids.items() if v in used],
        "annotations": annotations_list,
        "categories": [source_lib.person_category(kp_lib.MPII16)],
    }
    return source_lib.PersonSource(
        format="mpii", dataset=dataset, path=path, sha256=sha256,
        images_dir=os.fspath(images), keypoint_set=kp_lib.MPII16, boxes_may_leave_image=True,
        head_size_source="head_boxes" if head_boxes is not None else "keypoints",
        details=details,
    )
