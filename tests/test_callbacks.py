"""TensorBoardImages draws through the trainer's codec for both output kinds."""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_pose.keypoints import COCO17
from keras_pose.training.callbacks import TensorBoardImages
from keras_pose.training.trainer import PoseTrainer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from tiny_pose import TinyCoordinatePose, TinyHeatmapPose  # noqa: E402


def _image_tags(log_dir) -> set[str]:
    tags = set()
    for path in log_dir.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    return tags


@pytest.mark.parametrize("heatmaps", [True, False])
def test_tensorboard_images_for_both_output_kinds(tmp_path, heatmaps):
    network = (TinyHeatmapPose(input_size=32) if heatmaps
               else TinyCoordinatePose(input_size=(32, 32)))
    rng = np.random.default_rng(0)
    batch = {"image": tf.constant(rng.integers(0, 256, (2, 32, 32, 3)), tf.uint8),
             "keypoints": tf.constant(rng.uniform(2, 30, (2, 17, 2)), tf.float32),
             "visibility": tf.constant(np.full((2, 17), 2), tf.int32)}
    trainer = PoseTrainer(network, keypoint_set=COCO17, augment_config=None)
    callback = TensorBoardImages(batch, str(tmp_path), COCO17, max_images=2)
    callback.set_model(trainer)
    callback.on_epoch_end(0)
    tags = _image_tags(tmp_path)
    assert "skeletons/ground_truth_vs_predicted" in tags
    # Heatmap overlays only where the codec has heatmaps.
    assert ("heatmaps/target_vs_predicted" in tags) == heatmaps


def test_tensorboard_images_predicts_traced_once_on_the_drawn_crops(tmp_path):
    # Run eagerly, a functional network keeps every activation until it returns (2.9 GiB for
    # the 2-stack hourglass at batch 8): the pictures' forward pass must run traced.
    network = TinyHeatmapPose(input_size=32)
    rng = np.random.default_rng(0)
    batch = {"image": tf.constant(rng.integers(0, 256, (5, 32, 32, 3)), tf.uint8),
             "keypoints": tf.constant(rng.uniform(2, 30, (5, 17, 2)), tf.float32),
             "visibility": tf.constant(np.full((5, 17), 2), tf.int32)}
    trainer = PoseTrainer(network, keypoint_set=COCO17, augment_config=None)
    forward = trainer.forward
    eager_calls, batch_sizes = [], []

    def spy(images, target, training):
        eager_calls.append(tf.executing_eagerly())
        batch_sizes.append(images.shape[0])
        return forward(images, target, training)

    trainer.forward = spy
    callback = TensorBoardImages(batch, str(tmp_path), COCO17, max_images=2)
    callback.set_model(trainer)
    for epoch in range(3):
        callback.on_epoch_end(epoch)
    assert eager_calls == [False]  # one trace, reused at every epoch, never eager
    assert batch_sizes == [2]  # the two drawn crops, not the whole batch of 5
    assert callback.predict_function().experimental_get_tracing_count() == 1


@pytest.mark.skipif(not pathlib.Path("/proc/self/statm").exists(), reason="Linux /proc only")
def test_training_peak_memory_is_noted_when_validation_starts():
    from keras_pose.resources import peak_rss_mib
    from keras_pose.training.callbacks import TrainingPeakMemory

    callback = TrainingPeakMemory()
    callback.on_test_begin()
    noted = callback.peak_mib
    assert 100 < noted <= peak_rss_mib()
    # Touch enough memory after the note that the process's peak surely grows past it.
    resident = int(pathlib.Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20
    held = np.ones(int((noted - resident + 300) * 2**20) // 8)
    callback.on_epoch_end(0)
    callback.on_test_begin()
    assert callback.peak_mib == noted  # only the first validation's start counts
    assert peak_rss_mib() >= noted + 200
    del held
