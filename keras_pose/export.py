"""SavedModel export for TF Serving, ``models.config``, and in-process prediction.

An export is a TF Serving version directory ``<base>/<name>/<version>/`` whose graph holds only
stock TensorFlow ops: crop from a person box, the network, decoding, and the map back to image
pixels. Its signatures (TF Serving requires every input of a signature, so "optional boxes" are
separate signatures):

==========================  ==========================================  =====================
signature                   inputs                                      outputs
==========================  ==========================================  =====================
``serving_default``         ``images`` uint8 [N, H, W, 3] (RGB)         ``keypoints`` float32
``serving_boxes``           ``images`` + ``boxes`` float32 [N, 4]       [N, K, 2] (x, y in
``serving_bytes``           ``image_bytes`` string [N] (JPEG/PNG/...)   input-image pixels),
``serving_bytes_boxes``     ``image_bytes`` + ``boxes`` float32 [N, 4]  ``scores`` [N, K]
==========================  ==========================================  =====================

``boxes`` are person boxes ``x, y, w, h`` in image pixels; without them the box is the whole
image. The network sees a square crop of side ``margin * max(w, h)`` centred on the box (the
same crop the records were made with; ``margin`` comes from the run's pipeline, default 1.25),
resized to its input size (averaging ``f x f`` pixel blocks first when it shrinks by ``f >= 2``,
as the converter does, so large people do not alias). Coordinates follow
``keras_pose.keypoints`` (pixel centres at +0.5).

Versions are written atomically: the SavedModel is saved into a temporary sibling directory
whose name is not an integer (TF Serving ignores it while polling) and renamed to the version
number when complete. ``<base>/models.config`` (TF Serving's ``--model_config_file``) is then
rewritten, also atomically, to list every model under ``<base>`` that has a version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import pathlib
import shutil
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_pose import runs
from keras_pose.io import match_umask, write_text_atomic
from keras_pose.keypoints import KEYPOINT_SETS, KeypointSet, get_keypoint_set, infer_keypoint_set
from keras_pose.pipeline import load_pipeline
from keras_pose.serving import (
    MAX_BOX_VALUE,
    OUTPUTS,
    SIGNATURE_BOXES,
    SIGNATURE_BYTES,
    SIGNATURE_BYTES_BOXES,
    SIGNATURE_DEFAULT,
    SIGNATURES,
    check_boxes,
)

DEFAULT_MARGIN = 1.25
DEFAULT_SERVING_ROOT = "/models"
MODELS_CONFIG = "models.config"
METADATA_FILE = "keras_pose.json"
TEMP_PREFIX = "_tmp_export_"  # + pid: never an integer, so TF Serving never loads it



class ExportError(ValueError):
    """An export that cannot be done as asked; the message says what and where."""


# -- loading trained models ------------------------------------------------------------------


@dataclasses.dataclass
class LoadedModel:
    """A trained network with what export and prediction need from its run.

    Attributes:
        model: the ``PoseModel``.
        keypoint_set: from the run's pipeline, else guessed from the keypoint count.
        margin: crop margin of the run's records (``[data] margin``), default 1.25.
        pipeline: the run's resolved pipeline, or ``None`` for a bare ``.keras`` file.
        path: the ``.keras`` file that was loaded.
    """

    model: Any
    keypoint_set: KeypointSet | None
    margin: float
    pipeline: Any
    path: pathlib.Path


def guess_keypoint_set(num_keypoints: int) -> KeypointSet | None:
    """The keypoint set with this many keypoints (``keypoints.infer_keypoint_set``), or
    ``None`` when the count names none or several."""
    try:
        return infer_keypoint_set(num_keypoints=num_keypoints)
    except ValueError:
        return None


def load_pose_model(path: str | os.PathLike) -> LoadedModel:
    """Load a trained network from a run directory or a ``.keras`` file.

    Args:
        path: ``runs/NAME`` (holding ``model.keras`` and ``pipeline.resolved.toml``) or a
            ``.keras`` file (a ``pipeline.resolved.toml`` beside it is used when present).

    Returns:
        A :class:`LoadedModel`.
    """
    import keras

    import keras_pose.models  # noqa: F401  (registers the custom layers and model classes)

    try:
        keras_file, pipeline_file = runs.find_model(path)
    except ValueError as error:
        raise ExportError(str(error)) from None
    pipeline = load_pipeline(pipeline_file) if pipeline_file else None
    try:
        model = keras.saving.load_model(keras_file, compile=False)
    except Exception as error:  # keras raises many types for a bad or foreign file
        raise ExportError(f"{keras_file}: cannot load the Keras model: {error}") from error
    if not hasattr(model, "output_spec"):
        raise ExportError(
            f"{keras_file} holds a {type(model).__name__}, not a keras_pose PoseModel "
            "(no output_spec)"
        )
    if pipeline is not None:
        keypoint_set = get_keypoint_set(pipeline.data.keypoint_set)
        margin = float(pipeline.data.margin)
    else:
        keypoint_set = guess_keypoint_set(model.num_keypoints)
        margin = DEFAULT_MARGIN
    return LoadedModel(model, keypoint_set, margin, pipeline, keras_file)


# -- the serving graph ---------------------------------------------------------------------


def square_crop_boxes(boxes, margin: float):
    """Person boxes ``x, y, w, h`` -> square crops ``x, y, side, side`` around their centres.

    ``side = margin * max(w, h)``, the crop the converter stores for a person.
    """
    import tensorflow as tf

    boxes = tf.cast(boxes, tf.float32)
    centre = boxes[:, 0:2] + 0.5 * boxes[:, 2:4]
    side = margin * tf.reduce_max(boxes[:, 2:4], axis=1, keepdims=True)
    return tf.concat([centre - 0.5 * side, side, side], axis=1)


def crop_and_resize_boxes(crop_boxes, image_size, output_size):
    """Crop squares in image pixels -> ``tf.image.crop_and_resize`` normalized boxes.

    ``crop_and_resize`` samples output index ``i`` of ``n`` at image index
    ``y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (n - 1)`` (box corners on pixel centres). The
    project's convention wants output pixel ``i`` (centre ``i + 0.5``) to read the image at
    continuous ``y0 + (i + 0.5) * side / n``, i.e. index ``y0 + (i + 0.5) * side / n - 0.5``;
    solving for ``i = 0`` and ``i = n - 1`` gives the box below (also right for ``n = 1``, where
    crop_and_resize samples the box centre).

    Args:
        crop_boxes: [N, 4] ``x, y, side_x, side_y`` in image pixels.
        image_size: ``(H, W)`` of the image (tensors or ints).
        output_size: ``(h, w)`` crop size.

    Returns:
        float32 [N, 4] ``y1, x1, y2, x2`` for ``crop_and_resize``.
    """
    import tensorflow as tf

    height = tf.cast(image_size[0], tf.float32)
    width = tf.cast(image_size[1], tf.float32)
    out_h, out_w = float(output_size[0]), float(output_size[1])
    x0, y0, side_x, side_y = tf.unstack(tf.cast(crop_boxes, tf.float32), axis=1)
    first_x = x0 + 0.5 * side_x / out_w - 0.5
    last_x = x0 + (out_w - 0.5) * side_x / out_w - 0.5
    first_y = y0 + 0.5 * side_y / out_h - 0.5
    last_y = y0 + (out_h - 0.5) * side_y / out_h - 0.5
    # A 1-pixel-high image: crop_and_resize multiplies by (H - 1) = 0, any finite value works.
    scale_y = tf.maximum(height - 1.0, 1.0)
    scale_x = tf.maximum(width - 1.0, 1.0)
    return tf.stack([first_y / scale_y, first_x / scale_x, last_y / scale_y, last_x / scale_x],
                    axis=1)


class ServingFunctions:
    """The four signature functions for one network (plain Python; wrap with ``tf.function``).

    Args:
        model: a ``PoseModel``.
        margin: crop side = ``margin * max(box w, box h)``.
        keypoint_set: needed for ``flip_test`` (left/right permutation).
        flip_test: average with the mirrored crop's prediction.
        refine: heatmap sub-pixel refinement (``keras_pose.decode.decode_heatmaps``).

    Bad requests fail with INVALID_ARGUMENT and a one-line op message (checked in the graph,
    stock ops only): a wrong rank (``EnsureShape``), an empty batch, an image without pixels,
    bytes that do not decode, boxes that are not finite or beyond ``MAX_BOX_VALUE`` pixels,
    without a positive size, or not one per image (wrong dtypes are the signature's). Odd but
    valid requests answer: any image size from 1 x 1 (8000 x 8000 works), PNG alpha is dropped
    and gray images are replicated to RGB, boxes partly or wholly outside the image read black.
    ``tests/test_serving_inputs.py`` tries each of them; ``tests/test_serving_load.py`` the
    graph under concurrent load.
    """

    def __init__(self, model, *, margin: float = DEFAULT_MARGIN,
                 keypoint_set: KeypointSet | None = None, flip_test: bool = False,
                 refine: str = "quarter"):
        if not margin > 0:
            raise ExportError(f"margin must be > 0, received margin={margin}")
        if flip_test and keypoint_set is None:
            raise ExportError("flip_test needs the keypoint set (its left/right pairs)")
        if keypoint_set is not None and keypoint_set.num_keypoints != model.num_keypoints:
            raise ExportError(
                f"keypoint set {keypoint_set.name!r} has {keypoint_set.num_keypoints} keypoints "
                f"but the model predicts {model.num_keypoints}"
            )
        self.model = model
        self.margin = float(margin)
        self.keypoint_set = keypoint_set
        self.flip_test = bool(flip_test)
        self.refine = refine
        self.input_size = tuple(model.input_size)
        self.num_keypoints = int(model.num_keypoints)
        import tensorflow as tf

        from keras_pose.models.fold import fold_batch_norms

        # The graph runs the network with its batch norms folded into the convs: same outputs
        # to float rounding, about 10% less latency (keras_pose/models/fold.py). It is a
        # snapshot of the weights: build a new ServingFunctions after further training.
        self.folded_model = fold_batch_norms(model)
        # One traced network (+ decoding) that every signature calls: the model is traced and
        # stored once, not once per signature.
        self._network = tf.function(
            self._network_and_decode,
            input_signature=[tf.TensorSpec([None, *self.input_size, 3], tf.float32)],
            autograph=False,  # no tensor-dependent Python control flow; autograph is slow
        )

    def input_signatures(self) -> dict[str, list]:
        """``{signature name: [tf.TensorSpec, ...]}`` in argument order."""
        import tensorflow as tf

        images = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")
        encoded = tf.TensorSpec([None], tf.string, name="image_bytes")
        boxes = tf.TensorSpec([None, 4], tf.float32, name="boxes")
        return {
            SIGNATURE_DEFAULT: [images],
            SIGNATURE_BOXES: [images, boxes],
            SIGNATURE_BYTES: [encoded],
            SIGNATURE_BYTES_BOXES: [encoded, boxes],
        }

    def functions(self) -> dict[str, Any]:
        """``{signature name: python function}`` matching :meth:`input_signatures`."""

        def serving_default(images):
            return self.predict_images(images, None)

        def serving_boxes(images, boxes):
            return self.predict_images(images, boxes)

        def serving_bytes(image_bytes):
            return self.predict_encoded(image_bytes, None)

        def serving_bytes_boxes(image_bytes, boxes):
            return self.predict_encoded(image_bytes, boxes)

        return {
            SIGNATURE_DEFAULT: serving_default,
            SIGNATURE_BOXES: serving_boxes,
            SIGNATURE_BYTES: serving_bytes,
            SIGNATURE_BYTES_BOXES: serving_bytes_boxes,
        }

    # The graph pieces.

    def _final(self, images):
        outputs = self.folded_model(images, training=False)
        if isinstance(outputs, (list, tuple)):
            outputs = outputs[-1]
        return outputs

    def _check_boxes(self, boxes, count):
        import tensorflow as tf

        boxes = tf.ensure_shape(boxes, [None, 4])  # the rank at run time (as for images)
        checks = [
            tf.debugging.assert_equal(
                tf.shape(boxes)[0], count,
                message="boxes must be float32 [N, 4] (x, y, w, h in pixels), one per image"),
            tf.debugging.assert_equal(
                tf.reduce_all(tf.abs(boxes) <= MAX_BOX_VALUE), True,  # False for NaN and inf
                message=f"boxes must be finite pixel values (|x|, |y|, w, h <= {MAX_BOX_VALUE:g})"),
            tf.debugging.assert_positive(
                boxes[:, 2:4], message="boxes must have a positive width and height (x, y, w, h)"),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(boxes)

    def _network_and_decode(self, crops):
        from keras_pose import codecs

        codec = codecs.codec_for(self.model.output_spec, self.input_size, refine=self.refine)
        permutation = self.keypoint_set.flip_permutation if self.flip_test else None
        predicted = codecs.predict_keypoints(codec, self._final, crops, permutation)
        return predicted["keypoints"], predicted["scores"]

    def run_crops(self, crops, crop_boxes):
        """Network input crops [N, h, w, 3] float32 -> image-pixel keypoints and scores."""
        import tensorflow as tf

        points, scores = self._network(crops)
        in_h, in_w = self.input_size
        scale = crop_boxes[:, 2:4] / tf.constant([in_w, in_h], tf.float32)
        keypoints = crop_boxes[:, None, 0:2] + tf.cast(points, tf.float32) * scale[:, None, :]
        return {"keypoints": tf.identity(keypoints, name="keypoints"),
                "scores": tf.identity(tf.cast(scores, tf.float32), name="scores")}

    def crop_person(self, image, box):
        """One image uint8 [H, W, 3] and person box [4] -> (crop float32 [h, w, 3], crop box).

        Like the converter (``keras_pose.data.coco.crop_image``): when the crop shrinks the
        image by ``f >= 2`` (``f = floor(side / input side)``), blocks of ``f x f`` pixels are
        averaged first (exact in the pixel-centre convention: a pure scale by ``1 / f``), so
        large people do not alias; then the square is sampled bilinearly, black outside.
        """
        import tensorflow as tf

        crop_box = square_crop_boxes(box[None], self.margin)  # [1, 4]
        side = crop_box[0, 2]
        hw = tf.shape(image)[0:2]
        # At most the image's larger side: a larger f only pads more zeros (a box far larger
        # than the image would otherwise pad to f x f pixels and exhaust memory).
        factor = tf.clip_by_value(tf.floor(side / float(max(self.input_size))), 1.0,
                                  tf.cast(tf.maximum(tf.reduce_max(hw), 1), tf.float32))
        f = tf.cast(factor, tf.int32)
        source = image[None]  # uint8 until needed: a large image costs 1/4 of the memory

        def block_average():
            padded_hw = (hw + f - 1) // f * f
            padded = tf.pad(source, [[0, 0], [0, padded_hw[0] - hw[0]],
                                     [0, padded_hw[1] - hw[1]], [0, 0]])
            return tf.image.resize(padded, padded_hw // f, method="area")

        source = tf.cond(f > 1, block_average, lambda: tf.cast(source, tf.float32))
        crop = tf.image.crop_and_resize(
            source,
            crop_and_resize_boxes(crop_box / factor, tf.shape(source)[1:3], self.input_size),
            tf.zeros([1], tf.int32), self.input_size, method="bilinear",
            extrapolation_value=0.0,
        )
        return crop[0], crop_box[0]

    def _crop_all(self, images, boxes, decode: bool):
        """map_fn of :meth:`crop_person` over images (uint8 or encoded) and boxes (or None)."""
        import tensorflow as tf

        count = tf.shape(images)[0]
        check = tf.debugging.assert_positive(
            count, message="the batch is empty: send at least one image")
        # Everything downstream reads the images through the check: an empty batch must fail
        # with this message, not with whichever op on the empty tensor happens to run first.
        with tf.control_dependencies([check]):
            count, images = tf.identity(count), tf.identity(images)
        with_boxes = boxes is not None
        if with_boxes:
            boxes = self._check_boxes(boxes, count)
        else:
            boxes = tf.zeros([count, 4], tf.float32)  # replaced by each image's full frame

        def crop_one(args):
            image, box = args
            if decode:
                image = tf.io.decode_image(image, channels=3, dtype=tf.uint8,
                                           expand_animations=False)
                image.set_shape([None, None, 3])
            if not with_boxes:
                size = tf.cast(tf.reverse(tf.shape(image)[0:2], [0]), tf.float32)
                box = tf.concat([tf.zeros([2]), size], 0)
            return self.crop_person(image, box)

        in_h, in_w = self.input_size
        return tf.map_fn(
            crop_one, (images, boxes),
            fn_output_signature=(tf.TensorSpec([in_h, in_w, 3], tf.float32),
                                 tf.TensorSpec([4], tf.float32)),
        )

    def predict_images(self, images, boxes):
        """uint8 images [N, H, W, 3] (+ boxes [N, 4] or None) -> keypoints, scores."""
        import tensorflow as tf

        # The dtype is the signature's (TF Serving checks it); EnsureShape checks the rank at
        # run time (the signature's static rank alone does not), the rest is checked here.
        images = tf.ensure_shape(images, [None, None, None, None])
        shape = tf.shape(images)
        check = tf.debugging.assert_equal(
            tf.logical_and(tf.equal(shape[-1], 3), tf.reduce_all(shape[1:3] > 0)), True,
            message="images must be uint8 [N, H, W, 3] (RGB) with H, W > 0")
        with tf.control_dependencies([check]):
            images = tf.identity(images)
        crops, crop_boxes = self._crop_all(images, boxes, decode=False)
        return self.run_crops(crops, crop_boxes)

    def predict_encoded(self, image_bytes, boxes):
        """Encoded images string [N] (+ boxes [N, 4] or None) -> keypoints, scores."""
        import tensorflow as tf

        image_bytes = tf.ensure_shape(image_bytes, [None])  # the rank, at run time
        crops, crop_boxes = self._crop_all(image_bytes, boxes, decode=True)
        return self.run_crops(crops, crop_boxes)


def metadata(model, keypoint_set: KeypointSet | None, margin: float, flip_test: bool,
             source: str | None = None) -> dict:
    """What clients need besides the signatures (written to ``assets.extra/keras_pose.json``)."""
    info = {
        "format": "keras_pose.saved_model/1",
        "model": model.name,
        "num_keypoints": int(model.num_keypoints),
        "input_size": [int(v) for v in model.input_size],
        "output_kind": model.output_spec.kind,
        # Heatmap models: input pixels per heatmap cell. With the serving graph's quarter-pixel
        # refinement a keypoint stays inside its argmax cell, so evaluators recover the cell
        # (the poster's accuracy) from the image-pixel keypoints.
        "heatmap_stride": model.output_spec.stride,
        "margin": float(margin),
        "flip_test": bool(flip_test),
        "signatures": list(SIGNATURES),
        "source": source,
    }
    if keypoint_set is not None:
        info.update(keypoint_set=keypoint_set.name, keypoint_names=list(keypoint_set.names),
                    skeleton=[list(pair) for pair in keypoint_set.skeleton])
    return info


def save_saved_model(model, path: str | os.PathLike, *, margin: float = DEFAULT_MARGIN,
                     keypoint_set: KeypointSet | str | None = None, flip_test: bool = False,
                     source: str | None = None) -> pathlib.Path:
    """Write the serving SavedModel of ``model`` to ``path`` (not atomic; see
    :func:`export_saved_model` for TF Serving's versioned layout).

    Returns:
        ``path``.
    """
    import keras
    import tensorflow as tf

    if isinstance(keypoint_set, str):
        keypoint_set = get_keypoint_set(keypoint_set)
    keypoint_set = keypoint_set or guess_keypoint_set(model.num_keypoints)
    serving = ServingFunctions(model, margin=margin, keypoint_set=keypoint_set,
                               flip_test=flip_test)
    # No archive.track(model): it walks every layer looking for lookup tables (none here) and
    # took most of the export time; the variables the signatures use are saved regardless.
    archive = keras.export.ExportArchive()
    signatures = serving.input_signatures()
    for name, function in serving.functions().items():
        archive.add_endpoint(name, tf.function(function, autograph=False),
                             input_signature=signatures[name])
    path = pathlib.Path(path)
    archive.write_out(str(path), verbose=False)
    extra = path / "assets.extra"
    extra.mkdir(exist_ok=True)
    (extra / METADATA_FILE).write_text(
        json.dumps(metadata(model, keypoint_set, margin, flip_test, source), indent=2) + "\n")
    match_umask(path)  # TensorFlow makes its folders 0o755 whatever the umask
    return path


# -- versions and models.config --------------------------------------------------------------


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
                       source: str | None = None) -> pathlib.Path:
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

    Returns:
        The version directory.
    """
    _validate_name(name)
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
                             flip_test=flip_test, source=source)
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
    import tensorflow as tf

    return isinstance(error, (OSError, tf.errors.OpError))


def _errno_of(error: BaseException) -> int:
    import tensorflow as tf

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
        import fcntl
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
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

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
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

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


# -- in-process prediction -------------------------------------------------------------------


def _check_images(images) -> np.ndarray:
    array = np.asarray(images)
    if array.dtype != np.uint8:
        raise ValueError(
            f"images must be uint8 [N, H, W, 3] (RGB, 0-255), received dtype {array.dtype} "
            f"shape {list(array.shape)}"
        )
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3 or 0 in array.shape[1:3]:
        raise ValueError(
            f"images must be uint8 [N, H, W, 3] or [H, W, 3] (RGB), received shape "
            f"{list(array.shape)}"
        )
    if len(array) == 0:
        raise ValueError("the batch is empty: pass at least one image")
    return array


class Predictor:
    """The serving graph in-process: a loaded SavedModel, or a Keras model's same functions.

    Use :func:`load_predictor`. ``predict`` and ``predict_encoded`` check dtypes and shapes in
    Python and raise ``ValueError`` naming what is expected.

    Attributes:
        metadata: the export's ``keras_pose.json`` (keypoint set, names, skeleton, input size).
        keypoint_set: the ``KeypointSet``, when known.
    """

    def __init__(self, functions: Mapping[str, Any], info: Mapping[str, Any], owner=None):
        self._functions = dict(functions)
        self._owner = owner  # keeps a loaded SavedModel alive
        self.metadata = dict(info)
        name = self.metadata.get("keypoint_set")
        self.keypoint_set = KEYPOINT_SETS.get(name) if name else None

    def _call(self, signature: str, **inputs) -> dict[str, np.ndarray]:
        outputs = self._functions[signature](**inputs)
        return {key: np.asarray(outputs[key]) for key in OUTPUTS}

    def predict(self, images, boxes=None) -> dict[str, np.ndarray]:
        """Keypoints of the person in each image (or in each box).

        Args:
            images: uint8 [N, H, W, 3] or [H, W, 3] RGB, or a list of such images of
                different sizes.
            boxes: float32 [N, 4] person boxes ``x, y, w, h`` in pixels, or ``None`` for the
                whole image.

        Returns:
            ``keypoints`` float32 [N, K, 2] in image pixels and ``scores`` float32 [N, K].
        """
        import tensorflow as tf

        if isinstance(images, (list, tuple)):
            arrays = [_check_images(image) for image in images]
            if len({a.shape[1:] for a in arrays}) == 1:  # one size: one batch
                return self.predict(np.concatenate(arrays), boxes)
            if boxes is not None:
                boxes = check_boxes(boxes, sum(len(a) for a in arrays))
            results, start = [], 0
            for array in arrays:
                part = None if boxes is None else boxes[start:start + len(array)]
                results.append(self.predict(array, part))
                start += len(array)
            return {key: np.concatenate([r[key] for r in results]) for key in OUTPUTS}
        array = _check_images(images)
        if boxes is None:
            return self._call(SIGNATURE_DEFAULT, images=tf.constant(array))
        boxes = check_boxes(boxes, len(array))
        return self._call(SIGNATURE_BOXES, images=tf.constant(array), boxes=tf.constant(boxes))

    def predict_encoded(self, image_bytes: Sequence[bytes], boxes=None) -> dict[str, np.ndarray]:
        """Like :meth:`predict` for encoded JPEG/PNG/BMP/GIF files (the bytes signatures)."""
        import tensorflow as tf

        if isinstance(image_bytes, (bytes, bytearray)):
            image_bytes = [bytes(image_bytes)]
        if not all(isinstance(b, (bytes, bytearray)) for b in image_bytes) or not image_bytes:
            raise ValueError("image_bytes must be a non-empty list of encoded image bytes")
        data = tf.constant([bytes(b) for b in image_bytes], dtype=tf.string)
        if boxes is None:
            return self._call(SIGNATURE_BYTES, image_bytes=data)
        boxes = check_boxes(boxes, len(image_bytes))
        return self._call(SIGNATURE_BYTES_BOXES, image_bytes=data, boxes=tf.constant(boxes))


def resolve_saved_model(path: str | os.PathLike) -> pathlib.Path | None:
    """A SavedModel directory for ``path`` (itself, or the newest version of a model base
    directory), or ``None`` when ``path`` is not a SavedModel."""
    path = pathlib.Path(path)
    if (path / "saved_model.pb").exists():
        return path
    versions = list_versions(path)
    if versions:
        return path / str(versions[-1])
    return None


def load_predictor(path: str | os.PathLike, *, flip_test: bool = False) -> Predictor:
    """A :class:`Predictor` for a SavedModel (version dir or model base dir), a run directory or a
    ``.keras`` file (the latter two run the same serving functions without saving).

    Args:
        path: what to load.
        flip_test: for Keras models, add the flip test (a SavedModel has it baked in or not).
    """
    import tensorflow as tf

    saved = resolve_saved_model(path)
    if saved is not None:
        loaded = tf.saved_model.load(str(saved))
        missing = [s for s in SIGNATURES if s not in loaded.signatures]
        if missing:
            raise ExportError(f"{saved}: not a keras_pose export, missing signatures {missing}")
        info_file = saved / "assets.extra" / METADATA_FILE
        info = json.loads(info_file.read_text()) if info_file.exists() else {}
        info["path"] = str(saved)
        return Predictor(loaded.signatures, info, owner=loaded)
    pathlib_path = pathlib.Path(path)
    if not pathlib_path.exists():
        raise ExportError(f"model not found: {pathlib_path}")
    loaded_model = load_pose_model(pathlib_path)
    serving = ServingFunctions(loaded_model.model, margin=loaded_model.margin,
                               keypoint_set=loaded_model.keypoint_set, flip_test=flip_test)
    signatures = serving.input_signatures()
    functions = {
        name: tf.function(function, input_signature=signatures[name], autograph=False)
        for name, function in serving.functions().items()
    }
    info = metadata(loaded_model.model, loaded_model.keypoint_set, loaded_model.margin,
                    flip_test, str(loaded_model.path))
    info["path"] = str(loaded_model.path)
    return Predictor(functions, info, owner=loaded_model.model)
