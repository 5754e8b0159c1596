"""Drawing helpers: skeletons and heatmaps over uint8 RGB images, and image grids.

numpy + OpenCV, used by ``tools/show_batch.py``, ``tools/predict.py`` and the TensorBoard image
callback. Keypoints are continuous coordinates (``keras_pose.keypoints``): a point ``(x, y)``
is drawn at array position ``(x - 0.5, y - 0.5)``, with sub-pixel precision.

Example:

>>> import numpy as np
>>> from keras_pose.keypoints import COCO17
>>> canvas = np.zeros((64, 64, 3), np.uint8)
>>> points = np.random.default_rng(0).uniform(8, 56, (17, 2))
>>> drawn = draw_skeleton(canvas, points, np.full(17, 2), COCO17)
>>> drawn.shape, drawn.dtype.name, int(canvas.max())
((64, 64, 3), 'uint8', 0)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from keras_pose.io import write_bytes_atomic
from keras_pose.keypoints import KeypointSet, coord_to_index

LEFT_COLOR = (255, 64, 64)  # RGB: left limbs red
RIGHT_COLOR = (64, 128, 255)  # right limbs blue
CENTER_COLOR = (255, 220, 0)  # limbs joining sides (face, shoulders, hips) yellow

_SHIFT = 4  # cv2 fixed-point bits: 1/16 px drawing precision
_ONE = 1 << _SHIFT


def _to_cv(point) -> tuple[int, int]:
    """Continuous coordinate -> cv2 fixed-point array position."""
    col, row = coord_to_index(float(point[0])), coord_to_index(float(point[1]))
    return int(round(col * _ONE)), int(round(row * _ONE))


def _as_uint8_rgb(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"image must be [H, W, 3] (or [H, W]), received shape {image.shape}")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    if image.dtype != np.uint8:
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def draw_skeleton(image, keypoints, visibility_or_scores, keypoint_set: KeypointSet, *,
                  threshold: float = 0.0, color: Sequence[int] | None = None,
                  left_color: Sequence[int] = LEFT_COLOR, right_color: Sequence[int] = RIGHT_COLOR,
                  center_color: Sequence[int] = CENTER_COLOR, radius: float | None = None,
                  thickness: int | None = None) -> np.ndarray:
    """Draw keypoints and limbs on a copy of an RGB image.

    Args:
        image: ``[H, W, 3]`` uint8 RGB (other dtypes are rounded and clipped to 0-255).
        keypoints: ``[K, 2]`` continuous (x, y) pixel coordinates of this image.
        visibility_or_scores: ``[K]`` COCO visibility, loss weights or scores; keypoint ``k``
            is drawn when its value is above ``threshold``; a limb when both ends are.
        keypoint_set: the :class:`~keras_pose.keypoints.KeypointSet` (skeleton and sides).
        threshold: drawing threshold (0 draws every labeled / weighted keypoint; use e.g. 0.2
            for predicted scores).
        color: one RGB colour for everything (e.g. green ground truth); ``None`` colours by side.
        left_color, right_color, center_color: side colours (limbs whose two ends are on one
            side take its colour; others the centre colour).
        radius: keypoint radius in pixels (default: scaled with the image, at least 2).
        thickness: limb thickness in pixels (default: scaled with the image, at least 1).

    Returns:
        A new ``[H, W, 3]`` uint8 image.
    """
    canvas = _as_uint8_rgb(image).copy()
    keypoints = np.asarray(keypoints, np.float64)
    values = np.asarray(visibility_or_scores, np.float64).reshape(-1)
    num = keypoint_set.num_keypoints
    if keypoints.shape != (num, 2) or values.shape != (num,):
        raise ValueError(
            f"{keypoint_set.name} has {num} keypoints: keypoints must be [{num}, 2] and "
            f"visibility_or_scores [{num}], received {keypoints.shape} and {values.shape}"
        )
    size = max(canvas.shape[:2])
    radius = radius if radius is not None else max(2.0, size / 100.0)
    thickness = thickness if thickness is not None else max(1, int(round(size / 160.0)))
    shown = (values > threshold) & np.all(np.isfinite(keypoints), axis=-1)

    def side_color(index):
        if color is not None:
            return tuple(int(c) for c in color)
        side = keypoint_set.side(index)
        return tuple(int(c) for c in {"left": left_color, "right": right_color}.get(
            side, center_color))

    for a, b in keypoint_set.skeleton:
        if not (shown[a] and shown[b]):
            continue
        limb_color = side_color(a) if keypoint_set.side(a) == keypoint_set.side(b) else (
            tuple(int(c) for c in (color if color is not None else center_color)))
        cv2.line(canvas, _to_cv(keypoints[a]), _to_cv(keypoints[b]), limb_color,
                 thickness, cv2.LINE_AA, _SHIFT)
    for k in np.flatnonzero(shown):
        centre = _to_cv(keypoints[k])
        cv2.circle(canvas, centre, int(round(radius * _ONE)), side_color(k), -1, cv2.LINE_AA,
                   _SHIFT)
        cv2.circle(canvas, centre, int(round(radius * _ONE)), (0, 0, 0), 1, cv2.LINE_AA, _SHIFT)
    return canvas


def overlay_heatmaps(image, heatmaps, *, alpha: float = 0.6, reduce: str = "sum",
                     colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """Blend heatmaps (summed or max over keypoints) over an RGB image as a colour map.

    Args:
        image: ``[H, W, 3]`` uint8 RGB.
        heatmaps: ``[h, w, K]`` or ``[h, w]``; resized to the image with pixel centres aligned
            (a heatmap of stride s covers the image exactly). Values are clipped to [0, 1].
        alpha: opacity of the colour map where the heatmap is 1 (it fades to 0 with the value).
        reduce: ``"sum"`` or ``"max"`` over keypoints.
        colormap: an OpenCV colour map.

    Returns:
        A new ``[H, W, 3]`` uint8 image.
    """
    canvas = _as_uint8_rgb(image)
    heat = np.asarray(heatmaps, np.float32)
    if heat.ndim == 3:
        if reduce not in ("sum", "max"):
            raise ValueError(f"reduce must be 'sum' or 'max', received reduce={reduce!r}")
        heat = heat.sum(axis=-1) if reduce == "sum" else heat.max(axis=-1)
    if heat.ndim != 2:
        raise ValueError(f"heatmaps must be [h, w, K] or [h, w], received shape {heat.shape}")
    heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    height, width = canvas.shape[:2]
    # cv2.resize maps pixel centres to pixel centres, the convention of keras_pose.keypoints.
    heat = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
    colored = cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), colormap)
    colored = cv2.cvtColor(colored, cv2.COLOR_BGR2RGB).astype(np.float32)
    weight = (alpha * heat)[..., None]
    blended = canvas.astype(np.float32) * (1.0 - weight) + colored * weight
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def label(image, text: str, *, color: Sequence[int] = (255, 255, 255)) -> np.ndarray:
    """A copy of an RGB image with a short caption in its top-left corner, on a dark band."""
    canvas = _as_uint8_rgb(image).copy()
    scale = max(0.35, canvas.shape[1] / 640.0)
    (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    band = canvas[: height + base + 6, : width + 8]
    band[:] = (band.astype(np.float32) * 0.35).astype(np.uint8)
    cv2.putText(canvas, text, (4, height + 3), cv2.FONT_HERSHEY_SIMPLEX, scale,
                tuple(int(c) for c in color), 1, cv2.LINE_AA)
    return canvas


def image_grid(images: Sequence[np.ndarray], columns: int, *, pad: int = 4,
               background: Sequence[int] = (32, 32, 32)) -> np.ndarray:
    """Tile same-sized ``[H, W, 3]`` uint8 images into one grid image, row by row."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, received columns={columns}")
    tiles = [_as_uint8_rgb(im) for im in images]
    height, width = tiles[0].shape[:2]
    if any(t.shape[:2] != (height, width) for t in tiles):
        raise ValueError(f"image_grid needs same-sized images, received "
                         f"{sorted({t.shape[:2] for t in tiles})}")
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    grid = np.empty((rows * (height + pad) + pad, columns * (width + pad) + pad, 3), np.uint8)
    grid[:] = np.asarray(background, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = pad + r * (height + pad), pad + c * (width + pad)
        grid[y:y + height, x:x + width] = tile
    return grid


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG atomically."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(_as_uint8_rgb(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"Could not encode {path!r} as PNG")
    write_bytes_atomic(path, data.tobytes())


def draw_pck_chart(per_keypoint: Mapping[str, Mapping[str, float | None]], *,
                   title: str = "per-keypoint accuracy") -> np.ndarray:
    """A horizontal bar chart (RGB uint8 image) of per-keypoint metrics.

    Args:
        per_keypoint: ``{metric: {keypoint name: value in [0, 1] or None}}``, as in
            :func:`keras_pose.evaluate.metric_report`'s ``"per_keypoint"``; one bar per metric
            and keypoint.
        title: text at the top.

    Returns:
        The chart image.
    """
    metrics_names = list(per_keypoint)
    if not metrics_names:
        raise ValueError("per_keypoint is empty: nothing to draw")
    names = list(per_keypoint[metrics_names[0]])
    colors = [(40, 120, 200), (60, 160, 60), (210, 90, 40), (150, 60, 150), (200, 170, 40)]
    # Three legend entries per line, so any number of metrics fits the width.
    legend_lines = -(-len(metrics_names) // 3)
    bar, gap, left, width, top = 12, 8, 150, 420, 40 + 16 * legend_lines
    row = bar * len(metrics_names) + gap
    height = top + row * len(names) + 30
    image = np.full((height, left + width + 80, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, title, (10, 22), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for m, metric in enumerate(metrics_names):
        x, y = 10 + 215 * (m % 3), 34 + 16 * (m // 3)
        cv2.rectangle(image, (x, y), (x + 12, y + 12), colors[m % len(colors)], -1)
        cv2.putText(image, metric, (x + 18, y + 11), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for tick in range(0, 11, 2):
        x = left + int(width * tick / 10)
        cv2.line(image, (x, top - 4), (x, height - 24), (220, 220, 220), 1)
        cv2.putText(image, f"{tick / 10:.1f}", (x - 10, height - 8), font, 0.4, (90, 90, 90), 1,
                    cv2.LINE_AA)
    for i, name in enumerate(names):
        y = top + i * row
        cv2.putText(image, name, (8, y + row // 2 + 2), font, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        for m, metric in enumerate(metrics_names):
            value = per_keypoint[metric].get(name)
            y0 = y + m * bar
            if value is None:
                cv2.putText(image, "n/a", (left + 4, y0 + bar - 2), font, 0.35, (120, 120, 120),
                            1, cv2.LINE_AA)
                continue
            x1 = left + int(round(width * min(max(value, 0.0), 1.0)))
            cv2.rectangle(image, (left, y0), (max(x1, left + 1), y0 + bar - 2),
                          colors[m % len(colors)], -1)
            cv2.putText(image, f"{value:.3f}", (x1 + 4, y0 + bar - 2), font, 0.35, (0, 0, 0), 1,
                        cv2.LINE_AA)
    return image
