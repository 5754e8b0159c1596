"""Input pipeline: the tf.data TFRecord reader vs a per-sample Python loader, images per second.

Measures, in one run and on the same people, (a) keras-pose's reader
(``keras_pose.data.dataset.make_dataset``, training mode as the trainer reads it: shuffled,
batched, parse + JPEG decode of the stored images, context included; augmentation and targets
run later in the compiled training step) and
(b) a typical per-sample loader as a PyTorch-style ``Dataset`` + worker pool does it: cv2 read of
the full source image, ``cv2.warpAffine`` of the person box to the crop size, numpy Gaussian
heatmaps (64x64, one per keypoint), in a multiprocessing pool of ``--loader-workers`` processes
and in-process. Prints images/s, the ratio to the faster loader variant (goal: >= 5x), and the
records' bytes per record and stored side (the cost of the context they keep).

Without ``--records`` it writes a temporary dataset first: synthetic 640x480 images
(``keras_pose.data.synthetic``) converted with ``keras_pose.data.convert``.

Example:
    python tools/benchmark.py pipeline --records 'data/coco/train-*.tfrecord'
"""

from __future__ import annotations

import argparse
import os
import tempfile

import cv2
import numpy as np

from keras_pose.benchmarks import common
from keras_pose.data import coco as coco_lib
from keras_pose.keypoints import index_to_coord
from keras_pose.resources import peak_rss_mib

GOAL_RATIO = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", default=None, metavar="GLOB",
                        help="TFRecord shards with a manifest beside them (default: a temporary "
                             "synthetic dataset)")
    parser.add_argument("--images", default=None, metavar="DIR",
                        help="source images of the records, for the per-sample loader "
                             "(default: the manifest's images directory)")
    parser.add_argument("--batch-size", type=int, default=32, help="reader batch size")
    parser.add_argument("--batches", type=int, default=30, help="reader batches per timed call")
    parser.add_argument("--loader-samples", type=int, default=192,
                        help="samples per timed call of the pooled loader (a quarter of it "
                             "for the in-process loader)")
    parser.add_argument("--loader-workers", type=int, default=os.cpu_count() or 1,
                        help="processes of the per-sample loader's pool (default: CPU count)")
    parser.add_argument("--num-parallel-calls", type=int, default=2,
                        help="reader's parallel parse+decode calls")
    parser.add_argument("--heatmap-size", type=int, default=64, help="loader heatmap side")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed rounds (each times every variant once, interleaved)")
    parser.add_argument("--synthetic-images", type=int, default=96,
                        help="images of the temporary dataset when --records is not given")
    parser.add_argument("--context", type=float, default=1.0,
                        help="context (stored side / crop side) of the temporary dataset")


def all_argv(args: argparse.Namespace) -> list[str]:
    """Arguments of this benchmark under ``benchmark.py all``: a temporary dataset."""
    return []


def _make_temporary_records(directory: str, num_images: int, context: float = 1.0) -> str:
    """Synthetic COCO-like images (640x480) converted to TFRecords; returns the shard glob."""
    from keras_pose.data import synthetic
    from keras_pose.data.convert import convert_coco

    annotations = synthetic.make_synthetic_dataset(
        os.path.join(directory, "synthetic"), num_images, seed=0, image_size=(480, 640),
        progress=False,
    )
    convert_coco(annotations, annotations.parent / "images", os.path.join(directory, "records"),
                 "train", shards=4, workers=1, progress=False, log=lambda message: None,
                 context=context)
    return os.path.join(directory, "records", "train-*.tfrecord")


def _loader_samples(records: str, images_dir: str, num_keypoints: int, heatmap_size: int):
    """(path, crop box, keypoints, visibility) of every record, read once through the reader."""
    from keras_pose.data.dataset import make_dataset

    samples = []
    dataset = make_dataset(records, batch_size=256, num_keypoints=num_keypoints,
                           training=False)
    for batch in dataset:
        for i in range(batch["image"].shape[0]):
            path = os.path.join(images_dir, batch["filename"][i].numpy().decode("utf-8"))
            samples.append((path, batch["crop_box"][i].numpy().astype(np.float64),
                            batch["image_keypoints"][i].numpy(),
                            batch["visibility"][i].numpy(), int(batch["image"].shape[1]),
                            heatmap_size))
    if not os.path.isfile(samples[0][0]):
        raise FileNotFoundError(
            f"source image {samples[0][0]} of the records not found; pass --images DIR"
        )
    return samples


def _init_loader_worker() -> None:
    cv2.setNumThreads(1)


def load_sample(sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-sample loader: read the image, crop it, render heatmaps (numpy, per sample)."""
    path, crop_box, image_keypoints, visibility, crop_size, heatmap_size = sample
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    matrix = coco_lib.crop_matrix(crop_box, crop_size)
    crop = cv2.warpAffine(image, matrix, (crop_size, crop_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
    # Keypoints to heatmap coordinates (continuous; pixel centres at +0.5).
    points = (image_keypoints - crop_box[:2]) * (heatmap_size / crop_box[2])
    centres = index_to_coord(np.arange(heatmap_size, dtype=np.float32))
    sigma = heatmap_size / 64.0
    dx = centres[None, None, :] - points[:, 0, None, None]
    dy = centres[None, :, None] - points[:, 1, None, None]
    heatmaps = np.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma)).astype(np.float32)
    weights = (visibility > 0).astype(np.float32)
    heatmaps *= weights[:, None, None]
    return crop, np.ascontiguousarray(heatmaps.transpose(1, 2, 0)), weights


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import multiprocessing

    from keras_pose.data.dataset import make_dataset, read_manifest

    with tempfile.TemporaryDirectory(prefix="keras_pose_bench_") as tmp:
        records = args.records
        if records is None:
            print(f"no --records: writing a temporary synthetic dataset "
                  f"({args.synthetic_images} images of 640x480) ...", flush=True)
            records = _make_temporary_records(tmp, args.synthetic_images, args.context)
        manifest = read_manifest(records)
        shard_bytes = sum(os.path.getsize(os.path.join(manifest.directory, name))
                          for name in manifest.shards)
        bytes_per_record = shard_bytes / max(1, manifest.num_records)
        images_dir = args.images or manifest.source["images"]
        num_keypoints = manifest.num_keypoints
        samples = _loader_samples(records, images_dir, num_keypoints, args.heatmap_size)
        print(f"{len(samples)} records ({manifest.crop_size} px crops stored as "
              f"{manifest.stored_size} px with context {manifest.context:g}, "
              f"{bytes_per_record / 1024:,.1f} "
              f"KiB per record, {num_keypoints} keypoints) from {records}", flush=True)

        # keras-pose reader, as the trainer uses it.
        dataset = make_dataset(records, batch_size=args.batch_size, num_keypoints=num_keypoints,
                               training=True, seed=0, context=True,
                               num_parallel_calls=args.num_parallel_calls)
        iterator = iter(dataset)

        def read_batches():
            for _ in range(args.batches):
                next(iterator)["image"].numpy()

        rng = np.random.default_rng(0)
        single = [samples[i] for i in rng.integers(0, len(samples), args.loader_samples // 4)]
        pooled = [samples[i] for i in rng.integers(0, len(samples), args.loader_samples)]
        # spawn: TensorFlow's threads do not survive a fork well.
        context = multiprocessing.get_context("spawn")
        with context.Pool(args.loader_workers, initializer=_init_loader_worker) as pool:
            def load_pooled():
                for _ in pool.imap_unordered(load_sample, pooled, chunksize=4):
                    pass

            def load_single():
                for sample in single:
                    load_sample(sample)

            # Interleaved rounds: on a shared machine the load drifts, and each variant should
            # see the same drift. Before each reader round its prefetch buffer is drained, so
            # batches made while it idled do not count.
            times = {"reader": [], "pool": [], "single": []}
            for round_index in range(args.repeats + 1):
                for _ in range(2):
                    next(iterator)
                for name, fn in (("reader", read_batches), ("pool", load_pooled),
                                 ("single", load_single)):
                    elapsed = common.time_call(fn, repeats=1, warmup=0)[0]
                    if round_index:  # round 0 warms up (tf.function tracing, pool start)
                        times[name].append(elapsed)
        reader_rate = args.batches * args.batch_size / common.median(times["reader"])
        pool_rate = len(pooled) / common.median(times["pool"])
        single_rate = len(single) / common.median(times["single"])

    # The baseline is the faster loader variant: on a loaded 2-core machine the pool can lose
    # to one process, and the ratio should not profit from that.
    baseline = max(pool_rate, single_rate)
    ratio = reader_rate / baseline
    rows = [
        [f"keras-pose tf.data reader (batch {args.batch_size}, parse+decode, "
         f"num_parallel_calls={args.num_parallel_calls})",
         f"{reader_rate:,.0f}", f"{1e3 / reader_rate:.2f}", "1.00"],
        [f"per-sample loader, Pool({args.loader_workers}) (imread + warpAffine + heatmaps)",
         f"{pool_rate:,.0f}", f"{1e3 / pool_rate:.2f}", f"{pool_rate / reader_rate:.2f}"],
        ["per-sample loader, 1 process", f"{single_rate:,.0f}", f"{1e3 / single_rate:.2f}",
         f"{single_rate / reader_rate:.2f}"],
    ]
    common.print_table(f"Input pipeline ({common.machine_description()})",
                       ["variant", "images/s", "ms/image", "x reader"], rows)
    verdict = "met" if ratio >= GOAL_RATIO else "NOT met"
    print(f"reader / faster per-sample loader = {ratio:.1f}x "
          f"(vs Pool({args.loader_workers}): {reader_rate / pool_rate:.1f}x, "
          f"vs 1 process: {reader_rate / single_rate:.1f}x; "
          f"goal >= {GOAL_RATIO:.0f}x: {verdict}); medians of {args.repeats} timed calls, "
          f"peak RSS {peak_rss_mib():,.0f} MiB", flush=True)
    return 0
