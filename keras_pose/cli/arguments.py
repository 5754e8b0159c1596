"""Argument types shared by several tools."""

from __future__ import annotations

import argparse


def parse_box(text: str) -> list[float]:
    """``x,y,w,h`` in pixels (w, h > 0), for ``--box`` options."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or values[2] <= 0 or values[3] <= 0:
        raise argparse.ArgumentTypeError(
            f"--box must be x,y,w,h in pixels with w, h > 0, received {text!r}")
    return values
