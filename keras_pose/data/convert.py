"""Person-keypoint datasets + images -> TFRecord shards of person crops, and a manifest.

One converter core, :func:`convert_source`, takes a dataset read into memory
(``keras_pose.data.source.PersonSource``); :func:`convert_coco`, :func:`convert_lsp` and
:func:`convert_mpii` are thin front ends that read COCO JSON, LSP/LSPET ``joints.mat`` or
MPII JSON into one.

Output of a conversion with ``output=OUT, split=NAME, shards=N``:

* ``OUT/NAME-00000-of-0000N.tfrecord`` ... : one ``tf.train.Example`` per person (schema in
  ``keras_pose.data.tfrecord``), record ``r`` in shard ``r % N``, images in a seeded shuffled
  order so every shard mixes the whole set.
* ``OUT/NAME.manifest.json``: record and skip counts (with reasons), keypoint set, crop size,
  margin, context (stored side / crop side, the pad in pixels, the stored side), source
  format, annotation file and its SHA-256, images directory, image range, what ``head_size``
  holds, the ground truth and its coordinate convention, shard names.
* ``OUT/NAME.annotations.json`` (all formats but COCO, whose source file already is it): the
  converted persons as COCO keypoint ground truth in COCO's pixel-index convention (as every
  COCO-format file of the project: ``keras_pose.keypoints``), with each image's decoded width
  and height, for evaluation and drawing tools.

Nothing is half-written: shards are written under hidden temporary names and renamed with
``os.replace`` only once all of them are complete; the manifest is written last, so a split is
complete exactly when its manifest exists. An error or ``KeyboardInterrupt`` removes the
temporary files; a full disk names the file and leaves the previous split whole. After a
SIGKILL the same command just runs again: it removes the dead run's temporary files, and shards
without a manifest (killed while renaming) as an incomplete split.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import errno
import inspect
import json
import multiprocessing
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np

from keras_pose import io as io_lib
from keras_pose.data import coco as coco_lib
from keras_pose.data import lsp as lsp_lib
from keras_pose.data import mpii as mpii_lib
from keras_pose.data import source as source_lib
from keras_pose.data.manifest import Manifest, manifest_name
from keras_pose.data.source import AnnotationFormatError, PersonSource

# Records per shard when ``shards`` is not given: ~50-100 MB shards at 256 px, enough shards for
# tf.distribute to split a COCO-sized set by file.
AUTO_RECORDS_PER_SHARD = 2048
MAX_LOGGED_MESSAGES = 200


class ConversionError(ValueError):
    """A conversion that cannot proceed; the message names the file, image or annotation."""


def shard_name(split: str, index: int, num_shards: int) -> str:
    """``NAME-00000-of-00008.tfrecord``."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def ground_truth_name(split: str) -> str:
    """``NAME.annotations.json``: the split's persons as COCO ground truth."""
    return f"{split}.annotations.json"


def _temp_name(final_name: str) -> str:
    # Hidden and with a suffix, so no shard glob (NAME-*.tfrecord) ever matches it.
    return f".{final_name}.tmp-{os.getpid()}"


def _existing_split_files(output: str, split: str) -> list[str]:
    pattern = re.compile(re.escape(split) + r"-\d{5}-of-\d{5}\.tfrecord")
    names = [n for n in os.listdir(output) if pattern.fullmatch(n)]
    for name in (manifest_name(split), ground_truth_name(split)):
        if os.path.exists(os.path.join(output, name)):
            names.append(name)
    return sorted(names)


def _remove_stale_temp_files(output: str, split: str) -> None:
    """Delete temporary files of this split left by a killed run (its process is gone)."""
    prefix_shard = "." + re.escape(split) + r"-\d{5}-of-\d{5}\.tfrecord"
    prefix_manifest = r"\." + re.escape(manifest_name(split))
    prefix_truth = r"\." + re.escape(ground_truth_name(split))
    pattern = re.compile(rf"(?:\{prefix_shard}|{prefix_manifest}|{prefix_truth})\.tmp-(\d+)")
    for name in os.listdir(output):
        match = pattern.fullmatch(name)
        if not match:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and _pid_alive(pid):
            continue
        try:
            os.remove(os.path.join(output, name))
        except OSError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _validate_args(crop_size, margin, min_keypoints, shards, workers, jpeg_quality,
                   context=1.0):
    if not isinstance(crop_size, int) or crop_size < 8:
        raise ValueError(f"crop_size must be an integer >= 8, received crop_size={crop_size!r}")
    if not (isinstance(margin, (int, float)) and margin >= 1.0):
        raise ValueError(f"margin must be a number >= 1.0, received margin={margin!r}")
    if isinstance(context, bool) or not (isinstance(context, (int, float))
                                         and 1.0 <= context <= 8.0):
        raise ValueError(f"context must be a number in [1, 8], received context={context!r}")
    if not isinstance(min_keypoints, int) or min_keypoints < 0:
        raise ValueError(
            f"min_keypoints must be an integer >= 0, received min_keypoints={min_keypoints!r}"
        )
    if shards is not None and (not isinstance(shards, int) or shards < 1):
        raise ValueError(f"shards must be an integer >= 1 or None, received shards={shards!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 0):
        raise ValueError(
            f"workers must be an integer >= 0 or None, received workers={workers!r}"
        )
    if not isinstance(jpeg_quality, int) or not 1 <= jpeg_quality <= 100:
        raise ValueError(
            f"jpeg_quality must be an integer in [1, 100], received jpeg_quality={jpeg_quality!r}"
        )


def _validate_split(split) -> None:
    if not isinstance(split, str) or not re.fullmatch(r"[A-Za-z0-9_.]+", split) or (
        split.startswith(".")
    ):
        raise ValueError(
            f"split must be a name of letters, digits, '_' and '.', received split={split!r}"
        )


def _plan(
    source: PersonSource, crop_size: int, margin: float, min_keypoints: int,
    jpeg_quality: int, seed: int | None, report, pad: int = 0,
) -> list[dict]:
    """Check every annotation (no image needed) and group the survivors into image tasks."""
    images = source.images_by_id()
    num_keypoints = source.keypoint_set.num_keypoints
    allow_outside = source.boxes_may_leave_image
    per_image: dict = {}
    for ann in source.dataset["annotations"]:
        if ann["category_id"] != source.category_id:
            continue
        if ann.get("iscrowd", 0):
            report("iscrowd", "", 1)
            continue
        if ann["image_id"] not in images:
            report("unknown_image", f"annotation {ann['id']}: image id {ann['image_id']} is "
                   "not in the file's 'images' list", 1)
            continue
        try:
            checked = coco_lib.check_annotation(ann, num_keypoints, min_keypoints,
                                                allow_outside)
        except coco_lib.SkipAnnotation as e:
            report(e.reason, e.message, 1)
            continue
        checked["id"] = ann["id"]
        checked["head_size"] = float(ann.get("head_size", 0.0))
        per_image.setdefault(ann["image_id"], []).append(checked)
    image_ids = sorted(per_image, key=lambda i: (str(type(i)), i))
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(image_ids))
        image_ids = [image_ids[i] for i in order]
    return [
        coco_lib.image_task(images[i], per_image[i], source.images_dir, crop_size, margin,
                            jpeg_quality, allow_outside, pad)
        for i in image_ids
    ]


def _worker_init(parent: int) -> None:
    """Worker initializer: :func:`coco_lib.worker_init`, and exit when the converter dies.

    A SIGKILLed converter (the OOM killer, ``kill -9``) cannot stop its workers, and they
    would wait on their task queue forever (each holds both ends of its pipe, so no EOF comes):
    a watch thread ends the worker once it has another parent.
    """
    coco_lib.worker_init()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True,
                     name="keras-pose-parent-watch").start()


def _exit_with_parent(parent: int, interval: float = 0.5) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    os._exit(1)


def _results(tasks: list[dict], workers: int) -> Iterator[dict]:
    """Yield ``process_image`` results in task order, in-process or from worker processes."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield coco_lib.process_image(task)
        return
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # spawn: the parent has TensorFlow's threads running, which fork does not copy safely.
    # ProcessPoolExecutor (not multiprocessing.Pool): a worker that dies breaks the pool with
    # an error instead of being restarted forever.
    executor = ProcessPoolExecutor(
        min(workers, len(tasks)), mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init, initargs=(os.getpid(),),
    )
    # A bounded window of pending images keeps memory flat however far the workers run ahead.
    window = 4 * workers
    pending: collections.deque = collections.deque()
    try:
        for task in tasks:
            pending.append(executor.submit(coco_lib.process_image, task))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool as e:
        raise ConversionError(
            f"converter worker processes died ({e}). With workers > 1 the calling script is "
            "re-imported by each worker (multiprocessing 'spawn'): guard its entry point with "
            "`if __name__ == '__main__':` and do not run it from stdin, or pass workers=1"
        ) from None
    finally:
        for future in pending:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)


def _default_log(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _prepare_output(output: str, split: str, overwrite: bool, log=None) -> None:
    os.makedirs(output, exist_ok=True)
    existing = _existing_split_files(output, split)
    if existing and manifest_name(split) not in existing:
        # Shards without a manifest: a conversion killed while it renamed its files (the
        # manifest comes last; a split is complete exactly when it has one). Not a split to
        # keep: the same command converts it again without --overwrite.
        (log or _default_log)(
            f"removing an incomplete split {split!r} in {output} (no {manifest_name(split)}: "
            f"an interrupted conversion): {', '.join(existing[:4])}"
            f"{', ...' if len(existing) > 4 else ''}")
        for name in existing:
            os.remove(os.path.join(output, name))
        existing = []
    if existing and not overwrite:
        raise ConversionError(
            f"{output} already holds split {split!r} ({', '.join(existing[:4])}"
            f"{', ...' if len(existing) > 4 else ''}); pass overwrite=True (--overwrite) to "
            "replace it"
        )
    _remove_stale_temp_files(output, split)


def _reporter(strict: bool, skips: Counter, messages: list, log):
    """The callback that counts a skip, logs bad input and raises on it under ``strict``."""

    def report(reason: str, message: str, count: int) -> None:
        if reason in coco_lib.FILTER_REASONS:
            skips[reason] += count
            return
        if strict:
            raise ConversionError(f"{message} [{reason}] (strict mode)")
        skips[reason] += count
        if len(messages) < MAX_LOGGED_MESSAGES:
            messages.append(message)
        log(f"skipped: {message}")

    return report


def _write_records(tasks: list[dict], workers: int, temps: list[str], split: str,
                   progress: bool, report) -> list[dict]:
    """Convert the images and write their records round-robin to the temporary shards.

    Returns:
        One dict per record written, in order: ``annotation_id``, ``image_id``,
        ``image_height``, ``image_width`` (for the counts and the ground truth).
    """
    import tensorflow as tf
    from tqdm import tqdm

    from keras_pose.data import tfrecord

    written: list[dict] = []
    writers = []

    def write(index: int, data: bytes) -> None:
        try:
            writers[index].write(data)
        except tf.errors.OpError as error:
            raise _shard_error(error, temps[index]) from None

    try:
        try:
            writers = [tf.io.TFRecordWriter(t) for t in temps]
        except tf.errors.OpError as error:
            raise _shard_error(error, temps[len(writers)]) from None
        bar = tqdm(total=len(tasks), unit="img", desc=f"{split}", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        with bar:
            for result in _results(tasks, workers):
                for reason, message, count in result["skipped"]:
                    report(reason, message, count)
                for fields in result["records"]:
                    record = tfrecord.PersonRecord(**fields)
                    write(len(written) % len(writers), tfrecord.serialize_person(record))
                    written.append({key: fields[key] for key in (
                        "annotation_id", "image_id", "image_height", "image_width")})
                bar.update(1)
                bar.set_postfix(records=len(written), refresh=False)
        # Closing flushes the last buffered bytes: a full disk may show only here.
        for index in range(len(writers)):
            writer = writers[index]
            writers[index] = None
            try:
                writer.close()
            except tf.errors.OpError as error:
                raise _shard_error(error, temps[index]) from None
    finally:
        for writer in writers:
            try:
                if writer is not None:
                    writer.close()
            except Exception:  # noqa: BLE001 - closing after a failure; the cause propagates
                pass
    return written


def _shard_error(error, temp: str) -> OSError:
    """A TFRecordWriter's error (TensorFlow's, often without a message) as an ``OSError``
    naming the shard: ENOSPC for a full disk (``ResourceExhaustedError``)."""
    import tensorflow as tf

    final = os.path.join(os.path.dirname(temp),
                         os.path.basename(temp)[1:].rsplit(".tmp-", 1)[0])
    if isinstance(error, tf.errors.ResourceExhaustedError):
        code, what = errno.ENOSPC, "no space left on device"
    else:
        code, what = errno.EIO, f"{type(error).__name__}"
    detail = getattr(error, "message", "") or ""
    return OSError(code, f"writing shard {final} failed ({what}{': ' + detail if detail else ''});"
                   " no shard or manifest of the split was written or changed", temp)


def _ground_truth(source: PersonSource, written: list[dict], split: str) -> dict:
    """The converted persons as a COCO keypoint file (COCO's pixel indices, as the source's
    ``dataset`` holds them)."""
    annotations = {a["id"]: a for a in source.dataset["annotations"]}
    images = source.images_by_id()
    sizes = {w["image_id"]: (w["image_height"], w["image_width"]) for w in written}
    return {
        "info": {"description": f"{source.format} {split} split converted by keras-pose from "
                                f"{os.path.basename(source.path)}",
                 "coordinates": source_lib.INDEX_CONVENTION},
        "images": [{**images[i], "height": int(h), "width": int(w)}
                   for i, (h, w) in sorted(sizes.items())],
        "annotations": sorted((annotations[w["annotation_id"]] for w in written),
                              key=lambda a: a["id"]),
        "categories": source.dataset["categories"],
    }


def _head_size_entry(source: PersonSource) -> dict:
    keypoint_set = source.keypoint_set
    if source.head_size_source == "head_boxes":
        text = "0.6 x the diagonal of the annotated head box (the MPII PCKh size)"
    elif source.head_size_source == "keypoints" and keypoint_set.head is not None:
        a, b = (keypoint_set.names[i] for i in keypoint_set.head)
        text = (f"stand-in: distance {a} to {b} (no head boxes); 0 where either is "
                "unlabeled")
    else:
        text = "unknown: 0 in every record"
    return {"source": source.head_size_source, "description": text, "units": "image pixels"}


def _manifest(source: PersonSource, split: str, written: list[dict], counts: list[int],
              finals: list[str], skips: Counter, messages: list[str], options: dict
              ) -> Manifest:
    if source.ground_truth:
        ground_truth = {"path": ground_truth_name(split),
                        "coordinates": source_lib.INDEX_CONVENTION}
    else:
        ground_truth = {"path": os.path.abspath(source.path),
                        "coordinates": source_lib.INDEX_CONVENTION}
    return Manifest(
        split=split,
        num_records=len(written),
        num_images=len({w["image_id"] for w in written}),
        shards=tuple(os.path.basename(f) for f in finals),
        records_per_shard=tuple(counts),
        skipped={
            "count": int(sum(skips.values())),
            "reasons": {k: int(v) for k, v in sorted(skips.items())},
            "messages": messages,
        },
        keypoint_set=source.keypoint_set.name,
        num_keypoints=source.keypoint_set.num_keypoints,
        keypoint_names=tuple(source.keypoint_set.names),
        **options,
        source={
            "format": source.format,
            "annotations": os.path.abspath(source.path),
            "sha256": source.sha256,
            "images": os.path.abspath(source.images_dir),
            "image_range": None,
            **source.details,
        },
        head_size=_head_size_entry(source),
        ground_truth=ground_truth,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


def _publish(output: str, split: str, temps: list[str], finals: list[str],
             ground_truth: dict | None, manifest: Manifest) -> None:
    # The ground truth and the manifest are written to temporary files first, while the old
    # split is still whole: a disk that fills up there leaves the old split as it was.
    # Then old split files go (manifest first of all: a manifest names a complete split),
    # the new shards and ground truth appear (renames need no space), then the new manifest.
    pending = list(zip(temps, finals))
    truth_text = None if ground_truth is None else json.dumps(
        io_lib._json_ready(ground_truth), indent=2, allow_nan=False) + "\n"
    extra = [(ground_truth_name(split), truth_text), (manifest_name(split), manifest.to_json())]
    for name, text in extra:
        if text is None:
            continue
        final = os.path.join(output, name)
        temp = os.path.join(output, _temp_name(name))
        temps.append(temp)  # removed by the caller if anything fails
        _write_json_file(temp, final, text)
        pending.append((temp, final))
    for name in sorted(_existing_split_files(output, split), key=lambda n: "manifest" not in n):
        path = os.path.join(output, name)
        if path not in finals:
            os.remove(path)
    for temp, final in pending:
        os.replace(temp, final)


def _write_json_file(temp: str, final: str, text: str) -> None:
    """JSON ``text`` into ``temp`` (later renamed to ``final``), synced; an error names
    ``final``."""
    try:
        with open(temp, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
    except OSError as error:
        raise OSError(error.errno, f"writing {final} failed ({error.strerror or error}); the "
                      "split's previous files are unchanged", temp) from None


def convert_source(
    source: PersonSource,
    output: str | os.PathLike,
    split: str,
    shards: int | None = None,
    workers: int | None = None,
    strict: bool = False,
    crop_size: int = 256,
    margin: float = 1.25,
    min_keypoints: int = 1,
    jpeg_quality: int = 95,
    seed: int | None = 0,
    overwrite: bool = False,
    progress: bool = True,
    log=None,
    context: float = 1.0,
) -> Manifest:
    """Convert a dataset in memory into TFRecord shards of person crops (the converter core).

    One record per person of the keypoint category with ``iscrowd=0`` and at least
    ``min_keypoints`` labeled keypoints. Bad input (missing or undecodable image, size
    mismatch, bad bbox or keypoints) is reported with a message naming the image or annotation
    and counted as skipped, or raises with ``strict=True``.

    Args:
        source: the dataset (see ``keras_pose.data.source``).
        output: output directory (created if needed).
        split: split name, the shard and manifest prefix (``train``, ``val``).
        shards: number of shards; ``None`` = one per ~2048 candidate persons.
        workers: worker processes; ``None`` = ``os.cpu_count()`` (in-process below ~200
            images); 0 or 1 = in-process. Workers start with ``spawn``, which re-imports the
            calling script: guard it with ``if __name__ == "__main__":``.
        strict: raise on the first bad input instead of skipping it.
        crop_size: side of the stored square crops in pixels.
        margin: crop side = ``margin * max(bbox w, h)``, centred on the bbox centre.
        min_keypoints: fewest labeled keypoints (v > 0) a person needs.
        jpeg_quality: JPEG quality of the stored crops.
        seed: seed of the image order shuffle; ``None`` keeps image-id order.
        overwrite: replace an existing split of the same name in ``output``.
        progress: show a tqdm progress bar.
        log: callable taking a message line; default prints to stderr.
        context: stored side / crop side: the records keep ``ceil((context - 1) * crop_size
            / 2)`` pixels of the surrounding image on each side of the crop, at the crop's
            scale, for zoom-out and rotation augmentation (``augment.context_needed``);
            1 = the crop alone.

    Returns:
        The :class:`Manifest` (also written to ``output/split.manifest.json``).

    Raises:
        ConversionError: missing images folder, existing output, bad input with ``strict``,
            or no record produced.
    """
    _validate_args(crop_size, margin, min_keypoints, shards, workers, jpeg_quality, context)
    _validate_split(split)
    output = os.fspath(output)
    pad = coco_lib.context_pad(crop_size, context)
    log = log or _default_log
    if not os.path.isdir(source.images_dir):
        raise ConversionError(f"images directory {source.images_dir} does not exist")
    _prepare_output(output, split, overwrite, log)

    skips: Counter = Counter()
    messages: list[str] = []
    report = _reporter(strict, skips, messages, log)
    tasks = _plan(source, crop_size, margin, min_keypoints, jpeg_quality, seed, report, pad)
    if shards is None:
        candidates = sum(len(t["anns"]) for t in tasks)
        shards = max(1, -(-candidates // AUTO_RECORDS_PER_SHARD))
    if workers is None:
        # Starting a spawned worker costs ~0.5-1 s: small sets are faster in-process.
        workers = min(os.cpu_count() or 1, max(1, len(tasks) // 100))

    finals = [os.path.join(output, shard_name(split, i, shards)) for i in range(shards)]
    temps = [os.path.join(output, _temp_name(os.path.basename(f))) for f in finals]
    try:
        written = _write_records(tasks, workers, temps, split, progress, report)
        if not written:
            raise ConversionError(
                f"no person records from {source.path}: {sum(skips.values())} annotations "
                f"skipped ({dict(skips) or 'no person annotations of the keypoint category'})"
            )
        counts = [len(written[i::shards]) for i in range(shards)]
        options = {"crop_size": crop_size, "margin": float(margin), "context": float(context),
                   "context_pad": pad, "stored_size": crop_size + 2 * pad,
                   "min_keypoints": min_keypoints, "jpeg_quality": jpeg_quality, "seed": seed}
        manifest = _manifest(source, split, written, counts, finals, skips, messages, options)
        ground_truth = _ground_truth(source, written, split) if source.ground_truth else None
        _publish(output, split, temps, finals, ground_truth, manifest)
        return dataclasses.replace(manifest, path=os.path.join(output, manifest_name(split)))
    finally:
        for temp in temps:
            if os.path.exists(temp):
                os.remove(temp)


def _front_end_checks(split, images, options: dict) -> None:
    """The checks of :func:`convert_source` that need no annotation file, made before reading
    one (which may take a while), plus the images folder."""
    # Binding to the core's signature fills its defaults and rejects unknown option names.
    arguments = inspect.signature(convert_source).bind(None, None, split, **options)
    arguments.apply_defaults()
    values = arguments.arguments
    _validate_args(*(values[k] for k in (
        "crop_size", "margin", "min_keypoints", "shards", "workers", "jpeg_quality",
        "context")))
    _validate_split(split)
    if not os.path.isdir(images):
        raise ConversionError(f"images directory {os.fspath(images)} does not exist")


def _load(reader, *args, **kwargs) -> PersonSource:
    try:
        return reader(*args, **kwargs)
    except AnnotationFormatError as e:
        raise ConversionError(str(e)) from None


def convert_coco(
    annotations: str | os.PathLike,
    images: str | os.PathLike,
    output: str | os.PathLike,
    split: str,
    shards: int | None = None,
    workers: int | None = None,
    strict: bool = False,
    crop_size: int = 256,
    margin: float = 1.25,
    min_keypoints: int = 1,
    jpeg_quality: int = 95,
    seed: int | None = 0,
    overwrite: bool = False,
    progress: bool = True,
    log=None,
    context: float = 1.0,
) -> Manifest:
    """Convert COCO keypoint annotations into TFRecord shards of person crops.

    COCO keypoints are read as pixel indices (``+0.5`` into the continuous convention of the
    records); the source file is the split's ground truth (no ``SPLIT.annotations.json`` is
    written).

    Args:
        annotations: COCO ``person_keypoints_*.json``.
        images: directory the annotation ``file_name``s are relative to.
        output, split, shards, workers, strict, crop_size, margin, min_keypoints, jpeg_quality,
        seed, overwrite, progress, log, context: as :func:`convert_source`.

    Returns:
        The :class:`Manifest` (also written to ``output/split.manifest.json``).

    Raises:
        ConversionError: invalid input file, existing output, bad input with ``strict``, or no
            record produced.
    """
    options = dict(shards=shards, workers=workers, strict=strict, crop_size=crop_size,
                   margin=margin, min_keypoints=min_keypoints, jpeg_quality=jpeg_quality,
                   seed=seed, overwrite=overwrite, progress=progress, log=log,
                   context=context)
    _front_end_checks(split, images, options)
    loaded = _load(coco_lib.load_coco_keypoints, annotations)
    source = PersonSource(
        format="coco", dataset=loaded.coco.dataset, path=loaded.path, sha256=loaded.sha256,
        images_dir=os.fspath(images), keypoint_set=loaded.keypoint_set,
        category_id=loaded.category_id, ground_truth=False,
    )
    return convert_source(source, output, split, **options)


def convert_lsp(
    joints: str | os.PathLike,
    images: str | os.PathLike,
    output: str | os.PathLike,
    split: str,
    *,
    image_range: str | tuple[int, int] | None = None,
    layout: str = "auto",
    **options: Any,
) -> Manifest:
    """Convert an LSP or LSPET ``joints.mat`` and its images into TFRecord shards.

    Args:
        joints: the ``joints.mat`` file (layout and flag sense in ``keras_pose.data.lsp``).
        images: the folder holding ``im0001.jpg``... (LSP) or ``im00001.jpg``... (LSPET).
        output: output directory (created if needed).
        split: split name (``train``, ``val``).
        image_range: 1-based inclusive image numbers, ``"A-B"`` or ``(A, B)``; None = all.
        layout: ``"auto"`` (from the array shape), ``"lsp"`` or ``"lspet"``.
        **options: ``shards``, ``workers``, ``strict``, ``crop_size``, ``margin``,
            ``min_keypoints``, ``jpeg_quality``, ``seed``, ``overwrite``, ``progress``,
            ``log``, ``context``: as :func:`convert_source`.

    Returns:
        The :class:`Manifest`; ``OUT/SPLIT.annotations.json`` holds the ground truth.

    Raises:
        ConversionError: a bad ``joints.mat`` (named, with the problem), a range past its
            images, existing output, bad input with ``strict``, or no record produced.
    """
    _front_end_checks(split, images, options)
    source = _load(lsp_lib.load_lsp, joints, images, image_range, layout)
    return convert_source(source, output, split, **options)


def convert_mpii(
    annotations: str | os.PathLike,
    images: str | os.PathLike,
    output: str | os.PathLike,
    split: str,
    *,
    head_boxes: str | os.PathLike | None = None,
    image_range: str | tuple[int, int] | None = None,
    **options: Any,
) -> Manifest:
    """Convert MPII annotations (the common JSON layout) and images into TFRecord shards.

    Args:
        annotations: the MPII JSON (see ``keras_pose.data.mpii``).
        images: the folder holding its images.
        output: output directory (created if needed).
        split: split name (``train``, ``val``).
        head_boxes: ``.mat`` with the entries' head boxes (``headboxes_src``), for the
            records' ``head_size``; None = the upper neck to head-top stand-in.
        image_range: 1-based inclusive range of JSON entries (persons); None = all.
        **options: as for :func:`convert_lsp`.

    Returns:
        The :class:`Manifest`; ``OUT/SPLIT.annotations.json`` holds the ground truth.

    Raises:
        ConversionError: a bad JSON or head-box file (named, with the problem), existing
            output, bad input with ``strict``, or no record produced.
    """
    _front_end_checks(split, images, options)
    source = _load(mpii_lib.load_mpii, annotations, images, head_boxes, image_range)
    return convert_source(source, output, split, **options)
