"""COCO keypoint annotations -> person records: validation, image decoding and exact crops.

This module is the per-image work of ``keras_pose.data.convert``. It imports no TensorFlow so
that converter worker processes start fast; it returns plain dicts of numpy arrays and bytes.

Crop geometry (see ``keras_pose.keypoints`` for the coordinate convention): a person's crop is
the square of side ``margin * max(bbox_w, bbox_h)`` centred on the bbox centre, resized to
``crop_size`` pixels. Crop point ``c`` maps to image point ``box_xy + c * side / crop_size``.
Parts of the square outside the image are black.

Context: the stored image is that crop with ``context_pad`` more pixels of the surrounding
image on each side, at the same pixels per box (side ``crop_size + 2 * context_pad``), so the
training step can zoom out and rotate into real surroundings. The crop is the stored image's
window at ``(context_pad, context_pad)``; keypoints and ``crop_box`` still describe the crop.

Keypoints: COCO files hold pixel indices (the reference code's convention, see
``keras_pose.keypoints``); :func:`check_annotation` moves them into the project's continuous
convention (``+0.5``, ``keypoints.keypoints_from_coco``), so records hold continuous
coordinates. A keypoint counts as inside the image when its continuous coordinate lies within
``EDGE_TOLERANCE`` (half a pixel) of the image's extent ``[0, W] x [0, H]``: file values from
``-1`` to ``W`` are accepted, as annotators' clicks on the border pixels give them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import signal
from typing import Any

import cv2
import numpy as np
from pycocotools.coco import COCO

from keras_pose import keypoints as kp_lib
from keras_pose.data.source import AnnotationFormatError

# Skip reasons that are ordinary filters; every other reason counted in the manifest is bad
# input (reported with a message, fatal under ``strict``).
FILTER_REASONS = ("iscrowd", "too_few_keypoints")


# How far (pixels, continuous) a labeled keypoint may lie outside the image and still count.
EDGE_TOLERANCE = 0.5


class CocoFormatError(AnnotationFormatError):
    """The annotation file is not valid JSON or not a COCO keypoint annotation file."""


class SkipAnnotation(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """An annotation or image that cannot become a record; carries a reason and a message."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclasses.dataclass
class CocoKeypoints:
    """A loaded and structurally checked COCO keypoint annotation file.

    Attributes:
        coco: the ``pycocotools.coco.COCO`` index of the file.
        path: the annotation file path.
        sha256: hex SHA-256 of the file's bytes.
        keypoint_set: the detected ``KeypointSet``.
        category_id: the id of the category that carries the keypoints.
    """

    coco: Any
    path: str
    sha256: str
    keypoint_set: kp_lib.KeypointSet
    category_id: int


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def detect_keypoint_set(categories: list[dict]) -> tuple[kp_lib.KeypointSet, int]:
    """Find the category with keypoint names and match the names to a known keypoint set.

    Args:
        categories: the ``categories`` list of a COCO annotation file.

    Returns:
        ``(keypoint_set, category_id)``.

    Raises:
        CocoFormatError: no category has keypoints, several do, or the names match no set.
    """
    with_keypoints = [c for c in categories if isinstance(c, dict) and c.get("keypoints")]
    if not with_keypoints:
        raise CocoFormatError(
            "no category has a 'keypoints' list of names; this is not a COCO keypoint "
            "annotation file (person_keypoints_*.json)"
        )
    if len(with_keypoints) > 1:
        persons = [c for c in with_keypoints if c.get("name") == "person"]
        if len(persons) != 1:
            names = [c.get("name") for c in with_keypoints]
            raise CocoFormatError(
                f"several categories have keypoints ({names}) and none is uniquely named "
                "'person'; keep one keypoint category in the file"
            )
        with_keypoints = persons
    category = with_keypoints[0]
    try:
        keypoint_set = kp_lib.infer_keypoint_set(names=category["keypoints"])
    except ValueError as error:
        raise CocoFormatError(f"category {category.get('name')!r}: {error}") from None
    if "id" not in category:
        raise CocoFormatError(f"category {category.get('name')!r} has no 'id'")
    return keypoint_set, category["id"]


def load_coco_keypoints(path: str | os.PathLike) -> CocoKeypoints:
    """Read, hash and check a COCO keypoint annotation file and index it with pycocotools.

    Args:
        path: the ``person_keypoints_*.json`` file.

    Returns:
        A :class:`CocoKeypoints`.

    Raises:
        CocoFormatError: unreadable file, invalid JSON, or not COCO keypoint annotations; the
            message names the file and what is wrong.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise CocoFormatError(f"cannot read annotation file {path}: {e.strerror or e}") from None
    sha256 = hashlib.sha256(raw).hexdigest()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CocoFormatError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise CocoFormatError(
            f"{path} is not a COCO annotation file: the top level is a "
            f"{type(data).__name__}, expected an object with 'images', 'annotations' and "
            "'categories'"
        )
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise CocoFormatError(
            f"{path} is not a COCO annotation file: missing key(s) {missing} "
            f"(found {sorted(data)[:10]})"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise CocoFormatError(
                f"{path}: '{key}' must be a list, found {type(data[key]).__name__}"
            )
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise CocoFormatError(
                f"{path}: images[{i}] must be an object with 'id' and 'file_name', "
                f"found {_describe(image)}"
            )
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise CocoFormatError(f"{path}: annotations[{i}] is not an object: {_describe(ann)}")
        lacking = [k for k in ("id", "image_id", "category_id") if k not in ann]
        if lacking:
            raise CocoFormatError(
                f"{path}: annotations[{i}] (id {ann.get('id')}) lacks {lacking}"
            )
    try:
        keypoint_set, category_id = detect_keypoint_set(data["categories"])
    except CocoFormatError as e:
        raise CocoFormatError(f"{path}: {e}") from None

    coco = COCO()
    coco.dataset = data
    # pycocotools prints progress lines; keep the converter's output to its own messages.
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return CocoKeypoints(coco, path, sha256, keypoint_set, category_id)


def _finite_numbers(values: Any, length: int) -> np.ndarray | None:
    if not isinstance(values, (list, tuple)) or len(values) != length:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    return np.asarray(values, np.float64)


def check_annotation(ann: dict, num_keypoints: int, min_keypoints: int,
                     allow_outside: bool = False) -> dict:
    """Check one person annotation and return its numeric fields.

    Args:
        ann: a COCO annotation dict (already known to be non-crowd of the keypoint category).
        num_keypoints: K of the keypoint set.
        min_keypoints: the fewest labeled keypoints (v > 0) a person needs.
        allow_outside: accept a bbox corner or labeled keypoints at negative coordinates
            (sources whose boxes are derived, see ``PersonSource.boxes_may_leave_image``).

    Returns:
        dict with ``bbox`` float64 [4], ``keypoints`` float64 [K, 3] (x, y, v; labeled
        ``x, y`` moved from the file's pixel indices to continuous coordinates, ``+0.5``),
        ``area``.

    Raises:
        SkipAnnotation: with reason ``bad_bbox``, ``bad_keypoints`` or ``too_few_keypoints``.
    """
    name = f"annotation {ann.get('id')} (image {ann.get('image_id')})"
    bbox = _finite_numbers(ann.get("bbox"), 4)
    if bbox is None or not np.all(np.isfinite(bbox)):
        raise SkipAnnotation(
            "bad_bbox", f"{name}: bbox must be 4 finite numbers x, y, w, h, "
            f"found {_describe(ann.get('bbox'))}"
        )
    if not allow_outside and (bbox[0] < 0 or bbox[1] < 0):
        raise SkipAnnotation("bad_bbox", f"{name}: bbox has a negative corner {bbox.tolist()}")
    if bbox[2] <= 0 or bbox[3] <= 0:
        raise SkipAnnotation("bad_bbox", f"{name}: bbox has zero size {bbox.tolist()}")
    flat = _finite_numbers(ann.get("keypoints"), 3 * num_keypoints)
    if flat is None:
        raise SkipAnnotation(
            "bad_keypoints", f"{name}: keypoints must be {3 * num_keypoints} numbers "
            f"(x, y, v for {num_keypoints} keypoints), found {_describe(ann.get('keypoints'))}"
        )
    points = flat.reshape(num_keypoints, 3)
    if not np.all(np.isfinite(points)):
        bad = int(np.argwhere(~np.isfinite(points))[0][0])
        raise SkipAnnotation(
            "bad_keypoints", f"{name}: keypoint {bad} is not finite: {points[bad].tolist()}"
        )
    visibility = points[:, 2]
    if not np.all(np.isin(visibility, (0, 1, 2))):
        raise SkipAnnotation(
            "bad_keypoints",
            f"{name}: keypoint visibility must be 0, 1 or 2, found {visibility.tolist()}",
        )
    labeled = visibility > 0
    file_points = points
    points = kp_lib.keypoints_from_coco(file_points)
    negative = labeled & np.any(points[:, :2] < -EDGE_TOLERANCE, axis=1)
    if not allow_outside and np.any(negative):
        bad = int(np.argmax(negative))
        raise SkipAnnotation(
            "bad_keypoints", f"{name}: keypoint {bad} has a negative coordinate "
            f"{file_points[bad, :2].tolist()}"
        )
    if int(labeled.sum()) < min_keypoints:
        raise SkipAnnotation(
            "too_few_keypoints",
            f"{name}: {int(labeled.sum())} labeled keypoints, fewer than {min_keypoints}",
        )
    area = ann.get("area")
    if not isinstance(area, (int, float)) or not math.isfinite(area) or area < 0:
        area = float(bbox[2] * bbox[3])
    return {"bbox": bbox, "keypoints": points, "area": float(area)}


def crop_box_for_bbox(bbox: np.ndarray, margin: float) -> np.ndarray:
    """The square crop box ``[x, y, side, side]`` around a COCO bbox ``[x, y, w, h]``."""
    x, y, w, h = (float(v) for v in bbox)
    side = margin * max(w, h)
    return np.array([x + w / 2 - side / 2, y + h / 2 - side / 2, side, side], np.float64)


def context_pad(crop_size: int, context: float) -> int:
    """Pixels of context on each side of a ``crop_size`` crop for a ``context`` factor.

    ``context`` is the stored side over the crop side (1 = none); the pad is rounded up to
    whole pixels, so the crop stays on the stored pixel grid and its keypoints stay exact.
    """
    # The small tolerance keeps an exact factor (1.5 x 128) from rounding up a pixel.
    return max(0, math.ceil((float(context) - 1.0) * crop_size / 2.0 - 1e-6))


def context_box(crop_box: np.ndarray, crop_size: int, pad: int) -> np.ndarray:
    """The stored square ``[x, y, side, side]``: ``crop_box`` grown by ``pad`` crop pixels a
    side, so the stored image has the crop's pixels per box."""
    grow = pad * float(crop_box[2]) / crop_size
    return np.array([crop_box[0] - grow, crop_box[1] - grow, crop_box[2] + 2 * grow,
                     crop_box[3] + 2 * grow], np.float64)


def crop_matrix(crop_box: np.ndarray, crop_size: int, origin=(0.0, 0.0), factor: float = 1.0):
    """The 2x3 ``cv2.warpAffine`` matrix (array indices, source -> crop) of a crop box.

    Continuous coordinates map as ``crop = (image - box_xy) * crop_size / side``; in array
    indices (``index = coord - 0.5``) that is ``dst = (src + 0.5 - box_xy) * scale - 0.5``.

    Args:
        crop_box: ``[x, y, side, side]`` in image pixels.
        crop_size: side of the crop in pixels.
        origin: image point of the source array's (0, 0) corner, for a source that is a
            sub-window of the image.
        factor: how many image pixels one source pixel spans (a source downscaled by it).

    Returns:
        float64 [2, 3].
    """
    scale = crop_size / float(crop_box[2])
    # Continuous source coordinate s covers image point origin + s * factor.
    bx = (float(crop_box[0]) - origin[0]) / factor
    by = (float(crop_box[1]) - origin[1]) / factor
    s = scale * factor
    # dst = coord_to_index((index_to_coord(src) - box_xy) * s): the offsets in the translation.
    tx = kp_lib.coord_to_index(kp_lib.index_to_coord(-bx) * s)
    ty = kp_lib.coord_to_index(kp_lib.index_to_coord(-by) * s)
    return np.array([[s, 0.0, tx], [0.0, s, ty]])


def crop_image(image: np.ndarray, crop_box: np.ndarray, crop_size: int) -> np.ndarray:
    """Cut the crop box out of ``image`` and resize it to ``crop_size`` (black outside).

    Downscaling by 2x or more first averages integer blocks of the covered window
    (``cv2.INTER_AREA``, exact in the pixel-centre convention), then warps bilinearly: plain
    bilinear sampling would alias large people.

    Args:
        image: uint8 [H, W, C].
        crop_box: ``[x, y, side, side]`` in image pixels.
        crop_size: output side.

    Returns:
        uint8 [crop_size, crop_size, C].
    """
    height, width = image.shape[:2]
    scale = crop_size / float(crop_box[2])
    factor = int(math.floor(1.0 / scale)) if scale < 1.0 else 1
    origin = (0.0, 0.0)
    source = image
    if factor >= 2:
        # The image window the box covers (plus one pixel for bilinear taps), extended to a
        # multiple of the factor; blocks past the image edge are padded black as the crop is.
        x0 = max(0, int(math.floor(crop_box[0])) - 1)
        y0 = max(0, int(math.floor(crop_box[1])) - 1)
        x1 = min(width, int(math.ceil(crop_box[0] + crop_box[2])) + 1)
        y1 = min(height, int(math.ceil(crop_box[1] + crop_box[3])) + 1)
        if x1 > x0 and y1 > y0:
            window = image[y0:y1, x0:x1]
            pad_y = -(y1 - y0) % factor
            pad_x = -(x1 - x0) % factor
            if pad_x or pad_y:
                window = cv2.copyMakeBorder(
                    window, 0, pad_y, 0, pad_x, cv2.BORDER_CONSTANT, value=0
                )
            size = (window.shape[1] // factor, window.shape[0] // factor)
            source = cv2.resize(window, size, interpolation=cv2.INTER_AREA)
            if source.ndim == 2:
                source = source[:, :, None]
            origin = (float(x0), float(y0))
        else:
            factor = 1
    else:
        factor = 1
    matrix = crop_matrix(crop_box, crop_size, origin, factor)
    crop = cv2.warpAffine(
        source, matrix, (crop_size, crop_size), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )
    if crop.ndim == 2:
        crop = crop[:, :, None]
    return crop


def _looks_truncated(data: bytes) -> str | None:
    """Why the encoded image is incomplete, or None (decoders may silently fill the rest)."""
    if data[:2] == b"\xff\xd8":
        # Entropy-coded data escapes 0xFF, so an end-of-image marker after the last
        # start-of-scan marker is the end of a complete JPEG (a thumbnail's comes before it).
        if data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
            return "truncated JPEG (no end-of-image marker after the last scan)"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-16:]:
            return "truncated PNG (no IEND chunk at the end)"
    return None


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode image bytes to 3-channel BGR uint8 in the frame COCO annotators saw.

    Grayscale, CMYK, palette, 16-bit and alpha images are converted to 8-bit BGR, and the EXIF
    orientation is applied (``cv2.IMREAD_COLOR`` does both).

    Args:
        data: the encoded file.
        name: how to name the image in messages.

    Returns:
        uint8 [H, W, 3] in BGR channel order (what ``cv2.imencode`` expects).

    Raises:
        SkipAnnotation: reason ``unreadable_image`` for empty, truncated or undecodable data.
    """
    if not data:
        raise SkipAnnotation("unreadable_image", f"{name}: the image file is empty")
    truncated = _looks_truncated(data)
    if truncated:
        raise SkipAnnotation("unreadable_image", f"{name}: {truncated}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise SkipAnnotation(
            "unreadable_image", f"{name}: cannot decode the image ({len(data)} bytes; "
            "not a JPEG/PNG/other format OpenCV reads, or corrupt)"
        )
    return image


def image_task(
    info: dict, anns: list[dict], images_dir: str, crop_size: int, margin: float,
    jpeg_quality: int, allow_outside: bool = False, pad: int = 0,
) -> dict:
    """The picklable unit of work for one image: its file and its checked annotations.

    ``allow_outside`` keeps persons with labeled keypoints past the image's right or bottom
    edge (see ``PersonSource.boxes_may_leave_image``); ``pad`` is the context in crop pixels
    stored on each side of the crop (:func:`context_pad`).
    """
    return {
        "path": os.path.join(images_dir, str(info["file_name"])),
        "image_id": info["id"],
        "file_name": str(info["file_name"]),
        "height": info.get("height"),
        "width": info.get("width"),
        "anns": anns,
        "crop_size": crop_size,
        "margin": margin,
        "jpeg_quality": jpeg_quality,
        "allow_outside": allow_outside,
        "context_pad": int(pad),
    }


def process_image(task: dict) -> dict:
    """Read one image and make a record per checked annotation (the converter's worker).

    Args:
        task: from :func:`image_task`; ``anns`` holds dicts with ``id``, optionally
            ``head_size``, and the output of :func:`check_annotation`.

    Returns:
        dict with ``records`` (list of dicts with the ``PersonRecord`` fields) and ``skipped``
        (list of ``(reason, message, count)``).
    """
    name = f"image {task['image_id']} ({task['path']})"
    anns = task["anns"]
    try:
        try:
            with open(task["path"], "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise SkipAnnotation("missing_image", f"{name}: image file not found") from None
        except OSError as e:
            raise SkipAnnotation(
                "missing_image", f"{name}: cannot read the image file: {e.strerror or e}"
            ) from None
        image = decode_image(data, name)
        height, width = image.shape[:2]
        if task["height"] is not None and task["width"] is not None and (
            (height, width) != (task["height"], task["width"])
        ):
            raise SkipAnnotation(
                "image_size_mismatch",
                f"{name}: decoded size {height}x{width} (height x width, EXIF orientation "
                f"applied) differs from the annotation file's {task['height']}x{task['width']}",
            )
    except SkipAnnotation as e:
        return {"records": [], "skipped": [(e.reason, e.message, len(anns))]}

    records, skipped = [], []
    crop_size = task["crop_size"]
    pad = task.get("context_pad", 0)
    for ann in anns:
        bbox, points = ann["bbox"], ann["keypoints"]
        ann_name = f"annotation {ann['id']} ({name})"
        if bbox[0] >= width or bbox[1] >= height:
            skipped.append((
                "bad_bbox",
                f"{ann_name}: bbox {bbox.tolist()} lies outside the {width}x{height} image", 1,
            ))
            continue
        # ``points`` are continuous (check_annotation moved them from COCO's pixel indices).
        labeled = points[:, 2] > 0
        outside = labeled & ((points[:, 0] > width + EDGE_TOLERANCE)
                             | (points[:, 1] > height + EDGE_TOLERANCE))
        if np.any(outside) and not task.get("allow_outside", False):
            k = int(np.argmax(outside))
            skipped.append((
                "bad_keypoints",
                f"{ann_name}: keypoint {k} {kp_lib.coord_to_index(points[k, :2]).tolist()} "
                f"(pixel indices) lies outside the {width}x{height} image", 1,
            ))
            continue
        crop_box = crop_box_for_bbox(bbox, task["margin"])
        # The stored image: the crop plus ``pad`` pixels of surroundings a side, same scale.
        stored = crop_image(image, context_box(crop_box, crop_size, pad), crop_size + 2 * pad)
        ok, encoded = cv2.imencode(
            ".jpg", stored, [cv2.IMWRITE_JPEG_QUALITY, int(task["jpeg_quality"])]
        )
        if not ok:  # pragma: no cover - OpenCV encodes any uint8 BGR array
            raise RuntimeError(f"{ann_name}: JPEG encoding of the crop failed")
        image_points = np.where(labeled[:, None], points[:, :2], 0.0)
        crop_points = (points[:, :2] - crop_box[:2]) * (crop_size / crop_box[2])
        crop_points = np.where(labeled[:, None], crop_points, 0.0)
        records.append({
            "image_jpeg": encoded.tobytes(),
            "crop_size": crop_size,
            "context_pad": pad,
            "image_id": task["image_id"],
            "filename": task["file_name"],
            "image_height": height,
            "image_width": width,
            "crop_box": crop_box.astype(np.float32),
            "keypoints_crop": crop_points.astype(np.float32),
            "keypoints_image": image_points.astype(np.float32),
            "visibility": points[:, 2].astype(np.int64),
            "bbox": bbox.astype(np.float32),
            "area": ann["area"],
            "annotation_id": ann["id"],
            "head_size": float(ann.get("head_size", 0.0)),
        })
    return {"records": records, "skipped": skipped}


def worker_init() -> None:
    """Pool initializer: one OpenCV thread per worker process, Ctrl-C handled by the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
