"""A run's input data: making or reusing its records, checking them against the pipeline,
and the ``tf.data`` pipelines ``fit`` reads (``keras_pose.training.run`` calls these)."""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import re

import tensorflow as tf

from keras_pose.data import convert as converter
from keras_pose.data import dataset as reader
from keras_pose.data import synthetic
from keras_pose.data.manifest import MANIFEST_VERSION, Manifest, ManifestError, manifest_name
from keras_pose.data.source import parse_range
from keras_pose.keypoints import get_keypoint_set
from keras_pose.pipeline import DataSection, Pipeline, SourceSection
from keras_pose.runs import RunLayout
from keras_pose.training.errors import DamagedRecords, RunError


def prepare_synthetic_data(pipeline: Pipeline) -> Pipeline:
    """Make (or reuse) the synthetic dataset and its TFRecords; point the pipeline at them.

    Both steps are cached: the generator reuses a folder that already holds the same dataset,
    and records whose manifest names the same annotation SHA-256, crop size, margin, context
    and converter version are reused.
    """
    syn, data = pipeline.data.synthetic, pipeline.data
    root = pathlib.Path(syn.directory)
    records = root / f"records-{data.crop_size}"
    splits = synthetic.make_splits(root, syn.num_train_images, syn.num_val_images, syn.seed,
                                   image_size=syn.image_size)
    for split, split_annotations in splits.items():
        if _reusable_manifest(records / manifest_name(split),
                              _file_sha256(split_annotations), data):
            continue
        print(f"Converting the synthetic {split} split to TFRecords in {records} ...",
              flush=True)
        converter.convert_coco(annotations=split_annotations,
                             images=split_annotations.parent / "images",
                             output=records, split=split, crop_size=data.crop_size,
                             margin=data.margin, context=data.context, overwrite=True)
    data = dataclasses.replace(
        data,
        train_records=str(records / "train-*.tfrecord"),
        val_records=str(records / "val-*.tfrecord"),
        val_annotations=str(splits["val"]),
    )
    return dataclasses.replace(pipeline, data=data)


# The usual files under [data.source] path, per format and split: (annotations, images).
SOURCE_LAYOUTS = {
    "coco": {"train": ("annotations/person_keypoints_train2017.json", "train2017"),
             "val": ("annotations/person_keypoints_val2017.json", "val2017")},
    "lsp": {"train": ("joints.mat", "images"), "val": ("joints.mat", "images")},
    "lspet": {"train": ("joints.mat", "images"), "val": ("joints.mat", "images")},
    "mpii": {"train": ("annot/train.json", "images"), "val": ("annot/valid.json", "images")},
}


def _source_split(source: SourceSection, split: str) -> dict:
    """The files, range and head boxes of one split of ``[data.source]``, checked to exist."""
    root = pathlib.Path(source.path)
    annotations_default, images_default = SOURCE_LAYOUTS[source.format][split]
    annotations = root / (getattr(source, f"{split}_annotations") or annotations_default)
    images = root / (getattr(source, f"{split}_images") or images_default)
    head_boxes = root / source.head_boxes if split == "val" and source.head_boxes else None
    for path, key in ((annotations, f"{split}_annotations"), (images, f"{split}_images"),
                      (head_boxes, "head_boxes")):
        if path is not None and not path.exists():
            raise RunError(f"[data.source] {key}: {path} does not exist (set "
                           f"--set data.source.{key}=... relative to data.source.path)")
    image_range = parse_range(getattr(source, f"{split}_range"))
    if source.format in ("lsp", "lspet") and image_range is None:
        raise RunError(f"[data.source] {split}_range is empty: LSP and LSPET splits are image "
                       "ranges of one joints.mat; set e.g. --set data.source.train_range=1-9000 "
                       "--set data.source.val_range=9001-9500")
    return {"annotations": annotations, "images": images, "image_range": image_range,
            "head_boxes": head_boxes}


def _file_sha256(path: pathlib.Path | None) -> str | None:
    return None if path is None else hashlib.sha256(path.read_bytes()).hexdigest()


def _reusable_manifest(manifest_path: pathlib.Path, sha256: str | None,
                       data: DataSection) -> Manifest | None:
    """The existing manifest if this converter version made it from a file of this SHA-256
    with ``[data]``'s crop size, margin and context (the cache rule of both data-preparation
    steps); ``None`` also for an unreadable one (converted again)."""
    if not manifest_path.exists():
        return None
    try:
        previous = Manifest.from_json(manifest_path)
    except ManifestError:
        return None
    same = (
        # Another converter version may use another pixel convention.
        previous.version == MANIFEST_VERSION
        and previous.source.get("sha256") == sha256
        and (previous.crop_size, previous.margin, previous.context)
        == (data.crop_size, data.margin, data.context)
    )
    return previous if same else None


def _cached_manifest(manifest_path: pathlib.Path, job: dict, source: SourceSection,
                     data: DataSection) -> Manifest | None:
    """The existing manifest if it was made from the same files, range, layout and crop."""
    previous = _reusable_manifest(manifest_path, _file_sha256(job["annotations"]), data)
    if previous is None:
        return None
    made = previous.source
    expected_range = list(job["image_range"]) if job["image_range"] else None
    same = (
        made.get("image_range") == expected_range
        and (made.get("head_boxes") or {}).get("sha256") == _file_sha256(job["head_boxes"])
        and source.layout in ("auto", made.get("layout"))
    )
    return previous if same else None


def _convert_source_split(source: SourceSection, job: dict, records: pathlib.Path, split: str,
                          data: DataSection) -> Manifest:
    options = {"output": records, "split": split, "crop_size": data.crop_size,
               "margin": data.margin, "context": data.context,
               "workers": source.workers or None, "overwrite": True}
    if source.format == "coco":
        return converter.convert_coco(job["annotations"], job["images"], **options)
    if source.format == "mpii":
        return converter.convert_mpii(job["annotations"], job["images"],
                                      head_boxes=job["head_boxes"],
                                      image_range=job["image_range"], **options)
    return converter.convert_lsp(job["annotations"], job["images"],
                                 image_range=job["image_range"], layout=source.layout, **options)


def prepare_source_data(pipeline: Pipeline) -> Pipeline:
    """Convert ``[data.source]`` (both splits) to TFRecords, cached; point the pipeline at them.

    Records go to ``DIRECTORY/records-CROP/{train,val}-*.tfrecord``. A split is reused when its
    manifest names the same annotation file SHA-256, image range, head boxes, layout, crop size,
    margin and context. ``[data] keypoint_set`` becomes the records' (the format decides it), and
    ``val_annotations`` the validation split's ground truth (COCO: the source file; the other
    formats: the converter's ``val.annotations.json``).

    Raises:
        RunError: a missing dataset folder or file (the message names it and the key to set),
            missing LSP/LSPET ranges, or a conversion that fails.
    """
    source, data = pipeline.data.source, pipeline.data
    root = pathlib.Path(source.path)
    if not source.path or not root.is_dir():
        raise RunError(
            f"[data.source] path = {source.path!r}: the {source.format} dataset folder "
            f"{'is not set' if not source.path else 'does not exist'}; set it with "
            f"--set data.source.path=/path/to/{source.format}"
        )
    records = pathlib.Path(source.directory or f"data/{source.format}") / (
        f"records-{data.crop_size}")
    manifests = {}
    for split in ("train", "val"):
        job = _source_split(source, split)
        manifest = _cached_manifest(records / manifest_name(split), job, source, data)
        if manifest is None:
            span = job["image_range"]
            print(f"Converting the {source.format} {split} split"
                  f"{f' ({span[0]}-{span[1]})' if span else ''} to TFRecords in {records} ...",
                  flush=True)
            try:
                manifest = _convert_source_split(source, job, records, split, data)
            except ValueError as error:  # ConversionError: bad files, no records
                raise RunError(f"[data.source] {split} split: {error}") from None
        manifests[split] = manifest
    changes = {"train_records": str(records / "train-*.tfrecord"),
               "val_records": str(records / "val-*.tfrecord"),
               "keypoint_set": manifests["train"].keypoint_set}
    if source.format == "coco":
        changes["val_annotations"] = str(_source_split(source, "val")["annotations"])
    else:
        # The converter's COCO-format ground truth of the split (COCO AP where the keypoint
        # set has OKS sigmas; skipped, and said so, where it has none).
        changes["val_annotations"] = str(records / converter.ground_truth_name("val"))
    return dataclasses.replace(pipeline, data=dataclasses.replace(data, **changes))


def resolve_data(pipeline: Pipeline) -> Pipeline:
    """The pipeline with ``[data]`` pointing at records that exist and match it.

    Makes (or reuses) the synthetic or ``[data.source]`` records, then checks that both splits
    exist, have a manifest, hold ``[data] keypoint_set`` and were cut with ``[data]``'s crop
    size and margin; a :class:`RunError` names what differs.
    """
    if pipeline.data.synthetic.enabled:
        pipeline = prepare_synthetic_data(pipeline)
    if pipeline.data.source.format:
        pipeline = prepare_source_data(pipeline)
    keypoint_set = get_keypoint_set(pipeline.data.keypoint_set)
    for role in ("train_records", "val_records"):
        _check_records(getattr(pipeline.data, role), role)
    for role in ("train_records", "val_records"):
        manifest = read_records_manifest(getattr(pipeline.data, role), role)
        if manifest.keypoint_set != keypoint_set.name:
            raise RunError(f"[data] {role} hold {manifest.keypoint_set} keypoints but "
                           f"[data] keypoint_set = {keypoint_set.name!r}")
        check_records_crop(manifest, pipeline.data, role)
    return pipeline


def make_dataset(pipeline: Pipeline, pattern: str, training: bool, num_keypoints: int,
                     limit: int = 0, workers: int = 1, drop_remainder: bool | None = None):
    """The run's ``tf.data`` pipeline over one records glob, batched as ``[train]`` says.

    Training reads the stored context for augmentation; evaluation reads the crop alone, with
    its length declared, and ``limit`` keeps the first ``limit`` records. Under a multi-worker
    strategy the validation set is not sharded (every worker scores all of it).
    """
    ds = reader.make_dataset(
        pattern,
        batch_size=pipeline.train.batch_size,
        num_keypoints=num_keypoints,
        training=training,
        shuffle_buffer=pipeline.data.shuffle_buffer,
        seed=pipeline.train.seed,
        num_parallel_calls=pipeline.data.num_parallel_calls,
        drop_remainder=drop_remainder,
        # Training reads the records' context for augmentation; evaluation the crop alone.
        context=training,
    )
    if not training:
        # Declare the length (from the manifest): Keras otherwise warns "Your input ran out of
        # data; interrupting training" the first time a validation pass ends.
        records = read_records_manifest(pattern, "val_records").num_records
        batch = pipeline.train.batch_size
        batches = records // batch if drop_remainder else -(-records // batch)
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    if limit:
        ds = ds.take(max(1, limit // pipeline.train.batch_size))
    policy = tf.data.experimental.AutoShardPolicy
    if workers > 1 and not training:
        # Every worker scores the whole validation set (the same numbers): sharding it can
        # leave a worker an empty last batch, which the network cannot take.
        ds = ds.with_options(_shard_options(policy.OFF))
    elif workers > 1 and len(reader.list_shards(pattern)) < workers:
        # tf.distribute shards the records by file and fails with fewer files than workers;
        # then every worker reads all records and keeps its share of each batch.
        ds = ds.with_options(_shard_options(policy.DATA))
    return ds


def _shard_options(policy) -> tf.data.Options:
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return options


def _check_records(pattern: str, role: str) -> None:
    if not pattern:
        raise RunError(f"[data] {role} is empty: name a glob of TFRecord shards "
                       "(or enable [data.synthetic])")
    if not tf.io.gfile.glob(pattern):
        raise RunError(f"[data] {role} = {pattern!r} matches no file")


def read_records_manifest(pattern: str, role: str) -> Manifest:
    """The manifest beside a ``[data]`` records glob; a :class:`RunError` when it is missing.

    A run needs it: it checks the records' keypoint set against ``[data] keypoint_set`` and
    takes the validation length from it. There is no fallback (counting records, guessing the
    keypoint set): the converters write the manifest last, after every shard, so shards without
    one are most likely an interrupted conversion, and training on them would be silent about
    it. The message names the glob and the manifest it looked for, and how to make one.

    Args:
        pattern: ``[data] train_records`` or ``val_records``.
        role: that key's name, for the message.
    """
    try:
        return reader.read_manifest(pattern)
    except FileNotFoundError as error:
        raise RunError(
            f"[data] {role} = {pattern!r}: {error}. A run needs the manifest for the keypoint "
            "set and the number of records: convert the split again into the same folder "
            "(tools/convert_coco.py or tools/convert.py, with --overwrite); the converters "
            "write the shards and then SPLIT.manifest.json") from None
    except ValueError as error:  # not JSON, not a manifest, shards of several splits
        raise RunError(f"[data] {role} = {pattern!r}: {error}") from None


def check_records_crop(manifest: Manifest, data: DataSection, role: str) -> None:
    """Refuse records cut with another crop size or margin than ``[data]`` says.

    The network learns the records' crop (``margin`` x the box, ``crop_size`` pixels) and the
    export serves ``[data] margin`` x the box: a difference would be a silent train/serve skew.
    Less context than ``[data] context`` only shows black where augmentation looks past it,
    and is said so.
    """
    for key in ("crop_size", "margin"):
        recorded, wanted = getattr(manifest, key), getattr(data, key)
        if recorded != wanted:
            raise RunError(
                f"[data] {role}: the records were cut with {key} = {recorded} "
                f"({manifest.path or 'their manifest'}) but [data] {key} = "
                f"{wanted}; set [data] {key} = {recorded} or convert the records again with "
                f"{key} {wanted}")
    recorded_context = manifest.context
    if role == "train_records" and recorded_context < data.context:
        print(f"Note: [data] train_records hold context {recorded_context:g} (stored side / "
              f"crop side), less than [data] context = {data.context:g}: augmentation shows "
              "black past it. Convert them again with that context for real surroundings.",
              flush=True)


def verify_shard(path: str) -> str | None:
    """Read every record of one TFRecord file, checking its CRCs: ``None`` when whole, else
    TensorFlow's description (``corrupted record at 1234``, ``truncated record at ...``)."""
    try:
        for _ in tf.data.TFRecordDataset(path, buffer_size=1 << 20).batch(1024):
            pass
    except tf.errors.DataLossError as error:
        return _data_loss_text(error)
    return None


def _data_loss_text(error: Exception) -> str:
    """The useful words of a ``DataLossError`` (``corrupted record at 1234``), without the
    graph and op names TensorFlow wraps them in."""

    text = getattr(error, "message", None) or str(error)
    found = re.search(r"(?:corrupted|truncated) record at \d+[^\n\['\"]*", text)
    if found:
        return found.group(0).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def damaged_records_error(pipeline: Pipeline, error: Exception,
                          run: RunLayout | None = None) -> DamagedRecords:
    """The :class:`DamagedRecords` for a ``DataLossError`` met while reading the records:
    every shard of both splits is read to name the damaged one(s) (a CRC scan, about as fast
    as the disk), with the command that makes the split again."""
    lines = []
    for role in ("train_records", "val_records"):
        pattern = getattr(pipeline.data, role)
        try:
            shards = reader.list_shards(pattern)
        except FileNotFoundError:
            continue
        damaged = [(path, problem) for path in shards if (problem := verify_shard(path))]
        if not damaged:
            continue
        try:
            source = reader.read_manifest(pattern).source
        except (OSError, ValueError):
            source = {}
        lines += [f"  {path}: {problem}" for path, problem in damaged]
        annotations = source.get("annotations", "THE ANNOTATION FILE")
        split_dir = str(pathlib.Path(damaged[0][0]).parent)
        split = pathlib.Path(damaged[0][0]).name.split("-")[0]
        if source.get("format", "coco") == "coco":
            how = (f"e.g. python tools/convert_coco.py --annotations {annotations} --images "
                   f"{source.get('images', 'IMAGES')} --output {split_dir} --split {split} "
                   "--overwrite, with the options that made it (see the manifest)")
        else:
            how = (f"the tools/convert.py --format {source['format']} command that made it "
                   f"from {annotations} (see the manifest)")
        lines.append(f"  [data] {role}: convert the split again into {split_dir} with "
                     f"--overwrite ({how})")
    kept = ""
    if run is not None and run.backup_state.exists():
        kept = (" The backup in " f"{run.backup} is kept: the same command resumes "
                "from it once the records are whole.")
    if not lines:
        return DamagedRecords(
            f"reading the records failed ({_data_loss_text(error)}), but every shard of "
            "[data] train_records and val_records now reads whole (a "
            f"disk or network error?); run the same command again.{kept}")
    return DamagedRecords("damaged TFRecord shard(s), failing their checksums (tf.data: "
                          f"{_data_loss_text(error)}):\n" + "\n".join(lines) + kept)
