"""tf.data reader of person TFRecord shards, and the manifest written beside them.

The CPU does I/O, parsing and JPEG decoding only; augmentation and targets run in the
(compiled) training step. Pipeline::

    shard files (shuffled when training) -> interleave TFRecordDataset over files
    -> shuffle serialized records (training; bounded buffer) -> repeat -> batch
    -> parse_example + decode_jpeg over the batch (num_parallel_calls pinned, default 2)
    -> prefetch (bounded, default 2 batches)

Reading starts from a list of files, so ``tf.distribute`` auto-shards it by file.
"""

from __future__ import annotations

import glob as glob_lib
import os
import re
from collections.abc import Sequence

import tensorflow as tf

from keras_pose.data import tfrecord
from keras_pose.data.manifest import Manifest, manifest_name

_SHARD_RE = re.compile(r"(?P<split>.+)-\d{5}-of-\d{5}\.tfrecord")


def list_shards(file_pattern: str | Sequence[str]) -> list[str]:
    """Sorted files matching a glob (or several globs).

    Raises:
        FileNotFoundError: nothing matches; the message names the pattern.
    """
    patterns = [file_pattern] if isinstance(file_pattern, (str, os.PathLike)) else file_pattern
    files: list[str] = []
    for pattern in patterns:
        pattern = os.fspath(pattern)
        if os.path.isdir(pattern):
            raise FileNotFoundError(
                f"TFRecord pattern {pattern!r} is a directory; pass a glob of shard files "
                f"such as {os.path.join(pattern, 'train-*.tfrecord')!r}"
            )
        files.extend(tf.io.gfile.glob(pattern))
    files = sorted(set(files))
    if not files:
        raise FileNotFoundError(f"No TFRecord files match {file_pattern!r}")
    return files


def _peek_sizes(files: list[str]) -> tuple[int, int]:
    """``(crop_size, context_pad)`` of the first record."""
    spec = {"image/crop_size": tf.io.FixedLenFeature([], tf.int64),
            "image/context_pad": tf.io.FixedLenFeature([], tf.int64, default_value=0)}
    for path in files:
        for serialized in tf.data.TFRecordDataset(path).take(1):
            parsed = tf.io.parse_single_example(serialized, spec)
            return int(parsed["image/crop_size"]), int(parsed["image/context_pad"])
    raise ValueError(f"The TFRecord files {files[:3]}{'...' if len(files) > 3 else ''} hold no "
                     "records")


def make_dataset(
    file_pattern: str | Sequence[str],
    *,
    batch_size: int,
    num_keypoints: int,
    training: bool,
    shuffle_buffer: int = 1024,
    seed: int | None = None,
    deterministic: bool = False,
    repeat: int | None = None,
    num_parallel_calls: int = 2,
    crop_size: int | None = None,
    drop_remainder: bool | None = None,
    prefetch: int = 2,
    cycle_length: int = 4,
    context: bool = False,
) -> tf.data.Dataset:
    """A batched dataset of decoded person crops and their keypoints and metadata.

    Memory is bounded: the shuffle buffer holds ``shuffle_buffer`` serialized records (about
    30-40 KiB each at 256 px, about 70 KiB with context 2.1) and prefetch holds ``prefetch``
    decoded batches.

    Args:
        file_pattern: glob (or list of globs) of TFRecord shards.
        batch_size: records per batch.
        num_keypoints: K of the records' keypoint set (see ``read_manifest``).
        training: shuffle files and records and repeat (unless ``repeat`` says otherwise).
        shuffle_buffer: size of the record shuffle buffer (training only).
        seed: seed of the file and record shuffles.
        deterministic: reproducible element order: keeps order through parallel maps and
            seeds the shuffles with 0 when ``seed`` is None.
        repeat: passes over the data; None = forever when training, once otherwise.
        num_parallel_calls: parallel parse+decode calls (pinned: AUTOTUNE locks at one
            decoding thread in some runs on small machines).
        crop_size: side of the person crops; None = read from the first record.
        drop_remainder: drop a last partial batch (static batch size); None = ``training``.
        prefetch: batches prepared ahead.
        cycle_length: shard files read concurrently.
        context: ``image`` is the whole stored image, the crop with ``context_pad`` pixels of
            surroundings on each side (side ``S = crop_size + 2 context_pad``, from the first
            record), for the training step's augmentation. False: ``image`` is the crop
            alone (only its window of the JPEG is decoded), whatever context the records hold.

    Returns:
        ``tf.data.Dataset`` of dicts: ``image`` uint8 [B, S, S, 3] plus every key of
        ``tfrecord.parse_batch`` except ``image_jpeg`` (``keypoints`` [B, K, 2] crop pixels,
        ``visibility`` int32 [B, K], ``image_keypoints``, ``crop_box``, ``bbox``, ``area``,
        ``image_id``, ``annotation_id``, ``image_size``, ``filename``, ``head_size``,
        ``context_pad``).

    Raises:
        FileNotFoundError: the pattern matches no file.
    """
    for name, value, low in (("batch_size", batch_size, 1), ("num_keypoints", num_keypoints, 1),
                             ("shuffle_buffer", shuffle_buffer, 1),
                             ("num_parallel_calls", num_parallel_calls, 1),
                             ("prefetch", prefetch, 0), ("cycle_length", cycle_length, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, received {name}={value!r}")
    if repeat is not None and (not isinstance(repeat, int) or repeat < 1):
        raise ValueError(f"repeat must be None or an integer >= 1, received repeat={repeat!r}")
    files = list_shards(file_pattern)
    recorded_crop, pad = _peek_sizes(files)
    crop_size = crop_size or recorded_crop
    if drop_remainder is None:
        drop_remainder = training
    if deterministic and seed is None:
        seed = 0

    dataset = tf.data.Dataset.from_tensor_slices(files)
    if training and len(files) > 1:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    cycle = min(cycle_length, len(files))
    dataset = dataset.interleave(
        tf.data.TFRecordDataset, cycle_length=cycle, block_length=1,
        num_parallel_calls=cycle if cycle > 1 else None,
    )
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat is None and training:
        dataset = dataset.repeat()
    elif repeat is not None and repeat > 1:
        dataset = dataset.repeat(repeat)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)

    side = crop_size + 2 * pad if context else crop_size
    image_spec = tf.TensorSpec([side, side, 3], tf.uint8)

    def decode(jpeg_and_pad):
        jpeg, record_pad = jpeg_and_pad
        if context:
            image = tf.io.decode_jpeg(jpeg, channels=3)
        else:
            window = tf.stack([record_pad, record_pad, crop_size, crop_size])
            image = tf.io.decode_and_crop_jpeg(jpeg, window, channels=3)
        return tf.ensure_shape(image, image_spec.shape)

    def parse_and_decode(serialized):
        features = tfrecord.parse_batch(serialized, num_keypoints)
        jpegs = features.pop("image_jpeg")
        images = tf.map_fn(decode, (jpegs, features["context_pad"]),
                           fn_output_signature=image_spec)
        return {"image": images, **features}

    dataset = dataset.map(parse_and_decode, num_parallel_calls=num_parallel_calls)
    if prefetch:
        dataset = dataset.prefetch(prefetch)
    options = tf.data.Options()
    # Order through the parallel interleave and map is kept only when asked for (it costs).
    options.deterministic = bool(deterministic)
    return dataset.with_options(options)


def read_manifest(glob_or_dir: str | os.PathLike) -> Manifest:
    """Read the manifest of a split from its shard glob, its directory or its path.

    Args:
        glob_or_dir: ``OUT/train-*.tfrecord`` (the split is taken from the matching shard
            names), ``OUT`` (must hold exactly one ``*.manifest.json``), or the manifest path.

    Returns:
        The :class:`Manifest`, its ``path`` the file read.

    Raises:
        FileNotFoundError: no manifest found; the message says where it looked.
        ValueError: several manifests in a directory, or shards of several splits;
            ``ManifestError`` (a ``ValueError``) for a file that is not a readable manifest,
            naming the file and the field.
    """
    target = os.fspath(glob_or_dir)
    if target.endswith(".manifest.json") and os.path.isfile(target):
        path = target
    elif os.path.isdir(target):
        found = sorted(glob_lib.glob(os.path.join(target, "*.manifest.json")))
        if not found:
            raise FileNotFoundError(f"No *.manifest.json in directory {target!r}")
        if len(found) > 1:
            raise ValueError(
                f"Directory {target!r} holds several manifests "
                f"{[os.path.basename(f) for f in found]}; pass a shard glob or a manifest path"
            )
        path = found[0]
    else:
        files = list_shards(target)
        splits = set()
        for f in files:
            match = _SHARD_RE.fullmatch(os.path.basename(f))
            if match:
                splits.add((os.path.dirname(f), match.group("split")))
        if not splits:
            raise FileNotFoundError(
                f"Files matching {target!r} are not named SPLIT-00000-of-0000N.tfrecord, so "
                "their manifest cannot be found; pass the manifest path"
            )
        if len(splits) > 1:
            raise ValueError(f"Pattern {target!r} matches shards of several splits: "
                             f"{sorted(s for _, s in splits)}")
        directory, split = splits.pop()
        path = os.path.join(directory, manifest_name(split))
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Manifest {path!r} for shards {target!r} not found (the converter writes it "
                "last; an interrupted conversion has none)"
            )
    return Manifest.from_json(path)
