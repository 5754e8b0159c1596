"""TF Serving's layout: atomic version directories under ``<base>/<name>/`` and
``<base>/models.config``."""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import shutil
import uuid

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from keras_pose.export.graph import save_saved_model
from keras_pose.export.loading import (
    DEFAULT_MARGIN,
    DEFAULT_SERVING_ROOT,
    MODELS_CONFIG,
    TEMP_PREFIX,
    ExportError,
)
from keras_pose.io import write_text_atomic
from keras_pose.keypoints import KeypointSet
from keras_pose.precision import FLOAT32, check_precision


def list_versions(model_dir: str | os.PathLike) -> list[int]:
    """The integer version directories of one model (what TF Serving would serve), sorted."""
    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        return []
    versions = []
    for child in model_dir.iterdir():
        if child.is_dir() and child.name.isdigit() and (child / "saved_model.pb").exists():
            versions.append(int(child.name))
    return sorted(versions)


def _validate_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or os.sep in name or name.isdigit():
        raise ExportError(
            f"model name {name!r} is not valid: use a non-empty directory name without "
            "slashes that is not a number (a number would read as a version)"
        )


def export_saved_model(model, *, name: str, base: str | os.PathLike = "saved_models",
                       version: int | None = None, margin: float = DEFAULT_MARGIN,
                       keypoint_set: KeypointSet | str | None = None, flip_test: bool = False,
                       update_config: bool = True, serving_root: str | None = None,
                       source: str | None = None, precision: str = FLOAT32) -> pathlib.Path:
    """Export ``model`` as ``<base>/<name>/<version>/`` atomically and update models.config.

    Args:
        model: a ``PoseModel``.
        name: the model name TF Serving serves it under.
        base: the directory holding every model (``--model_config_file``'s neighbour).
        version: the version number; ``None`` = one more than the newest existing version.
        margin: crop margin of the training records.
        keypoint_set: the keypoint set (or its name); guessed from the keypoint count if
            ``None``.
        flip_test: put the flip test into the graph.
        update_config: rewrite ``<base>/models.config`` afterwards.
        serving_root: where the server sees ``base`` (see :func:`write_models_config`).
        source: a note stored in the metadata (the checkpoint exported).
        precision: the network's arithmetic, ``float32`` or ``bfloat16`` (refused without
            bfloat16 hardware, before anything is written).

    Returns:
        The version directory.
    """
    _validate_name(name)
    check_precision(precision)  # before the model directory is made
    if version is not None and (not isinstance(version, (int, np.integer)) or version < 0):
        raise ExportError(f"version must be an integer >= 0, received version={version!r}")
    model_dir = pathlib.Path(base) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    if version is not None:
        _check_free(model_dir, version)
    _remove_stale_temporaries(model_dir)
    # Not an integer name: TF Serving skips it while it is being written.
    temp = model_dir / f"{TEMP_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        try:
            save_saved_model(model, temp, margin=margin, keypoint_set=keypoint_set,
                             flip_test=flip_test, source=source, precision=precision)
        except Exception as error:
            if not _is_write_failure(error):
                raise
            reason = getattr(error, "strerror", None) or getattr(error, "message", None) \
                or str(error) or type(error).__name__
            raise OSError(
                _errno_of(error),
                f"writing the SavedModel of {name!r} into {model_dir} failed "
                f"({type(error).__name__}: {reason}); no version directory was added and "
                f"{pathlib.Path(base) / MODELS_CONFIG} is unchanged", str(temp)) from error
        target = _rename_to_version(temp, model_dir, version)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    if update_config:
        write_models_config(base, serving_root=serving_root)
    return target


def _is_write_failure(error: BaseException) -> bool:
    """A failed write of the SavedModel's files (a full disk, an I/O error): TensorFlow
    reports one as an ``OpError`` (``ResourceExhaustedError``, often without a message)."""
    return isinstance(error, (OSError, tf.errors.OpError))


def _errno_of(error: BaseException) -> int:

    if isinstance(error, OSError) and error.errno:
        return error.errno
    return errno.ENOSPC if isinstance(error, tf.errors.ResourceExhaustedError) else errno.EIO


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours
        return True
    return True


def _remove_stale_temporaries(model_dir: pathlib.Path) -> None:
    """Delete temporary exports left by exporters that were killed (their process is gone)."""
    for child in model_dir.glob(f"{TEMP_PREFIX}*"):
        try:
            pid = int(child.name[len(TEMP_PREFIX):].split("_")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(child, ignore_errors=True)


def _check_free(model_dir: pathlib.Path, version: int) -> None:
    target = model_dir / str(version)
    if target.exists() and any(target.iterdir()):
        raise ExportError(
            f"version {version} of {model_dir.name!r} already exists at {target}; "
            "choose another --version or leave it out for the next free one"
        )


def _rename_to_version(temp: pathlib.Path, model_dir: pathlib.Path,
                       version: int | None) -> pathlib.Path:
    for _ in range(100):
        number = version if version is not None else max(
            [int(c.name) for c in model_dir.iterdir() if c.name.isdigit()] or [0]) + 1
        target = model_dir / str(number)
        if target.exists() and any(target.iterdir()):
            if version is not None:
                _check_free(model_dir, version)
            continue
        try:
            # rename() of a directory never replaces a non-empty one: two exporters racing for
            # the same number cannot overwrite each other; the loser takes the next number.
            os.rename(temp, target)
            return target
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) or version is not None:
                raise
    raise ExportError(f"could not find a free version number in {model_dir}")


@contextlib.contextmanager
def _locked(directory: pathlib.Path):
    """An exclusive lock on a directory (flock on its descriptor: no lock file to leave behind)."""
    try:
        import fcntl  # POSIX only: imported here so the rest works without it
    except ImportError:  # not POSIX: no lock, the write itself is still atomic
        yield
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)


def read_models_config(path: str | os.PathLike):
    """Parse a ``models.config`` (text ``ModelServerConfig``); empty if the file is missing."""
    config = model_server_config_pb2.ModelServerConfig()
    path = pathlib.Path(path)
    if path.exists():
        try:
            text_format.Parse(path.read_text(), config)
        except text_format.ParseError as error:
            raise ExportError(f"{path}: not a valid ModelServerConfig text proto: {error}") \
                from None
    return config


def write_models_config(base: str | os.PathLike = "saved_models", *,
                        serving_root: str | None = None) -> pathlib.Path:
    """Rewrite ``<base>/models.config`` to list every model under ``base`` with a version.

    TF Serving wants absolute base paths and waits at start-up for every listed model, so the
    file lists exactly the models that have a complete version, each at
    ``<serving_root>/<name>``. Settings of an already listed model (version policy, labels)
    are kept.

    Args:
        base: the export base directory.
        serving_root: the absolute path at which the server sees ``base``. Default: the root
            the file already uses, else ``/models`` (the ``tensorflow/serving`` Docker image
            with ``-v "$PWD/saved_models:/models"``). For a local ``tensorflow_model_server``
            pass the absolute path of ``base``.

    Returns:
        The config file path.
    """
    base = pathlib.Path(base)
    base.mkdir(parents=True, exist_ok=True)
    path = base / MODELS_CONFIG
    if serving_root is not None and not serving_root.startswith("/") and "://" not in serving_root:
        raise ExportError(
            f"serving_root must be an absolute path or URI (TF Serving needs one), received "
            f"{serving_root!r}"
        )
    with _locked(base):
        old = read_models_config(path)
        previous = {c.name: c for c in old.model_config_list.config}
        if serving_root is None:
            roots = {c.base_path.rsplit("/", 1)[0] for c in previous.values()
                     if c.base_path.endswith("/" + c.name)}
            serving_root = roots.pop() if len(roots) == 1 else DEFAULT_SERVING_ROOT
        config = model_server_config_pb2.ModelServerConfig()
        names = sorted(c.name for c in base.iterdir() if c.is_dir() and list_versions(c))
        for name in names:
            entry = config.model_config_list.config.add()
            if name in previous:
                entry.CopyFrom(previous[name])
            entry.name = name
            entry.base_path = serving_root.rstrip("/") + "/" + name
            entry.model_platform = "tensorflow"
        text = (
            "# TF Serving --model_config_file, rewritten by keras_pose.export "
            "(tools/export.py).\n"
            f"# base_path = where the server sees this directory ({serving_root}).\n"
            + (text_format.MessageToString(config) if names else "model_config_list {\n}\n")
        )
        write_text_atomic(path, text)
    return path
