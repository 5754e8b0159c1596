"""Every shipped pipeline trains: its optimizer (with its schedule), augmentation with its
records' context, targets, loss and network family run two steps in ``PoseTrainer`` and move
the weights.

The networks keep their family and options (modules, depth, variant, backbone, loss) at a
64 px input. Tracing a train step costs about 10 s per hourglass stack here whatever its width,
so the hourglasses are cut to at most 2 stacks of 16 features to keep the suite within its
time; their full sizes are built and counted in tests/test_models_sizes.py. The ResNet
backbones have no width to narrow: the Chained Prediction pipelines (a chain of 17 decoders)
run at full size. Every case traces a whole train step (20-160 s here), so the test is in the
slow tier; the fast tier loads and validates every shipped pipeline in tests/test_config.py.
"""

from __future__ import annotations

import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_pose.keypoints import get_keypoint_set
from keras_pose.pipeline import load_pipeline, toml_value
from keras_pose.training.run import build_trainer, make_optimizer

PIPELINES = sorted((pathlib.Path(__file__).parents[1] / "pipelines").glob("*.toml"))
INPUT = 64
NARROW = {"stacked_hourglass": 16, "residual_stacked_hourglass": 16}
MAX_STACKS = 2


def _overrides(path: pathlib.Path) -> list[str]:
    pipeline = load_pipeline(path)
    values = [f"model.input_size={INPUT}", f"data.crop_size={INPUT}"]
    if pipeline.model.name in NARROW:
        options = {**pipeline.model.options, "num_features": NARROW[pipeline.model.name],
                   "num_stacks": min(pipeline.model.options.get("num_stacks", 1), MAX_STACKS)}
        values.append(f"model.options={toml_value(options)}")
    return values


@pytest.mark.slow
@pytest.mark.parametrize("path", PIPELINES, ids=[path.stem for path in PIPELINES])
def test_shipped_pipeline_trains_two_steps(path):
    pipeline = load_pipeline(path, _overrides(path))
    keras.mixed_precision.set_global_policy(pipeline.train.mixed_precision)
    try:
        keypoint_set = get_keypoint_set(pipeline.data.keypoint_set)
        k = keypoint_set.num_keypoints
        trainer = build_trainer(pipeline, k)
        trainer.compile(optimizer=make_optimizer(pipeline), jit_compile=False)
        # A reader batch as the training records give it: the crop centred in its context,
        # keypoints in crop pixels.
        side = INPUT + 2 * int(np.ceil((pipeline.data.context - 1) * INPUT / 2))
        rng = np.random.default_rng(0)
        batch = {"image": rng.integers(0, 256, (2, side, side, 3), dtype=np.uint8),
                 "keypoints": rng.uniform(16, 48, (2, k, 2)).astype(np.float32),
                 "visibility": np.full((2, k), 2, np.int32)}
        before = [np.array(w) for w in trainer.network.trainable_weights]
        history = trainer.fit(tf.data.Dataset.from_tensors(batch).repeat(), epochs=1,
                              steps_per_epoch=2, verbose=0, shuffle=False)
        loss = history.history["loss"][0]
        assert np.isfinite(loss) and loss > 0, loss
        assert int(trainer.optimizer.iterations.numpy()) == 2
        moved = [not np.array_equal(b, np.array(w))
                 for b, w in zip(before, trainer.network.trainable_weights)]
        assert sum(moved) >= 0.9 * len(moved), f"{sum(moved)} of {len(moved)} weights moved"
    finally:
        keras.mixed_precision.set_global_policy("float32")
