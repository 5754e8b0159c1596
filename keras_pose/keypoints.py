"""Keypoint sets and the coordinate convention: the one place for these facts.

Coordinate convention (used by every module of keras-pose)
----------------------------------------------------------
Keypoint coordinates are continuous ``(x, y)`` pixel coordinates in which the pixel with
integer index ``(col, row)`` covers ``[col, col + 1) x [row, row + 1)``; its centre is
``(col + 0.5, row + 0.5)``. This makes resizing a pure scale: an image resized by a factor
``s`` moves every point ``p`` to ``s * p``, and a heatmap with stride ``s`` relative to the
network input holds input point ``p`` at heatmap point ``p / s``. Converting to array indices
(for drawing, argmax, sampling) is the only place ``0.5`` is added or subtracted:
``index = coord - 0.5`` and ``coord = index + 0.5``.

COCO-format files (annotations, results, the converters' ``SPLIT.annotations.json``, the
synthetic generator's ``annotations.json``) hold keypoints in COCO's own convention, that of
the reference code (MMPose flips with ``W - 1 - x``, Detectron2 adds 0.5 on load): ``x, y``
are pixel *indices*, the pixel ``(col, row)`` is the point ``(col, row)``. Every reader adds
``0.5`` on load and every writer subtracts it, through :func:`keypoints_from_coco` and
:func:`keypoints_to_coco`; in memory, records and heatmaps everything is continuous. Boxes
(``bbox`` ``x, y, w, h``) are pixel edges in both conventions and are not shifted.

Visibility follows COCO: 0 = not labeled, 1 = labeled but occluded, 2 = labeled and visible.
"""

from __future__ import annotations

import dataclasses

import numpy as np

PIXEL_CENTER_OFFSET = 0.5


def coord_to_index(coords):
    """Continuous coordinates -> array-index coordinates (subtract the pixel-centre offset)."""
    return coords - PIXEL_CENTER_OFFSET


def index_to_coord(indices):
    """Array-index coordinates -> continuous coordinates (add the pixel-centre offset)."""
    return indices + PIXEL_CENTER_OFFSET


def keypoints_from_coco(triples):
    """COCO ``[..., K, 3]`` ``x, y, v`` (pixel indices) -> continuous ``x, y, v``.

    Labeled keypoints (``v > 0``) move by the pixel-centre offset; unlabeled ones stay
    ``(0, 0, 0)``-style as they are. Returns a new float64 array.
    """
    triples = np.array(triples, np.float64)
    labeled = triples[..., 2:3] > 0
    triples[..., :2] = np.where(labeled, index_to_coord(triples[..., :2]), triples[..., :2])
    return triples


def keypoints_to_coco(triples):
    """Continuous ``[..., K, 3]`` ``x, y, v`` -> COCO's pixel indices (inverse of
    :func:`keypoints_from_coco`); unlabeled keypoints stay as they are."""
    triples = np.array(triples, np.float64)
    labeled = triples[..., 2:3] > 0
    triples[..., :2] = np.where(labeled, coord_to_index(triples[..., :2]), triples[..., :2])
    return triples


@dataclasses.dataclass(frozen=True)
class KeypointSet:
    """A named keypoint layout: names in dataset order, flip pairs, skeleton, OKS sigmas.

    Args:
        name: short identifier stored in manifests and pipeline files (``"coco17"``).
        names: keypoint names in dataset index order.
        flip_pairs: ``(left, right)`` index pairs swapped by a horizontal flip.
        skeleton: ``(a, b)`` 0-based index pairs of the limbs to draw.
        oks_sigmas: per-keypoint OKS sigmas (COCO); ``None`` where undefined.
        torso: ``(a, b)`` indices whose distance is the torso size used by PCK, or ``None``.
        head: ``(a, b)`` indices of the head box diagonal used by PCKh, or ``None``.
    """

    name: str
    names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    skeleton: tuple[tuple[int, int], ...]
    oks_sigmas: tuple[float, ...] | None = None
    torso: tuple[int, int] | None = None
    head: tuple[int, int] | None = None

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    @property
    def flip_permutation(self) -> np.ndarray:
        """Index array ``perm`` with ``flipped[..., k, :] = original[..., perm[k], :]``."""
        perm = np.arange(self.num_keypoints)
        for left, right in self.flip_pairs:
            perm[left], perm[right] = right, left
        return perm

    def index(self, name: str) -> int:
        return self.names.index(name)

    def side(self, index: int) -> str:
        """``"left"``, ``"right"`` or ``"center"`` for a keypoint index."""
        name = self.names[index]
        if name.startswith(("left_", "l_")):
            return "left"
        if name.startswith(("right_", "r_")):
            return "right"
        return "center"


COCO17 = KeypointSet(
    name="coco17",
    names=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    # COCO's own skeleton (1-based in the annotation file), converted to 0-based.
    skeleton=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
        (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
        (3, 5), (4, 6),
    ),
    oks_sigmas=(
        0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
        0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
    ),
    # PCK torso size: left shoulder to right hip (the project's PCK definition).
    torso=(5, 12),
)

MPII16 = KeypointSet(
    name="mpii16",
    names=(
        "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
        "pelvis", "thorax", "upper_neck", "head_top",
        "right_wrist", "right_elbow", "right_shoulder",
        "left_shoulder", "left_elbow", "left_wrist",
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    skeleton=(
        (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
        (7, 12), (12, 11), (11, 10), (7, 13), (13, 14), (14, 15),
    ),
    oks_sigmas=None,
    torso=(13, 2),
    # MPII's head box is not a keypoint pair; upper neck to head top is the common stand-in
    # when the annotated head box is missing.
    head=(8, 9),
)

LSP14 = KeypointSet(
    name="lsp14",
    # The order of LSP's and LSPET's joints.mat; left and right are the person's own.
    names=(
        "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
        "right_wrist", "right_elbow", "right_shoulder",
        "left_shoulder", "left_elbow", "left_wrist",
        "neck", "head_top",
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9)),
    skeleton=(
        (0, 1), (1, 2), (5, 4), (4, 3), (2, 3), (2, 8), (3, 9), (8, 9),
        (8, 7), (7, 6), (9, 10), (10, 11), (12, 8), (12, 9), (12, 13),
    ),
    oks_sigmas=None,
    # LSP's PCK convention: left shoulder to right hip.
    torso=(9, 2),
    # LSP has no head box; neck to head top is the head segment.
    head=(12, 13),
)

KEYPOINT_SETS = {s.name: s for s in (COCO17, MPII16, LSP14)}


def get_keypoint_set(name: str) -> KeypointSet:
    """Look a keypoint set up by name, with an error that lists the valid names."""
    try:
        return KEYPOINT_SETS[name]
    except KeyError:
        raise ValueError(
            f"Unknown keypoint set {name!r}; valid keypoint sets: {sorted(KEYPOINT_SETS)}"
        ) from None


def infer_keypoint_set(names=None, num_keypoints: int | None = None) -> KeypointSet:
    """The known keypoint set that a file or model describes: the one rule of keras-pose.

    By names when names are given (they must equal a set's names, in order), else by count
    (exactly one set must have that many keypoints).

    Args:
        names: keypoint names in index order (a COCO category's ``keypoints``), or ``None``.
        num_keypoints: the keypoint count, used when ``names`` is ``None`` or empty.

    Raises:
        ValueError: the names match no set, the count matches none or several sets, or
            neither was given.
    """
    if names:
        names = tuple(str(name) for name in names)
        for keypoint_set in KEYPOINT_SETS.values():
            if keypoint_set.names == names:
                return keypoint_set
        known = {s.name: list(s.names) for s in KEYPOINT_SETS.values()}
        raise ValueError(
            f"unknown keypoint set: keypoint names {list(names)} match no known set "
            f"(names in order): {known}"
        )
    if num_keypoints is None:
        raise ValueError("cannot infer a keypoint set without keypoint names or a count")
    matches = [s.name for s in KEYPOINT_SETS.values() if s.num_keypoints == num_keypoints]
    if len(matches) != 1:
        found = f"several known sets ({matches})" if matches else "no known set"
        counts = {s.name: s.num_keypoints for s in KEYPOINT_SETS.values()}
        raise ValueError(
            f"{num_keypoints} keypoints match {found} (keypoint counts: {counts}); "
            "name the keypoint set"
        )
    return KEYPOINT_SETS[matches[0]]
