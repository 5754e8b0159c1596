"""The serving graph: crop from a person box, the network, decoding, the map back to image
pixels, as four signature functions, and the SavedModel that holds them."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import keras
import tensorflow as tf

from keras_pose import codecs
from keras_pose.export.loading import (
    DEFAULT_MARGIN,
    METADATA_FILE,
    ExportError,
    guess_keypoint_set,
)
from keras_pose.io import match_umask
from keras_pose.keypoints import KeypointSet, get_keypoint_set
from keras_pose.models.fold import cast_network, fold_batch_norms
from keras_pose.precision import FLOAT32, check_precision
from keras_pose.serving import (
    MAX_BOX_VALUE,
    SIGNATURE_BOXES,
    SIGNATURE_BYTES,
    SIGNATURE_BYTES_BOXES,
    SIGNATURE_DEFAULT,
    SIGNATURES,
)


def square_crop_boxes(boxes, margin: float):
    """Person boxes ``x, y, w, h`` -> square crops ``x, y, side, side`` around their centres.

    ``side = margin * max(w, h)``, the crop the converter stores for a person.
    """
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
        precision: ``float32``, or ``bfloat16``: the network computes in bfloat16 (weights
            and activations; refused without bfloat16 hardware, ``keras_pose.precision``);
            inputs, cropping, decoding and outputs stay float32.

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
                 refine: str = "quarter", precision: str = FLOAT32):
        check_precision(precision)
        self._configure(model, margin=margin, keypoint_set=keypoint_set, flip_test=flip_test,
                        refine=refine)
        self.precision = precision
        # The graph runs the network with its batch norms folded into the convs: same outputs
        # to float rounding, about 10% less latency (keras_pose/models/fold.py). It is a
        # snapshot of the weights: build a new ServingFunctions after further training.
        self.folded_model = fold_batch_norms(model)
        if precision != FLOAT32:
            # A copy with weights stored in bfloat16: no per-call weight casts (measured faster
            # than a mixed_bfloat16 copy, see cast_network). Its first layer casts the crops.
            self.folded_model = cast_network(self.folded_model, precision)

    def _configure(self, model, *, margin: float, keypoint_set: KeypointSet | None,
                   flip_test: bool, refine: str) -> None:
        """Check the options and set what the graph pieces read; ``model`` needs only
        ``input_size``, ``num_keypoints`` and ``output_spec`` (subclasses that run the network
        elsewhere pass a description of it)."""
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
        # One traced network (+ decoding) that every signature calls: the model is traced and
        # stored once, not once per signature.
        self._network = tf.function(
            self._network_and_decode,
            input_signature=[tf.TensorSpec([None, *self.input_size, 3], tf.float32)],
            autograph=False,  # no tensor-dependent Python control flow; autograph is slow
        )

    def input_signatures(self) -> dict[str, list]:
        """``{signature name: [tf.TensorSpec, ...]}`` in argument order."""
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

    def traced_functions(self) -> dict[str, Any]:
        """:meth:`functions` as ``tf.function`` s with their input signatures, to call
        in-process as a loaded SavedModel's signatures are called."""
        signatures = self.input_signatures()
        return {name: tf.function(function, input_signature=signatures[name], autograph=False)
                for name, function in self.functions().items()}

    # The graph pieces.

    def _final(self, images):
        outputs = self.folded_model(images, training=False)
        if isinstance(outputs, (list, tuple)):
            outputs = outputs[-1]
        # Decoding (argmax, sub-pixel refinement, coordinates) stays float32: bfloat16 would
        # round a coordinate near 256 px to a multiple of 2 px.
        return tf.cast(outputs, tf.float32)

    def _check_boxes(self, boxes, count):

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

        codec = codecs.codec_for(self.model.output_spec, self.input_size, refine=self.refine)
        permutation = self.keypoint_set.flip_permutation if self.flip_test else None
        predicted = codecs.predict_keypoints(codec, self._final, crops, permutation)
        return predicted["keypoints"], predicted["scores"]

    def run_crops(self, crops, crop_boxes):
        """Network input crops [N, h, w, 3] float32 -> image-pixel keypoints and scores."""
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
        image_bytes = tf.ensure_shape(image_bytes, [None])  # the rank, at run time
        crops, crop_boxes = self._crop_all(image_bytes, boxes, decode=True)
        return self.run_crops(crops, crop_boxes)


def metadata(model, keypoint_set: KeypointSet | None, margin: float, flip_test: bool,
             source: str | None = None, precision: str = FLOAT32) -> dict:
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
        "precision": precision,  # the network's arithmetic; inputs and outputs are float32
        "signatures": list(SIGNATURES),
        "source": source,
    }
    if keypoint_set is not None:
        info.update(keypoint_set=keypoint_set.name, keypoint_names=list(keypoint_set.names),
                    skeleton=[list(pair) for pair in keypoint_set.skeleton])
    return info


def save_saved_model(model, path: str | os.PathLike, *, margin: float = DEFAULT_MARGIN,
                     keypoint_set: KeypointSet | str | None = None, flip_test: bool = False,
                     source: str | None = None, precision: str = FLOAT32) -> pathlib.Path:
    """Write the serving SavedModel of ``model`` to ``path`` (not atomic; see
    :func:`export_saved_model` for TF Serving's versioned layout).

    ``precision``: the network's arithmetic, ``float32`` or ``bfloat16`` (see
    :class:`ServingFunctions`); the signatures are the same either way.

    Returns:
        ``path``.
    """
    if isinstance(keypoint_set, str):
        keypoint_set = get_keypoint_set(keypoint_set)
    keypoint_set = keypoint_set or guess_keypoint_set(model.num_keypoints)
    serving = ServingFunctions(model, margin=margin, keypoint_set=keypoint_set,
                               flip_test=flip_test, precision=precision)
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
        json.dumps(metadata(model, keypoint_set, margin, flip_test, source, precision),
                   indent=2) + "\n")
    match_umask(path)  # TensorFlow makes its folders 0o755 whatever the umask
    return path
