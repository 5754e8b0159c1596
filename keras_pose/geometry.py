"""Image and tensor sizes: the ``int or (height, width)`` arguments every module accepts."""

from __future__ import annotations

import numpy as np


def size_pair(size, name: str = "input_size") -> tuple[int, int]:
    """An int or (height, width) -> (height, width), validated."""
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    try:
        height, width = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be an int or a (height, width) pair, received {name}={size!r}"
        ) from None
    if height < 1 or width < 1:
        raise ValueError(f"{name} must be positive, received {name}={size!r}")
    return height, width
