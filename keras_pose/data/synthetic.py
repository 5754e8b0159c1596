"""Synthetic figures in COCO keypoint format: the embedded default data of keras-pose.

Every image holds one to three rendered figures ("mannequins": limbs as filled ellipses with
ball joints, a polygon torso, a head with ears, hair and, on front-facing figures, a face) in
random articulated poses (standing, walking, arms up, sitting, lying, free) with varied limb
proportions, scale and position, on a random textured background. Some joints are hidden by
occluding shapes or by another figure (visibility 1) and some figures are cut by the image
border (keypoints outside the image are unlabeled: ``(0, 0, 0)``). Figures in one image keep
their torsos at least 1.6 torso lengths apart and overlap little, so each is the clear subject of
its own person crop.

Left and right (design choice)
------------------------------
Sides are **colour-coded**: the figure's left limbs and left ear/eye are drawn in a warm family
(red, orange, yellow), its right ones in a cool family (cyan, blue). Figures face the camera or
turn their back (front-facing ones show eyes, nose and mouth; back-facing ones show hair only and
their nose and eyes are unlabeled, as in COCO), so image position alone never tells the side;
the colour does. This cue is only consistent **without horizontal pixel flips**: a flip with the
left/right label swap turns a warm "left" arm into a warm "right" arm and contradicts the colour
half of the time. Pipelines training on this data must set flip off; the flip code path is
proved by the geometry tests instead. ``SyntheticConfig(side_cue="facing")`` draws both sides in
the same colours instead: side then follows from facing and image position only, which survives
flips (how fast a network learns that was not measured).

Files and conventions
---------------------
``make_synthetic_dataset`` writes ``DIR/images/<id:012d>.jpg`` and ``DIR/annotations.json``
(COCO: ``images``, ``annotations`` with ``bbox``, ``area``, ``keypoints``, ``num_keypoints``,
``iscrowd`` 0 and an RLE ``segmentation`` of the visible figure, ``categories`` with COCO17's
keypoint names and its 1-based skeleton). In memory (``SyntheticPerson``) keypoints use
``keras_pose.keypoints``' continuous convention: a keypoint at ``(x, y)`` is drawn at continuous
position ``(x, y)``, i.e. cv2 pixel index ``(x - 0.5, y - 0.5)``, and that index is what
``annotations.json`` stores (COCO's pixel-index convention, as every COCO-format file of the
project); coordinates are quantized to the 1/16 px grid of cv2's ``shift=4`` sub-pixel drawing,
so the stored value is exactly the drawn one and reading it back (``+0.5``) is exact. ``bbox``
is the tight box (pixel edges) of the figure's drawn pixels inside the image, hidden parts
included, so every labeled keypoint (continuous) lies in it; ``area`` counts the figure's
visible pixels (the segmentation).

Output is deterministic: image ``i`` of stream ``s`` is drawn from
``numpy.random.default_rng([seed, s, i])``, whatever the number of workers, so the same arguments
give the same bytes. Images are written first (each atomically) and ``annotations.json`` last
(temp name + ``os.replace``): a present ``annotations.json`` means a complete dataset.
"""

from __future__ import annotations

import colorsys
import dataclasses
import json
import math
import multiprocessing
import os
import pathlib
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from keras_pose.io import write_bytes_atomic, write_json_atomic
from keras_pose.keypoints import COCO17, PIXEL_CENTER_OFFSET, keypoints_to_coco

# 2: annotations.json holds COCO pixel indices (drawn position - 0.5); 1 held the positions.
GENERATOR_VERSION = 2
SHIFT = 4  # cv2 sub-pixel bits: coordinates are drawn on a 1/16 px grid
_ONE = 1 << SHIFT
POSES = ("standing", "walking", "arms_up", "sitting", "lying", "free")
_POSE_PROBS = (0.28, 0.22, 0.14, 0.14, 0.10, 0.12)
SIDE_CUES = ("colour", "facing")
ANNOTATIONS_NAME = "annotations.json"
_MIN_IMAGES_PER_WORKER = 200
IMAGES_DIR = "images"

# COCO17 indices, named for readability.
(NOSE, L_EYE, R_EYE, L_EAR, R_EAR, L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST,
 L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE) = range(17)
_TORSO_JOINTS = (L_SHOULDER, R_SHOULDER, L_HIP, R_HIP)
_OCCLUDABLE = (L_ELBOW, R_ELBOW, L_WRIST, R_WRIST, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE, L_HIP, R_HIP)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """What the generator draws.

    Args:
        image_size: ``(height, width)`` of every image.
        side_cue: ``"colour"`` (warm left, cool right; train without flips) or ``"facing"``
            (same colours on both sides; side follows from facing).
        max_figures: most figures in one image (1 to 3 recommended).
        multi_figure_prob: probability that an image holds more than one figure.
        occluder_prob: probability that a figure gets one or two occluding shapes over joints.
        cut_prob: probability that a figure is placed partly outside the image.
        back_facing_prob: probability that a figure turns its back (no face, nose and eyes
            unlabeled).
        height_range: figure extent (the larger of its box height and width) as a fraction of
            the image, for images with one figure; images with several use 0.75 of it.
        jpeg_quality: JPEG quality of the written images.
    """

    image_size: tuple[int, int] = (256, 256)
    side_cue: str = "colour"
    max_figures: int = 3
    multi_figure_prob: float = 0.3
    occluder_prob: float = 0.3
    cut_prob: float = 0.15
    back_facing_prob: float = 0.25
    height_range: tuple[float, float] = (0.4, 0.95)
    jpeg_quality: int = 92

    def __post_init__(self):
        size = tuple(int(s) for s in self.image_size)
        if len(size) != 2 or min(size) < 32:
            raise ValueError(
                f"image_size must be (height, width) with both >= 32, received {self.image_size}"
            )
        object.__setattr__(self, "image_size", size)
        if self.side_cue not in SIDE_CUES:
            raise ValueError(f"side_cue must be one of {SIDE_CUES}, received {self.side_cue!r}")
        if self.max_figures < 1:
            raise ValueError(f"max_figures must be >= 1, received max_figures={self.max_figures}")
        for name in ("multi_figure_prob", "occluder_prob", "cut_prob", "back_facing_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], received {name}={value}")
        low, high = self.height_range
        if not 0.05 <= low <= high <= 1.0:
            raise ValueError(
                "height_range must satisfy 0.05 <= low <= high <= 1, "
                f"received height_range={self.height_range}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], received {self.jpeg_quality}")


@dataclasses.dataclass
class SyntheticPerson:
    """One drawn figure and its annotation.

    ``keypoints`` [17, 3] holds COCO ``x, y, v`` (unlabeled: all zero); ``keypoints_full``
    [17, 2] the drawn positions of all 17 joints, also those outside the image or unlabeled;
    ``bbox`` x, y, w, h; ``visible_mask`` [H, W] bool the figure's visible pixels.
    """

    keypoints: np.ndarray
    keypoints_full: np.ndarray
    bbox: np.ndarray
    area: float
    visible_mask: np.ndarray
    pose: str
    facing: str

    @property
    def num_keypoints(self) -> int:
        return int(np.count_nonzero(self.keypoints[:, 2] > 0))


@dataclasses.dataclass
class SyntheticSample:
    """One rendered image (uint8 BGR [H, W, 3], as cv2 writes it) and its figures."""

    image: np.ndarray
    people: list[SyntheticPerson]


# ----------------------------------------------------------------------------------- geometry


def to_fixed(points) -> np.ndarray:
    """Continuous keypoint coordinates -> cv2 ``shift=4`` fixed-point pixel indices (int32)."""
    return np.round((np.asarray(points, np.float64) - PIXEL_CENTER_OFFSET) * _ONE).astype(np.int32)


def from_fixed(fixed) -> np.ndarray:
    """cv2 ``shift=4`` fixed-point pixel indices -> continuous coordinates (exact)."""
    return np.asarray(fixed, np.float64) / _ONE + PIXEL_CENTER_OFFSET


def _direction(angle_deg: float) -> np.ndarray:
    """Unit vector at ``angle_deg`` from straight down (body frame, y down), toward +x."""
    a = math.radians(angle_deg)
    return np.array([math.sin(a), math.cos(a)])


def _rotation(angle_deg: float) -> np.ndarray:
    """Matrix turning the down vector (0, 1) into ``_direction(angle_deg)``."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, s], [-s, c]])


def _sample_pose(rng: np.random.Generator, pose: str, facing: float) -> dict:
    """Joint positions of one figure in body units (torso length 1, y down, pelvis at 0).

    ``facing`` is +1 for a front-facing figure (its left side at +x) and -1 for a back-facing
    one. Angles are degrees from straight down; "outward" angles grow away from the body.
    """
    u = rng.uniform
    turn = u(0.0, 0.25)  # shrinks the widths of a figure turned partly sideways
    # Absolute limb angles per shoulder / hip: (upper segment, lower segment).
    arms, legs, leg_scale = {}, {}, {L_HIP: (1.0, 1.0), R_HIP: (1.0, 1.0)}

    def outward(joint, angle):
        """An angle away from the body on ``joint``'s side (the left side is +x if facing)."""
        return (facing if joint in (L_SHOULDER, L_HIP) else -facing) * angle

    if pose == "walking":
        turn = u(0.35, 0.8)
        ahead = rng.choice((-1.0, 1.0))
        front, back = (L_HIP, R_HIP) if rng.random() < 0.5 else (R_HIP, L_HIP)
        thigh = ahead * u(10, 30)
        legs[front] = (thigh, thigh - ahead * u(0, 15))
        thigh = -ahead * u(8, 25)
        legs[back] = (thigh, thigh - ahead * u(5, 40))
        swing = u(5, 30)
        for shoulder, hip in ((L_SHOULDER, L_HIP), (R_SHOULDER, R_HIP)):
            upper = -ahead * swing if hip == front else ahead * swing
            arms[shoulder] = (upper, upper + ahead * u(0, 50))
    elif pose == "sitting":
        if rng.random() < 0.6:  # seen from the side: both thighs point the same way
            turn = u(0.4, 0.8)
            ahead = rng.choice((-1.0, 1.0))
            for hip in (L_HIP, R_HIP):
                legs[hip] = (ahead * u(65, 100), u(-20, 20))
                leg_scale[hip] = (u(0.8, 1.0), 1.0)
            for shoulder in (L_SHOULDER, R_SHOULDER):
                upper = ahead * u(0, 35)
                arms[shoulder] = (upper, ahead * u(45, 100))
        else:  # seen from the front: thighs foreshortened
            for hip in (L_HIP, R_HIP):
                legs[hip] = (outward(hip, u(5, 35)), outward(hip, u(-5, 15)))
                leg_scale[hip] = (u(0.3, 0.5), 1.0)
            for shoulder in (L_SHOULDER, R_SHOULDER):
                upper = u(5, 30)
                arms[shoulder] = (outward(shoulder, upper), outward(shoulder, upper + u(-60, 20)))
    else:
        for shoulder in (L_SHOULDER, R_SHOULDER):
            if pose == "arms_up":
                upper, bend = u(110, 175), u(-35, 35)
            elif pose == "free":
                upper, bend = u(-30, 180), u(-120, 120)
            elif rng.random() < 0.2:  # hand on hip
                upper, bend = u(25, 45), u(-130, -90)
            else:
                upper, bend = u(3, 40), u(-25, 40)
            arms[shoulder] = (outward(shoulder, upper), outward(shoulder, upper + bend))
        for hip in (L_HIP, R_HIP):
            if pose == "free":
                thigh, bend = u(-15, 70), u(-100, 30) * rng.choice((-1.0, 1.0))
            else:
                thigh = u(0, 22) if pose == "arms_up" else u(0, 15)
                bend = u(-8, 8)
            legs[hip] = (outward(hip, thigh), outward(hip, thigh + bend))

    shoulder_width = u(0.6, 0.8) * (1 - 0.7 * turn)
    hip_width = u(0.38, 0.52) * (1 - 0.6 * turn)
    lengths = {"upper_arm": u(0.5, 0.62), "forearm": u(0.45, 0.58),
               "thigh": u(0.75, 0.92), "shin": u(0.7, 0.88)}
    points = np.zeros((17, 2))
    neck = np.array([u(-0.04, 0.04), -1.0])
    points[L_SHOULDER] = neck + [facing * shoulder_width / 2, u(-0.04, 0.04)]
    points[R_SHOULDER] = neck + [-facing * shoulder_width / 2, u(-0.04, 0.04)]
    points[L_HIP] = [facing * hip_width / 2, 0.0]
    points[R_HIP] = [-facing * hip_width / 2, 0.0]
    for shoulder, elbow, wrist in ((L_SHOULDER, L_ELBOW, L_WRIST), (R_SHOULDER, R_ELBOW, R_WRIST)):
        upper, lower = arms[shoulder]
        points[elbow] = points[shoulder] + lengths["upper_arm"] * _direction(upper)
        points[wrist] = points[elbow] + lengths["forearm"] * _direction(lower)
    for hip, knee, ankle in ((L_HIP, L_KNEE, L_ANKLE), (R_HIP, R_KNEE, R_ANKLE)):
        thigh, shin = legs[hip]
        thigh_scale, shin_scale = leg_scale[hip]
        points[knee] = points[hip] + thigh_scale * lengths["thigh"] * _direction(thigh)
        points[ankle] = points[knee] + shin_scale * lengths["shin"] * _direction(shin)

    # Head: a tilted ellipse above the neck; face keypoints in head units (x right, y down).
    head_radius = u(0.2, 0.26)
    neck_length = u(0.1, 0.18)
    tilt = float(np.clip(rng.normal(0, 12), -30, 30))
    head_rot = _rotation(tilt)  # head frame (x right, y down) -> body frame
    head_center = neck + (neck_length + head_radius) * _direction(180 + tilt)
    yaw = u(-0.3, 0.3) if facing > 0 else u(-0.15, 0.15)
    face = {
        NOSE: (yaw, 0.2),
        L_EYE: (facing * 0.36 + 0.8 * yaw, -0.08),
        R_EYE: (-facing * 0.36 + 0.8 * yaw, -0.08),
        L_EAR: (facing * 0.86 + 0.3 * yaw, 0.04),
        R_EAR: (-facing * 0.86 + 0.3 * yaw, 0.04),
    }
    for index, (fx, fy) in face.items():
        points[index] = head_center + head_radius * (head_rot @ np.array([fx, fy]))
    k = u(0.8, 1.25)  # limb thickness factor
    return {
        "points": points,
        "neck": neck,
        "head_center": head_center,
        "head_radius": head_radius,
        "head_rot": head_rot,
        "yaw": yaw,
        "thickness": {"upper_arm": 0.17 * k, "forearm": 0.14 * k, "thigh": 0.24 * k,
                      "shin": 0.19 * k, "neck": 0.16 * k},
        "foot_dir": rng.choice((-1.0, 1.0)),
        "left_first": int(rng.choice((-1, 1))),  # which side is drawn on top
    }


# ------------------------------------------------------------------------------------ colours


def _bgr(hue_deg: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((hue_deg % 360) / 360.0, saturation, value)
    return (int(round(b * 255)), int(round(g * 255)), int(round(r * 255)))


def _scaled(colour, factor):
    return tuple(int(min(255, round(c * factor))) for c in colour)


def _palette(rng: np.random.Generator, side_cue: str) -> dict:
    """Colours of one figure (BGR). Everything drawn over a keypoint has value >= 0.35."""
    u = rng.uniform
    skin = _bgr(u(15, 35), u(0.25, 0.6), u(0.45, 0.95))
    shirt_hue = rng.choice((u(80, 160), u(270, 330)))
    shirt = _bgr(shirt_hue, u(0.0, 0.7), u(0.4, 0.95))
    hair = _bgr(u(15, 45), u(0.3, 0.8), u(0.08, 0.6))
    shoes = _bgr(u(0, 360), u(0.0, 0.5), u(0.1, 0.35))
    if side_cue == "colour":
        def warm():
            return _bgr(u(-10, 50), u(0.65, 1.0), u(0.7, 1.0))

        def cool():
            return _bgr(u(185, 245), u(0.65, 1.0), u(0.6, 1.0))
        limbs = {"left_arm": warm(), "left_leg": warm(), "right_arm": cool(), "right_leg": cool()}
        ears = {"left": warm(), "right": cool()}
        eyes = {"left": _scaled(ears["left"], 0.8), "right": _scaled(ears["right"], 0.8)}
    else:
        sleeve = shirt if rng.random() < 0.5 else skin
        pants = _bgr(u(0, 360), u(0.0, 0.8), u(0.35, 0.9))
        limbs = {"left_arm": sleeve, "left_leg": pants, "right_arm": sleeve, "right_leg": pants}
        ears = {"left": _scaled(skin, 0.85), "right": _scaled(skin, 0.85)}
        eyes = {"left": (60, 45, 45), "right": (60, 45, 45)}
    return {"skin": skin, "shirt": shirt, "hair": hair, "shoes": shoes, "limbs": limbs,
            "ears": ears, "eyes": eyes}


# ----------------------------------------------------------------------------------- drawing


def _ellipse_op(a, b, width, colour, overhang=0.3):
    """A limb from point ``a`` to ``b`` (image px) as a filled ellipse ``width`` px wide."""
    d = b - a
    length = float(np.hypot(*d))
    center = (a + b) / 2
    half_length = length / 2 + overhang * width
    angle = math.degrees(math.atan2(d[1], d[0]))
    return ("ellipse", center, (half_length, width / 2), angle, colour)


def _fixed(value: float) -> int:
    """One continuous coordinate -> cv2 fixed-point index (same rounding as ``to_fixed``)."""
    return int(round((value - PIXEL_CENTER_OFFSET) * _ONE))


def _compile(ops) -> list[tuple]:
    """Turn drawing ops (float image px) into cv2 fixed-point arguments, once per figure."""
    compiled = []
    for op in ops:
        kind = op[0]
        if kind in ("ellipse", "half_ellipse"):  # half: the top half only (hair)
            _, center, axes, angle, colour = op
            compiled.append((
                cv2.ellipse, (_fixed(center[0]), _fixed(center[1])),
                (max(1, round(axes[0] * _ONE)), max(1, round(axes[1] * _ONE))), float(angle),
                180 if kind == "half_ellipse" else 0, colour,
            ))
        elif kind == "circle":
            _, center, radius, colour = op
            compiled.append((cv2.circle, (_fixed(center[0]), _fixed(center[1])),
                             max(1, round(radius * _ONE)), colour))
        elif kind == "polygon":
            _, points, colour = op
            compiled.append((cv2.fillConvexPoly, to_fixed(points).reshape(-1, 1, 2), colour))
        else:  # pragma: no cover - ops are built in this module only
            raise ValueError(f"unknown drawing op {kind!r}")
    return compiled


def _draw(canvas: np.ndarray, compiled, colour=None, antialias=True) -> None:
    """Draw compiled ops on ``canvas``; ``colour`` overrides each op's colour (masks, labels)."""
    line = cv2.LINE_AA if antialias else cv2.LINE_8
    for op in compiled:
        fill = op[-1] if colour is None else colour
        if op[0] is cv2.ellipse:
            cv2.ellipse(canvas, op[1], op[2], op[3], op[4], 360, fill, -1, line, SHIFT)
        elif op[0] is cv2.circle:
            cv2.circle(canvas, op[1], op[2], fill, -1, line, SHIFT)
        else:
            cv2.fillConvexPoly(canvas, op[1], fill, line, SHIFT)


def draw_disc(canvas: np.ndarray, center, radius: float, colour) -> None:
    """Draw a filled anti-aliased disc centred at continuous ``center`` (the module's convention).

    Args:
        canvas: uint8 image [H, W] or [H, W, C], drawn in place.
        center: ``(x, y)`` in continuous pixel coordinates.
        radius: radius in pixels.
        colour: cv2 colour (scalar or tuple).
    """
    _draw(canvas, _compile([("circle", np.asarray(center, np.float64), float(radius), colour)]))


def _figure_ops(geometry: dict, transform, palette: dict, scale: float) -> list:
    """Drawing ops (image px) for one figure, back to front."""
    p = transform(geometry["points"])
    t = {name: max(1.5, w * scale) for name, w in geometry["thickness"].items()}
    limbs = palette["limbs"]
    ops = []

    def leg(hip, knee, ankle, colour):
        ops.append(_ellipse_op(p[hip], p[knee], t["thigh"], colour))
        lower = _scaled(colour, 0.85)
        shin_dir = p[ankle] - p[knee]
        shin_dir = shin_dir / max(1e-6, float(np.hypot(*shin_dir)))
        toe = p[ankle] + scale * 0.22 * geometry["foot_dir"] * np.array([-shin_dir[1], shin_dir[0]])
        ops.append(_ellipse_op(p[ankle], toe, 0.55 * t["shin"], palette["shoes"], overhang=0.2))
        ops.append(_ellipse_op(p[knee], p[ankle], t["shin"], lower))
        ops.append(("circle", p[knee], 0.52 * t["thigh"], colour))
        ops.append(("circle", p[ankle], 0.5 * t["shin"], lower))

    def arm(shoulder, elbow, wrist, colour):
        lower = _scaled(colour, 0.85)
        forearm = p[wrist] - p[elbow]
        forearm = forearm / max(1e-6, float(np.hypot(*forearm)))
        ops.append(("circle", p[wrist] + 0.55 * t["forearm"] * forearm, 0.62 * t["forearm"],
                    palette["skin"]))
        ops.append(_ellipse_op(p[shoulder], p[elbow], t["upper_arm"], colour))
        ops.append(_ellipse_op(p[elbow], p[wrist], t["forearm"], lower))
        ops.append(("circle", p[shoulder], 0.55 * t["upper_arm"], colour))
        ops.append(("circle", p[elbow], 0.5 * t["upper_arm"], colour))
        ops.append(("circle", p[wrist], 0.5 * t["forearm"], lower))

    legs = [(L_HIP, L_KNEE, L_ANKLE, limbs["left_leg"]),
            (R_HIP, R_KNEE, R_ANKLE, limbs["right_leg"])]
    for args in legs[::geometry["left_first"]]:
        leg(*args)
    # Torso: shoulders and hips pushed outward a little so the joints sit inside it.
    neck = transform(geometry["neck"][None])[0]
    ls, rs, lh, rh = p[L_SHOULDER], p[R_SHOULDER], p[L_HIP], p[R_HIP]
    across_s, across_h = ls - rs, lh - rh
    ops.append(_ellipse_op(neck, neck + (neck - (lh + rh) / 2) * 0.25, t["neck"],
                           palette["skin"], overhang=0.5))
    torso = np.array([ls + 0.12 * across_s, rs - 0.12 * across_s,
                      rh - 0.15 * across_h, lh + 0.15 * across_h])
    ops.append(("polygon", torso, palette["shirt"]))
    ops.append(("circle", lh, 0.5 * t["thigh"], limbs["left_leg"]))
    ops.append(("circle", rh, 0.5 * t["thigh"], limbs["right_leg"]))
    arm_order = [(L_SHOULDER, L_ELBOW, L_WRIST, limbs["left_arm"]),
                 (R_SHOULDER, R_ELBOW, R_WRIST, limbs["right_arm"])]
    for args in arm_order[::geometry["left_first"]]:
        arm(*args)
    # Head: skin ellipse, hair, ears; eyes, nose and mouth only when facing the camera.
    center = transform(geometry["head_center"][None])[0]
    radius = geometry["head_radius"] * scale
    rot = geometry["head_rot"]
    x_axis = transform.linear @ rot[:, 0]
    angle = math.degrees(math.atan2(x_axis[1], x_axis[0]))

    def head_point(fx, fy):
        return center + geometry["head_radius"] * (transform.linear @ (rot @ np.array([fx, fy])))

    ops.append(("ellipse", center, (0.82 * radius, radius), angle, palette["skin"]))
    front = geometry["facing"] > 0
    if front:
        ops.append(("half_ellipse", head_point(0, -0.22), (0.86 * radius, 0.82 * radius), angle,
                    palette["hair"]))
    else:
        ops.append(("ellipse", head_point(0, -0.08), (0.84 * radius, 0.96 * radius), angle,
                    palette["hair"]))
    for index, key in ((L_EAR, "left"), (R_EAR, "right")):
        ops.append(("ellipse", p[index], (0.18 * radius, 0.28 * radius), angle,
                    palette["ears"][key]))
    if front:
        eye = max(1.0, 0.13 * radius)
        ops.append(("ellipse", head_point(geometry["yaw"], 0.52), (0.24 * radius, 0.07 * radius),
                    angle, _scaled(palette["skin"], 0.6)))
        ops.append(("circle", p[NOSE], max(1.0, 0.11 * radius), _scaled(palette["skin"], 0.75)))
        ops.append(("circle", p[L_EYE], eye, palette["eyes"]["left"]))
        ops.append(("circle", p[R_EYE], eye, palette["eyes"]["right"]))
    return ops


class _Transform:
    """Body units -> image px: ``centre + scale * R @ (p - origin)``."""

    def __init__(self, origin, rotation_deg, scale, centre):
        self.origin = np.asarray(origin, np.float64)
        self.linear = scale * _rotation(rotation_deg)
        self.centre = np.asarray(centre, np.float64)

    def __call__(self, points):
        return (np.asarray(points) - self.origin) @ self.linear.T + self.centre


# -------------------------------------------------------------------------------- backgrounds


_GRIDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _grid(h, w):
    if (h, w) not in _GRIDS:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        _GRIDS[(h, w)] = (xx, yy)
    return _GRIDS[(h, w)]


def _random_colour(rng, max_saturation=1.0):
    return _bgr(rng.uniform(0, 360), rng.uniform(0, max_saturation), rng.uniform(0.15, 0.95))


def _clutter(rng, image, count, max_saturation):
    h, w = image.shape[:2]
    for _ in range(count):
        colour = _random_colour(rng, max_saturation)
        kind = rng.integers(4)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(rng.uniform(0.03, 0.3) * min(h, w)) + 1
        if kind == 0:
            cv2.rectangle(image, (x, y), (x + size, y + int(rng.uniform(0.3, 2) * size)),
                          colour, -1)
        elif kind == 1:
            cv2.circle(image, (x, y), size // 2 + 1, colour, -1, cv2.LINE_AA)
        elif kind == 2:
            end = (x + int(rng.integers(-w // 2, w // 2)), y + int(rng.integers(-h // 2, h // 2)))
            cv2.line(image, (x, y), end, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            pts = np.stack([rng.integers(0, w, 3), rng.integers(0, h, 3)], 1).astype(np.int32)
            cv2.fillConvexPoly(image, pts, colour, cv2.LINE_AA)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random textured background: smooth noise, stripes, tiles or clutter, plus noise."""
    kind = rng.integers(4)
    c1 = np.array(_random_colour(rng), np.float32)
    c2 = np.array(_random_colour(rng), np.float32)
    if kind == 0:
        g = int(rng.integers(2, 10))
        small = rng.integers(0, 256, (g, g, 3), dtype=np.uint8)
        image = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    elif kind in (1, 2):
        # Computed at half resolution and upsampled: 4x fewer float ops, same look.
        xx, yy = _grid((h + 1) // 2, (w + 1) // 2)
        a = rng.uniform(0, math.pi)
        u = xx * math.cos(a) + yy * math.sin(a)
        period = rng.uniform(3, 30)
        if kind == 1:
            mix = 0.5 + 0.5 * np.sin(u * (2 * math.pi / period) + rng.uniform(0, 2 * math.pi))
        else:
            v = -xx * math.sin(a) + yy * math.cos(a)
            mix = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
        image = (c1 + mix[..., None] * (c2 - c1)).astype(np.uint8)
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        image = np.empty((h, w, 3), np.uint8)
        image[:] = c1.astype(np.uint8)
    if kind == 3 or rng.random() < 0.4:
        _clutter(rng, image, int(rng.integers(4, 25)), max_saturation=0.6)
    # Pull colours toward grey so the saturated figures stand out, as people do in photos.
    saturation = rng.uniform(0.25, 0.9)
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    image = cv2.addWeighted(image, saturation, grey, 1 - saturation, 0)
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (5, 5), 0)
    return image


# ---------------------------------------------------------------------------------- rendering


def _place_figure(rng, config, geometry, fraction, cut):
    """Choose rotation, scale and position; return (transform, scale) or None."""
    h, w = config.image_size
    pose = geometry["pose"]
    if pose == "lying":
        rotation = rng.choice((-1.0, 1.0)) * rng.uniform(70, 110)
    elif pose == "free":
        rotation = rng.uniform(-30, 30)
    else:
        rotation = float(np.clip(rng.normal(0, 7), -20, 20))
    rot = _rotation(rotation)
    # Extent of the figure in body units: joints, head top, hands and feet (+ thickness).
    head_top = geometry["head_center"] + geometry["head_radius"] * _direction(180)
    pts = np.concatenate([geometry["points"], head_top[None]]) @ rot.T
    margin = 0.2
    lo, hi = pts.min(0) - margin, pts.max(0) + margin
    extent = hi - lo
    scale = fraction / max(extent[1] / h, extent[0] / w)
    size = extent * scale
    box_lo = np.zeros(2)
    room = np.array([w, h]) - size
    for _ in range(8):
        if cut:
            # Push the box past one border by 10% to 45% of its size.
            axis = int(rng.integers(2))
            out = rng.uniform(0.1, 0.45) * size[axis]
            box_lo = np.array([rng.uniform(0, max(room[0], 0)), rng.uniform(0, max(room[1], 0))])
            box_lo[axis] = -out if rng.random() < 0.5 else [w, h][axis] - size[axis] + out
        else:
            box_lo = np.array([rng.uniform(min(room[0], 0), max(room[0], 0)),
                               rng.uniform(min(room[1], 0), max(room[1], 0))])
        centre = box_lo + size / 2
        transform = _Transform(origin=(lo + hi) / 2 @ rot, rotation_deg=rotation, scale=scale,
                               centre=centre)
        torso = transform(geometry["points"][list(_TORSO_JOINTS)])
        if np.all((torso >= 2) & (torso <= [w - 2, h - 2])):
            return transform, scale
    return None


def _occluder_ops(rng, people_points, people_scales, count):
    """Neutral shapes over random limb joints of one figure (image px)."""
    ops = []
    for _ in range(count):
        joint = int(rng.choice(_OCCLUDABLE))
        centre = people_points[joint]
        half = people_scales * rng.uniform(0.14, 0.3)
        offset = rng.uniform(-0.4, 0.4, 2) * half
        colour = _bgr(rng.uniform(0, 360), rng.uniform(0, 0.3), rng.uniform(0.2, 0.9))
        if rng.random() < 0.5:
            ops.append(("ellipse", centre + offset, (half * rng.uniform(1, 1.8), half),
                        rng.uniform(0, 180), colour))
        else:
            a = math.radians(rng.uniform(0, 180))
            ex = np.array([math.cos(a), math.sin(a)]) * half * rng.uniform(1, 1.8)
            ey = np.array([-math.sin(a), math.cos(a)]) * half
            c = centre + offset
            ops.append(("polygon", np.array([c - ex - ey, c + ex - ey, c + ex + ey, c - ex + ey]),
                        colour))
    return ops


def _fits_beside(mask, points, scale, figures) -> bool:
    """Whether a new figure leaves every figure the clear subject of its own crop.

    Other figures may overlap a little, but never hide a large part of one, cover more than
    three of its joints, or put their torso near its torso (a crop centred on one figure would
    then be centred on both).
    """
    area = np.count_nonzero(mask)
    if area == 0:
        return False
    h, w = mask.shape
    centre = points[list(_TORSO_JOINTS)].mean(0)
    for _ops, other_points, other_mask, *_rest, other_scale in figures:
        other_centre = other_points[list(_TORSO_JOINTS)].mean(0)
        if np.hypot(*(centre - other_centre)) < 1.6 * max(scale, other_scale):
            return False
        overlap = np.count_nonzero(mask & other_mask)
        if overlap > 0.15 * area or overlap > 0.15 * np.count_nonzero(other_mask):
            return False
        cols, rows = np.floor(other_points - PIXEL_CENTER_OFFSET).astype(int).T
        inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
        if np.count_nonzero(mask[rows[inside], cols[inside]]) > 3:
            return False
    return True


def render_sample(seed, config: SyntheticConfig | None = None,
                  background: np.ndarray | None = None) -> SyntheticSample:
    """Render one synthetic image and its figures' annotations.

    Args:
        seed: an int, a sequence of ints (``[seed, stream, index]``) or a numpy ``Generator``.
        config: what to draw; ``SyntheticConfig()`` when ``None``.
        background: optional uint8 BGR [H, W, 3] image to draw on instead of a random texture
            (tests use a plain one). It is not modified.

    Returns:
        A :class:`SyntheticSample` (image in BGR, as written to disk).
    """
    config = config or SyntheticConfig()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    h, w = config.image_size
    if background is None:
        image = _background(rng, h, w)
    else:
        if background.shape != (h, w, 3) or background.dtype != np.uint8:
            raise ValueError(
                f"background must be uint8 [{h}, {w}, 3] (config.image_size), received "
                f"{background.dtype} {list(background.shape)}"
            )
        image = background.copy()
    count = 1
    if config.max_figures > 1 and rng.random() < config.multi_figure_prob:
        count = int(rng.integers(2, config.max_figures + 1))
    low, high = config.height_range
    if count > 1:
        low, high = 0.75 * low, 0.75 * high

    figures = []  # (compiled ops, keypoints px, amodal mask, pose, facing, px per body unit)
    for _ in range(count):
        pose = str(rng.choice(POSES, p=_POSE_PROBS))
        facing = -1.0 if rng.random() < config.back_facing_prob else 1.0
        geometry = _sample_pose(rng, pose, facing)
        geometry.update(pose=pose, facing=facing)
        palette = _palette(rng, config.side_cue)
        cut = rng.random() < config.cut_prob
        for _attempt in range(6):
            placed = _place_figure(rng, config, geometry, rng.uniform(low, high), cut)
            if placed is None:
                cut = False
                continue
            transform, scale = placed
            ops = _compile(_figure_ops(geometry, transform, palette, scale))
            mask = np.zeros((h, w), np.uint8)
            _draw(mask, ops, colour=1, antialias=False)
            points = transform(geometry["points"])
            if _fits_beside(mask, points, scale, figures):
                figures.append((ops, points, mask, pose, facing, scale))
                break

    labels = np.zeros((h, w), np.uint8)  # 0 background, i + 1 figure i, 255 occluder
    for i, (ops, *_rest) in enumerate(figures):
        _draw(image, ops)
        _draw(labels, ops, colour=i + 1, antialias=False)
    for _ops, points, _mask, _pose, _facing, scale in figures:
        if rng.random() < config.occluder_prob:
            occluders = _compile(_occluder_ops(rng, points, scale, int(rng.integers(1, 3))))
            _draw(image, occluders)
            _draw(labels, occluders, colour=255, antialias=False)

    people = []
    for i, (_ops, points, mask, pose, facing, _scale) in enumerate(figures):
        fixed = to_fixed(points)
        drawn = from_fixed(fixed)  # the exact positions cv2 drew at
        keypoints = np.zeros((17, 3))
        cols, rows = np.floor(drawn[:, 0]).astype(int), np.floor(drawn[:, 1]).astype(int)
        inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
        if facing < 0:
            inside[[NOSE, L_EYE, R_EYE]] = False  # faces turned away are not labeled
        for k in np.flatnonzero(inside):
            visible = labels[rows[k], cols[k]] == i + 1
            keypoints[k] = (drawn[k, 0], drawn[k, 1], 2 if visible else 1)
        xs, ys = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
        bbox = np.array([xs[0], ys[0], xs[-1] + 1 - xs[0], ys[-1] + 1 - ys[0]], np.float64)
        visible_mask = labels == i + 1
        people.append(SyntheticPerson(
            keypoints=keypoints, keypoints_full=drawn, bbox=bbox,
            area=float(np.count_nonzero(visible_mask)), visible_mask=visible_mask,
            pose=pose, facing="front" if facing > 0 else "back",
        ))
    return SyntheticSample(image=image, people=people)


# ---------------------------------------------------------------------------------- datasets


def coco_categories() -> list[dict]:
    """The COCO ``categories`` entry: person, COCO17 keypoint names, 1-based skeleton."""
    return [{
        "id": 1, "name": "person", "supercategory": "person",
        "keypoints": list(COCO17.names),
        "skeleton": [[a + 1, b + 1] for a, b in COCO17.skeleton],
    }]


def _annotation(person: SyntheticPerson) -> dict:
    """COCO annotation fields of one person (ids are added by the caller)."""
    keypoints = []
    # COCO's pixel indices (-0.5): exact, the drawn positions sit on a 1/16 px grid.
    for x, y, v in keypoints_to_coco(person.keypoints):
        keypoints.extend([float(x), float(y), int(v)] if v > 0 else [0, 0, 0])
    rle = mask_utils.encode(np.asfortranarray(person.visible_mask.astype(np.uint8)))
    return {
        "category_id": 1,
        "bbox": [float(v) for v in person.bbox],
        "area": person.area,
        "iscrowd": 0,
        "keypoints": keypoints,
        "num_keypoints": person.num_keypoints,
        "segmentation": {"size": [int(s) for s in rle["size"]],
                         "counts": rle["counts"].decode("ascii")},
    }


def image_file_name(image_id: int) -> str:
    """File name (relative to ``DIR/images``) of image ``image_id``."""
    return f"{image_id:012d}.jpg"


def _render_chunk(args) -> list[tuple[dict, list[dict]]]:
    """Worker: render, encode and write images ``start..stop``; return their COCO entries."""
    images_dir, start, stop, seed, stream, config = args
    cv2.setNumThreads(1)
    out = []
    for index in range(start, stop):
        sample = render_sample([seed, stream, index], config)
        ok, jpeg = cv2.imencode(".jpg", sample.image,
                                [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
        if not ok:
            raise RuntimeError(f"cv2.imencode failed for synthetic image {index}")
        image_id = index + 1
        name = image_file_name(image_id)
        write_bytes_atomic(pathlib.Path(images_dir) / name, jpeg.tobytes())
        h, w = config.image_size
        entry = {"id": image_id, "file_name": name, "height": h, "width": w}
        out.append((entry, [_annotation(p) for p in sample.people]))
    return out


def _generator_info(num_images, seed, stream, config) -> dict:
    return {"version": GENERATOR_VERSION, "num_images": int(num_images), "seed": int(seed),
            "stream": int(stream), "config": dataclasses.asdict(config)}


def _pool_context():
    """A multiprocessing context for the render workers, or ``None`` to render in-process.

    Fork is fastest, but a process that has loaded TensorFlow (the trainer) does not survive a
    fork reliably; it gets spawned workers instead, which need a main module that can be
    imported again (a script file, not ``python -`` or ``-c``).
    """
    if "tensorflow" not in sys.modules and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file and os.path.exists(main_file):
        return multiprocessing.get_context("spawn")
    return None


def _render_in_workers(context, workers: int, jobs: list, bar) -> list:
    """Run ``_render_chunk`` over ``jobs`` in worker processes; results in job order.

    ProcessPoolExecutor, not ``multiprocessing.Pool``: when a worker dies (killed, out of
    memory, a crash in native code) the pool breaks and this raises at once, where ``Pool``
    replaces the worker and waits forever for the chunk it lost (as the converter does,
    ``keras_pose.data.convert``).
    """
    executor = ProcessPoolExecutor(workers, mp_context=context)
    results = []
    try:
        futures = [executor.submit(_render_chunk, job) for job in jobs]
        for job, future in zip(jobs, futures, strict=True):
            results.append(future.result())
            bar.update(job[2] - job[1])
    except BrokenProcessPool as error:
        raise RuntimeError(
            f"a synthetic-data worker process died ({error}); nothing was published "
            "(annotations.json is written last), so running the same command again starts "
            "over. With spawned workers (a process that loaded TensorFlow) the calling script "
            "is re-imported by each worker: guard its entry point with "
            "`if __name__ == '__main__':`, or pass workers=1 to render in-process"
        ) from None
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return results


def make_synthetic_dataset(
    output_dir: str | os.PathLike,
    num_images: int,
    seed: int,
    *,
    image_size: int | tuple[int, int] | None = None,
    workers: int | None = None,
    config: SyntheticConfig | None = None,
    stream: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> pathlib.Path:
    """Write ``num_images`` synthetic images and their COCO annotations under ``output_dir``.

    Args:
        output_dir: dataset folder; gets ``images/`` and ``annotations.json``.
        num_images: number of images (>= 1).
        seed: non-negative int; the same arguments give the same bytes.
        image_size: ``side`` or ``(height, width)``; overrides ``config.image_size``.
        workers: processes to render with; ``None`` = CPU count. Small jobs run in-process.
        config: what to draw; ``SyntheticConfig()`` when ``None``.
        stream: independent random stream for the same seed (``make_splits`` uses 0 for train
            and 1 for val).
        overwrite: regenerate even when ``output_dir`` already holds this exact dataset.
        progress: show a tqdm progress bar.

    Returns:
        Path of ``annotations.json`` (images are in ``images/`` beside it).

    Example:
        >>> path = make_synthetic_dataset("/tmp/synth", 16, seed=0, progress=False)
        >>> path.name
        'annotations.json'
    """
    if int(num_images) < 1:
        raise ValueError(f"num_images must be >= 1, received num_images={num_images}")
    if int(seed) < 0 or int(stream) < 0:
        raise ValueError(f"seed and stream must be >= 0, received seed={seed}, stream={stream}")
    config = config or SyntheticConfig()
    if image_size is not None:
        size = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
        config = dataclasses.replace(config, image_size=size)
    output_dir = pathlib.Path(output_dir)
    annotations_path = output_dir / ANNOTATIONS_NAME
    info = _generator_info(num_images, seed, stream, config)
    if annotations_path.exists() and not overwrite:
        try:
            existing = json.loads(annotations_path.read_text()).get("info", {}).get("synthetic")
        except (OSError, ValueError):
            existing = None
        if existing == json.loads(json.dumps(info)):
            return annotations_path
    images_dir = output_dir / IMAGES_DIR
    images_dir.mkdir(parents=True, exist_ok=True)
    if annotations_path.exists():
        annotations_path.unlink()  # the folder is incomplete until the new file is published

    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1 or None, received workers={workers}")
    chunk = 25
    jobs = [(str(images_dir), start, min(start + chunk, num_images), int(seed), int(stream),
             config) for start in range(0, num_images, chunk)]
    # Workers cost up to ~0.5 s each to start; not worth it for small jobs.
    workers = min(workers, max(1, num_images // _MIN_IMAGES_PER_WORKER))
    context = _pool_context() if workers > 1 else None
    results = []
    with tqdm(total=num_images, desc=f"synthetic {output_dir.name}", unit="img",
              disable=not progress) as bar:
        if context is None:
            for job in jobs:
                results.append(_render_chunk(job))
                bar.update(job[2] - job[1])
        else:
            results = _render_in_workers(context, workers, jobs, bar)

    images, annotations = [], []
    for chunk_result in results:
        for entry, people in chunk_result:
            images.append(entry)
            for ann in people:
                annotations.append({"id": len(annotations) + 1, "image_id": entry["id"], **ann})
    # Drop images of an earlier, larger dataset in the same folder.
    keep = {entry["file_name"] for entry in images}
    for path in images_dir.glob("*.jpg"):
        if path.name not in keep:
            path.unlink()
    coco = {
        "info": {"description": "keras-pose synthetic figures", "synthetic": info,
                 "side_cue": config.side_cue},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
    }
    write_json_atomic(annotations_path, coco, compact=True)
    return annotations_path


def make_splits(
    output_dir: str | os.PathLike,
    num_train: int,
    num_val: int,
    seed: int,
    **kwargs,
) -> dict[str, pathlib.Path]:
    """Write ``output_dir/train`` and ``output_dir/val``, disjoint random streams of one seed.

    Args:
        output_dir: parent folder of the two datasets.
        num_train: images in the train split.
        num_val: images in the val split.
        seed: non-negative int.
        **kwargs: passed to :func:`make_synthetic_dataset` (``image_size``, ``workers``, ...).

    Returns:
        ``{"train": path, "val": path}`` of the two ``annotations.json`` files.
    """
    if "stream" in kwargs:
        raise ValueError("make_splits chooses the streams itself (train 0, val 1); drop stream=")
    output_dir = pathlib.Path(output_dir)
    return {
        name: make_synthetic_dataset(output_dir / name, count, seed, stream=stream, **kwargs)
        for name, count, stream in (("train", num_train, 0), ("val", num_val, 1))
    }


def generation_speed(num_images: int = 200, seed: int = 0,
                     config: SyntheticConfig | None = None) -> float:
    """Images per second of render + JPEG encode in this process (no disk writes)."""
    config = config or SyntheticConfig()
    start = time.perf_counter()
    for index in range(num_images):
        sample = render_sample([seed, 0, index], config)
        cv2.imencode(".jpg", sample.image, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
    return num_images / (time.perf_counter() - start)
