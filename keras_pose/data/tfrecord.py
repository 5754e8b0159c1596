"""The TFRecord schema: one ``tf.train.Example`` per person.

Fields (K = number of keypoints; coordinates follow ``keras_pose.keypoints``' convention):

==========================  =======  =====================================================
key                         type     meaning
==========================  =======  =====================================================
``image/encoded``           bytes    JPEG of the stored square: the person crop with
                                     ``context_pad`` pixels of surroundings on each side,
                                     ``crop_size + 2 context_pad`` pixels a side
``image/crop_size``         int64    side of the person crop in pixels
``image/context_pad``       int64    context pixels on each side of the crop (0 = none)
``image/id``                int64    COCO image id
``image/filename``          bytes    source image file name
``image/height``            int64    source image height
``image/width``             int64    source image width
``crop/box``                float[4] crop square in source-image pixels: x, y, side, side
``keypoints/crop``          float[2K] x, y of each keypoint in crop pixels
``keypoints/image``         float[2K] x, y of each keypoint in source-image pixels
``keypoints/visibility``    int64[K] COCO visibility (0 unlabeled, 1 occluded, 2 visible)
``person/bbox``             float[4] COCO bbox x, y, w, h in source-image pixels
``person/area``             float    COCO segmentation area
``person/annotation_id``    int64    COCO annotation id
``person/head_size``        float    PCKh size in source-image pixels (0.6 x the head box
                                     diagonal, or the head pair's length); 0 = unknown
==========================  =======  =====================================================

A crop point ``c`` maps to the source image as ``box_xy + c * box_side / crop_size``; it is
pixel ``c + context_pad`` of the stored image. Unlabeled keypoints (v = 0) are stored as
``(0, 0)`` in both coordinate fields.

``person/head_size`` and ``image/context_pad`` are optional: records written before they existed
parse with 0 (unknown head size; no context, the stored image is the crop).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf


@dataclasses.dataclass
class PersonRecord:
    """One person, ready to serialize. Arrays are numpy; ``keypoints_*`` have shape [K, 2]."""

    image_jpeg: bytes
    crop_size: int
    image_id: int
    filename: str
    image_height: int
    image_width: int
    crop_box: np.ndarray  # [4] x, y, side, side
    keypoints_crop: np.ndarray  # [K, 2]
    keypoints_image: np.ndarray  # [K, 2]
    visibility: np.ndarray  # [K] int
    bbox: np.ndarray  # [4] x, y, w, h
    area: float
    annotation_id: int
    head_size: float = 0.0  # PCKh size in image pixels; 0 = unknown
    context_pad: int = 0  # context pixels stored on each side of the crop


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(values, np.float32)
                                                           .ravel().tolist()))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=np.asarray(values, np.int64)
                                                           .ravel().tolist()))


def serialize_person(record: PersonRecord) -> bytes:
    """Encode a :class:`PersonRecord` as a serialized ``tf.train.Example``."""
    feature = {
        "image/encoded": _bytes([record.image_jpeg]),
        "image/crop_size": _ints([record.crop_size]),
        "image/context_pad": _ints([record.context_pad]),
        "image/id": _ints([record.image_id]),
        "image/filename": _bytes([record.filename.encode("utf-8")]),
        "image/height": _ints([record.image_height]),
        "image/width": _ints([record.image_width]),
        "crop/box": _floats(record.crop_box),
        "keypoints/crop": _floats(record.keypoints_crop),
        "keypoints/image": _floats(record.keypoints_image),
        "keypoints/visibility": _ints(record.visibility),
        "person/bbox": _floats(record.bbox),
        "person/area": _floats([record.area]),
        "person/annotation_id": _ints([record.annotation_id]),
        "person/head_size": _floats([record.head_size]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def feature_spec(num_keypoints: int) -> dict[str, tf.io.FixedLenFeature]:
    """The parsing spec for records with ``num_keypoints`` keypoints."""
    k = num_keypoints
    return {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/crop_size": tf.io.FixedLenFeature([], tf.int64),
        "image/id": tf.io.FixedLenFeature([], tf.int64),
        "image/filename": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "crop/box": tf.io.FixedLenFeature([4], tf.float32),
        "keypoints/crop": tf.io.FixedLenFeature([2 * k], tf.float32),
        "keypoints/image": tf.io.FixedLenFeature([2 * k], tf.float32),
        "keypoints/visibility": tf.io.FixedLenFeature([k], tf.int64),
        "person/bbox": tf.io.FixedLenFeature([4], tf.float32),
        "person/area": tf.io.FixedLenFeature([], tf.float32),
        "person/annotation_id": tf.io.FixedLenFeature([], tf.int64),
        # Optional with a default, so records from before the field still parse.
        "person/head_size": tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
        "image/context_pad": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    }


def parse_batch(serialized: tf.Tensor, num_keypoints: int) -> dict[str, tf.Tensor]:
    """Parse a batch of serialized Examples into the reader's element dictionary.

    Returns a dict with (B = batch, K = keypoints): ``image_jpeg`` string [B],
    ``keypoints`` float32 [B, K, 2] (crop pixels), ``visibility`` int32 [B, K],
    ``image_keypoints`` float32 [B, K, 2] (source-image pixels), ``crop_box`` float32 [B, 4],
    ``bbox`` float32 [B, 4], ``area`` float32 [B], ``image_id`` int64 [B],
    ``annotation_id`` int64 [B], ``image_size`` int32 [B, 2] (height, width),
    ``filename`` string [B], ``head_size`` float32 [B] (PCKh size in source-image pixels,
    0 = unknown), ``context_pad`` int32 [B] (the crop is the stored image's window at
    ``(context_pad, context_pad)``). The JPEG is decoded separately (see ``dataset.py``).
    """
    k = num_keypoints
    parsed = tf.io.parse_example(serialized, feature_spec(k))
    return {
        "image_jpeg": parsed["image/encoded"],
        "keypoints": tf.reshape(parsed["keypoints/crop"], [-1, k, 2]),
        "visibility": tf.cast(parsed["keypoints/visibility"], tf.int32),
        "image_keypoints": tf.reshape(parsed["keypoints/image"], [-1, k, 2]),
        "crop_box": parsed["crop/box"],
        "bbox": parsed["person/bbox"],
        "area": parsed["person/area"],
        "image_id": parsed["image/id"],
        "annotation_id": parsed["person/annotation_id"],
        "image_size": tf.cast(
            tf.stack([parsed["image/height"], parsed["image/width"]], axis=-1), tf.int32
        ),
        "filename": parsed["image/filename"],
        "head_size": parsed["person/head_size"],
        "context_pad": tf.cast(parsed["image/context_pad"], tf.int32),
    }
