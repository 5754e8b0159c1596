"""Atomic file writes: a path only ever holds a complete file.

Every artefact keras-pose writes (manifests, annotations, images, summaries, configs) goes
through here: the bytes go to a temporary file in the same folder, which is then renamed over
the target with ``os.replace`` (atomic on POSIX and Windows). An interrupted write leaves the old
file, or none, and removes its temporary file.

Permissions are those an ordinary ``open(path, "w")`` gives: the temporary file is created with
mode 0o666 and the process umask (``tempfile.mkstemp`` would make every artefact 0o600, which
a TF Serving container or a teammate running as another user cannot read).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import secrets
from typing import Any

import numpy as np


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> pathlib.Path:
    """Write ``data`` to ``path`` atomically, creating the parent folder if needed."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = _create_temporary(path)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(error, OSError) and error.filename is None and error.errno:
            # A failed write (ENOSPC, EDQUOT, EIO) names no file: say which one it was.
            raise OSError(error.errno, f"{error.strerror or error}", os.fspath(path)) from None
        raise
    return path


def _create_temporary(path: pathlib.Path) -> tuple[int, pathlib.Path]:
    """A new file ``.NAME.<random>.tmp`` beside ``path``, created as ``open(..., "w")`` would:
    mode 0o666 less the umask (the kernel applies it, and a default ACL of the folder)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (/proc/self/status)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, hence the fallback)
    os.umask(mask)
    return mask


def match_umask(root: str | os.PathLike) -> None:
    """Give ``root`` and every folder below it the mode ``mkdir`` would (0o777 less the umask).

    TensorFlow creates the folders of a SavedModel with mode 0o755 whatever the umask; its files
    already follow the umask.
    """
    mode = 0o777 & ~current_umask()
    root = pathlib.Path(root)
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())]:
        current = folder.stat().st_mode
        if current & 0o777 != mode:  # keep setgid/sticky bits a shared folder passes on
            os.chmod(folder, mode | (current & 0o7000))


def write_text_atomic(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Write UTF-8 text to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def _json_ready(value: Any) -> Any:
    """Numpy values to Python ones; NaN and infinities to ``None`` (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        return _json_ready(value.item())
    return value


def write_json_atomic(path: str | os.PathLike, value: Any, *, compact: bool = False
                      ) -> pathlib.Path:
    """Write ``value`` as JSON atomically (indented unless ``compact``)."""
    if compact:
        text = json.dumps(_json_ready(value), separators=(",", ":"), allow_nan=False)
    else:
        text = json.dumps(_json_ready(value), indent=2, allow_nan=False) + "\n"
    return write_text_atomic(path, text)


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """The JSON value in ``path``; a missing file or bad JSON is an error naming the path.

    Raises:
        FileNotFoundError: ``"{what} not found: {path}"``.
        ValueError: ``"{path}: not valid JSON: ..."``.
    """
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from None
