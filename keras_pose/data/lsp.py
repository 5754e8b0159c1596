"""LSP and LSPET ``joints.mat`` -> a :class:`~keras_pose.data.source.PersonSource`.

Both Leeds Sports Pose releases store one person per image in a MATLAB v5 file with the
variable ``joints``, 14 joints in the ``lsp14`` order, 0-based pixel coordinates:

=========  ===============  ======================================================================
release    array shape      third entry per joint (the flag)
=========  ===============  ======================================================================
LSP        ``(3, 14, N)``   1 = occluded, 0 = visible. Every joint is annotated (occluded ones
                            with their estimated position), so all 14 are labeled: COCO
                            visibility 1 (occluded) or 2 (visible).
LSPET      ``(14, 3, N)``   1 = annotated and visible, 0 = NOT annotated: the coordinates are
                            junk (e.g. ``(0, -26)``). COCO visibility 2 or 0.
=========  ===============  ======================================================================

The layout is detected from the shape; ``layout="lsp"`` or ``"lspet"`` forces a release's
flag sense (and image names) for a file saved in the other axis order. Images are
``im0001.jpg`` (LSP, 4 digits) or ``im00001.jpg`` (LSPET, 5 digits), numbered from 1 in
file order; an image range (1-based, inclusive) selects a split.

Coordinates are converted on load to the project convention (``keras_pose.keypoints``): a
0-based pixel index ``i`` is the pixel centre ``i + 0.5``. Unlabeled joints become
``(0, 0, 0)``.

The person box (neither release has one) is the labeled joints' extent grown by
``BOX_EXPANSION`` (7.5 %) of its larger side on each side: joints are points inside the body,
and feet, hands and flesh reach a little past ankles, wrists and head top. With the converter's
crop margin of 1.25 the crop side is about 1.44 times the joint extent: room for rotation, and
still most of the crop's pixels on the person (the ``lspet`` pipeline's notes). Boxes are not
clipped to the image: crops outside it are black.
"""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np
import scipy.io

from keras_pose import keypoints as kp_lib
from keras_pose.data import source as source_lib
from keras_pose.data.source import AnnotationFormatError

LAYOUTS = ("lsp", "lspet")
# joints.mat axis order of each release: (row of x/y/flag, joint) or (joint, row).
LAYOUT_SHAPES = {"lsp": (3, 14), "lspet": (14, 3)}
IMAGE_NAMES = {"lsp": "im{:04d}.jpg", "lspet": "im{:05d}.jpg"}
BOX_EXPANSION = 0.075
VARIABLE = "joints"


def _load_mat(raw: bytes, path: str) -> dict:
    try:
        return scipy.io.loadmat(io.BytesIO(raw))
    except NotImplementedError:
        raise AnnotationFormatError(
            f"{path}: a MATLAB v7.3 (HDF5) file; save it as v7 or older (save -v7)"
        ) from None
    except Exception as e:  # noqa: BLE001 - scipy raises several types for non-MATLAB bytes
        raise AnnotationFormatError(
            f"{path} is not a MATLAB .mat file scipy can read: {e}"
        ) from None


def _joints_array(data: dict, path: str) -> np.ndarray:
    """The ``joints`` variable as float64 ``[N, 14, 3]`` (x, y, flag), any layout."""
    variables = sorted(k for k in data if not k.startswith("__"))
    if VARIABLE not in data:
        raise AnnotationFormatError(
            f"{path}: no variable {VARIABLE!r} (found {variables or 'none'}); LSP and LSPET "
            "store the joints as 'joints'"
        )
    joints = data[VARIABLE]
    if not isinstance(joints, np.ndarray) or not np.issubdtype(joints.dtype, np.number):
        raise AnnotationFormatError(
            f"{path}: variable 'joints' must be a numeric array, found "
            f"{type(joints).__name__} {getattr(joints, 'dtype', '')}"
        )
    if joints.ndim == 2 and joints.shape in LAYOUT_SHAPES.values():
        joints = joints[:, :, None]  # MATLAB drops a trailing singleton: one image
    if joints.ndim != 3 or joints.shape[:2] not in LAYOUT_SHAPES.values() or not joints.shape[2]:
        raise AnnotationFormatError(
            f"{path}: variable 'joints' has shape {joints.shape}; expected (3, 14, N) (LSP) "
            "or (14, 3, N) (LSPET) with N >= 1 images"
        )
    joints = joints.astype(np.float64)
    if joints.shape[:2] == LAYOUT_SHAPES["lsp"]:
        return joints.transpose(2, 1, 0)
    return joints.transpose(2, 0, 1)


def _check_values(joints: np.ndarray, layout: str, path: str, names: str) -> None:
    flags = joints[:, :, 2]
    bad = ~np.isin(flags, (0.0, 1.0))
    if bad.any():
        i, k = (int(v) for v in np.argwhere(bad)[0])
        raise AnnotationFormatError(
            f"{path}: joint {k} ({kp_lib.LSP14.names[k]}) of image {names.format(i + 1)} has "
            f"flag {float(flags[i, k])}; the third entry must be 0 or 1"
        )
    labeled = _labeled(flags, layout)
    bad = labeled & ~np.all(np.isfinite(joints[:, :, :2]), axis=-1)
    if bad.any():
        i, k = (int(v) for v in np.argwhere(bad)[0])
        raise AnnotationFormatError(
            f"{path}: labeled joint {k} ({kp_lib.LSP14.names[k]}) of image "
            f"{names.format(i + 1)} (image index {i + 1}) is not finite: "
            f"{joints[i, k, :2].tolist()}"
        )


def _labeled(flags: np.ndarray, layout: str) -> np.ndarray:
    # LSP annotates every joint; LSPET's flag 0 means "not annotated".
    return np.ones(flags.shape, bool) if layout == "lsp" else flags == 1.0


def _coco_visibility(flags: np.ndarray, layout: str) -> np.ndarray:
    if layout == "lsp":
        return np.where(flags == 1.0, 1, 2)  # 1 = occluded, but labeled
    return np.where(flags == 1.0, 2, 0)


def detect_layout(shape: tuple[int, ...]) -> str:
    """``"lsp"`` for a ``(3, 14, ...)`` array, ``"lspet"`` for ``(14, 3, ...)``."""
    return "lsp" if tuple(shape[:2]) == LAYOUT_SHAPES["lsp"] else "lspet"


@dataclasses.dataclass
class LspJoints:
    """A checked ``joints.mat``.

    Attributes:
        points: float64 ``[N, 14, 3]``: continuous ``x, y`` and COCO visibility; unlabeled
            joints are ``(0, 0, 0)``.
        layout: the release whose flag sense was applied, ``"lsp"`` or ``"lspet"``.
        shape: the stored array's shape.
        sha256: hex SHA-256 of the file.
    """

    points: np.ndarray
    layout: str
    shape: tuple[int, ...]
    sha256: str


def read_joints(path: str | os.PathLike, layout: str = "auto") -> LspJoints:
    """Read and check a ``joints.mat`` of LSP or LSPET.

    Args:
        path: the ``.mat`` file.
        layout: ``"auto"`` (from the array shape), ``"lsp"`` or ``"lspet"`` (that release's
            flag sense, whatever the axis order).

    Returns:
        A :class:`LspJoints`.

    Raises:
        AnnotationFormatError: unreadable or not MATLAB, no ``joints`` variable, wrong shape,
            a flag other than 0/1, or a labeled joint that is not finite; the message names
            the file (and the image and joint).
        ValueError: an unknown ``layout``.
    """
    if layout not in ("auto", *LAYOUTS):
        raise ValueError(f"layout must be 'auto', 'lsp' or 'lspet', received {layout!r}")
    path = os.fspath(path)
    raw, sha256 = source_lib.read_bytes(path, "joints file")
    data = _load_mat(raw, path)
    shape = np.shape(data.get(VARIABLE))
    joints = _joints_array(data, path)
    if layout == "auto":
        layout = detect_layout(shape)
    _check_values(joints, layout, path, IMAGE_NAMES[layout])
    flags = joints[:, :, 2]
    visibility = _coco_visibility(flags, layout)
    labeled = visibility > 0
    # 0-based pixel index -> continuous coordinate of the pixel centre.
    xy = np.where(labeled[..., None], kp_lib.index_to_coord(joints[:, :, :2]), 0.0)
    points = np.concatenate([xy, visibility[..., None]], axis=-1)
    return LspJoints(points, layout, tuple(int(v) for v in shape), sha256)


def load_lsp(joints: str | os.PathLike, images: str | os.PathLike,
             image_range: str | tuple[int, int] | None = None,
             layout: str = "auto") -> source_lib.PersonSource:
    """An LSP or LSPET ``joints.mat`` and its images folder as a converter source.

    Args:
        joints: the ``joints.mat`` file.
        images: the folder holding ``im0001.jpg``... (LSP) or ``im00001.jpg``... (LSPET).
        image_range: 1-based inclusive image numbers (``"9001-9500"``); ``None`` = all.
        layout: ``"auto"``, ``"lsp"`` or ``"lspet"`` (see :func:`read_joints`).

    Returns:
        A :class:`~keras_pose.data.source.PersonSource`: image ``i`` (1-based) has image id
        and annotation id ``i``; each person's ``head_size`` is the neck to head-top
        distance (0 where either is unlabeled), the PCKh stand-in.

    Raises:
        AnnotationFormatError: see :func:`read_joints`; also a range past the file's images.
    """
    path = os.fspath(joints)
    span = source_lib.parse_range(image_range)
    loaded = read_joints(path, layout)
    points, layout = loaded.points, loaded.layout
    indices = source_lib.range_indices(span, len(points), path, "images")
    names = IMAGE_NAMES[layout]
    head_sizes = source_lib.keypoint_head_sizes(points, kp_lib.LSP14)
    images_list, annotations = [], []
    for i in indices:
        number = i + 1
        images_list.append({"id": number, "file_name": names.format(number)})
        box = source_lib.box_around_keypoints(points[i], BOX_EXPANSION)
        annotations.append(source_lib.person_annotation(number, number, points[i], box,
                                                        head_sizes[i]))
    dataset = {"images": images_list, "annotations": annotations,
               "categories": [source_lib.person_category(kp_lib.LSP14)]}
    return source_lib.PersonSource(
        format=layout, dataset=dataset, path=path, sha256=loaded.sha256,
        images_dir=os.fspath(images), keypoint_set=kp_lib.LSP14, boxes_may_leave_image=True,
        head_size_source="keypoints",
        details={
            "image_range": list(span) if span else None,
            "num_images_in_file": len(points),
            "layout": layout,
            "array_shape": list(loaded.shape),
            "box": f"labeled joints' extent + {BOX_EXPANSION:.0%} of its larger side each way",
        },
    )

