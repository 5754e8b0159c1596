"""XLA and mixed precision: every model's full training step compiles with and without XLA, and
trains under ``mixed_bfloat16`` and ``mixed_float16`` with float32 outputs, loss and decoding."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_pose import augment, codecs, evaluate
from keras_pose.keypoints import KeypointSet
from keras_pose.models import build_model
from keras_pose.training.trainer import PoseTrainer

# Four keypoints keep Chained Prediction (one decoder per keypoint) and DeepPose small.
TEST_SET = KeypointSet(name="test4", names=("left_hand", "right_hand", "left_foot", "right_foot"),
                       flip_pairs=((0, 1), (2, 3)), skeleton=((0, 2), (1, 3)), torso=(0, 3))
K = TEST_SET.num_keypoints

# Small configurations of the four networks (model options, input size); crops are 40 px.
SMALL = {
    "stacked_hourglass": ({"num_stacks": 2, "num_features": 8, "depth": 1}, 32),
    # Two stacks: the second takes the first hourglass's output through a highway.
    "residual_stacked_hourglass": ({"num_stacks": 2, "num_modules": 1, "num_features": 8,
                                    "depth": 1}, 32),
    "chained_prediction": ({"hidden_features": 8}, 32),
    # Two stages, so the in-graph patch crop of the cascade is compiled too; no dropout.
    "deeppose": ({"num_stages": 2, "fc_units": 32, "dropout_rate": 0.0, "torso": (0, 3)}, 64),
}
CROP = 40


@pytest.fixture
def policy():
    """Sets a global dtype policy for one test and restores float32 afterwards."""
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


def reader_batch(batch_size: int, crop_size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    keypoints = rng.uniform(0.25, 0.75, (batch_size, K, 2)).astype(np.float32) * crop_size
    visibility = np.full((batch_size, K), 2, np.int32)
    visibility[0, 1] = 0  # one unlabeled keypoint
    return {
        "image": rng.integers(0, 256, (batch_size, crop_size, crop_size, 3), dtype=np.uint8),
        "keypoints": keypoints,
        "visibility": visibility,
        "crop_box": np.tile(np.array([[10.0, 20.0, crop_size, crop_size]], np.float32),
                            (batch_size, 1)),
        "image_keypoints": keypoints + np.array([10.0, 20.0], np.float32),
        "bbox": np.tile(np.array([[12.0, 22.0, 40.0, 50.0]], np.float32), (batch_size, 1)),
        "area": np.full((batch_size,), 2000.0, np.float32),
        "image_id": np.arange(batch_size, dtype=np.int64),
        "annotation_id": np.arange(batch_size, dtype=np.int64),
    }


def make_trainer(name: str, jit: bool, augment_on: bool = True, seed: int = 0) -> PoseTrainer:
    options, size = SMALL[name]
    keras.utils.set_random_seed(seed)
    network = build_model(name, num_keypoints=K, input_shape=(size, size, 3), **options)
    trainer = PoseTrainer(network, keypoint_set=TEST_SET,
                          augment_config=augment.AugmentConfig() if augment_on else None,
                          sigma=1.0, seed=seed)
    trainer.compile(optimizer=keras.optimizers.RMSprop(1e-3), jit_compile=jit)
    return trainer


def train_losses(trainer: PoseTrainer, batch: dict, steps: int) -> list[float]:
    """The loss of each of ``steps`` training steps (one step per epoch)."""
    data = tf.data.Dataset.from_tensors(batch).repeat()
    history = trainer.fit(data, epochs=steps, steps_per_epoch=1, verbose=0)
    return [float(v) for v in history.history["loss"]]


@pytest.mark.slow
# Tracing and compiling each model's step twice takes 30-60 s on 2 cores.
@pytest.mark.parametrize("name", list(SMALL))
def test_training_step_compiles_with_and_without_xla(name):
    """Augmentation, targets, network (teacher-forced for Chained Prediction) and loss train
    with jit_compile on and off. (The augmentation draws differ between the two: TF's
    stateless RNG picks another algorithm under XLA; each setting is reproducible.)"""
    batch = reader_batch(4, CROP)
    for jit in (False, True):
        trainer = make_trainer(name, jit)
        losses = train_losses(trainer, batch, steps=2)
        # Keras silently falls back to no XLA for models it cannot compile: make sure it did not.
        assert trainer.jit_compile is jit
        assert np.all(np.isfinite(losses)) and min(losses) > 0, (name, jit, losses)


@pytest.mark.slow
def test_xla_step_matches_the_uncompiled_step():
    """Without augmentation, the first step's loss is the same compiled or not (same initial
    weights); after one RMSprop update both still train."""
    batch = reader_batch(4, CROP)
    losses = {jit: train_losses(make_trainer("stacked_hourglass", jit, augment_on=False),
                                batch, steps=2)
              for jit in (False, True)}
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-4), losses
    assert all(np.isfinite(v[1]) for v in losses.values())


def _output_dtypes(network, images) -> list[str]:
    outputs = network(images, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [keras.backend.standardize_dtype(o.dtype) for o in outputs]


@pytest.mark.slow
def test_mixed_bfloat16_trains_with_float32_outputs_loss_and_decoding(policy):
    policy("mixed_bfloat16")
    trainer = make_trainer("stacked_hourglass", jit=False)
    network = trainer.network
    convs = [layer for layer in network.layers if isinstance(layer, keras.layers.Conv2D)]
    # The policy took effect: inner convolutions compute in bfloat16 with float32 variables...
    assert convs[0].compute_dtype == "bfloat16"
    assert convs[0].kernel.dtype == "float32"
    # ...and every heatmap output is float32.
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    assert _output_dtypes(network, images) == ["float32", "float32"]

    batch = reader_batch(4, CROP)
    losses = train_losses(trainer, batch, steps=3)
    assert np.all(np.isfinite(losses)), losses

    prepared = trainer.prepare({k: tf.constant(v) for k, v in batch.items()}, training=True,
                               step=0)
    outputs = trainer.forward(prepared["images"], prepared["targets"], training=True)
    total, per_output = trainer.compute_losses(outputs, prepared["targets"],
                                               prepared["weights"])
    dtypes = {keras.backend.standardize_dtype(v.dtype) for v in [total, *per_output]}
    assert dtypes == {"float32"}
    assert np.isfinite(float(total))

    points, scores = codecs.codec_for(network.output_spec, (32, 32)).decode(outputs[-1])
    assert keras.backend.standardize_dtype(points.dtype) == "float32"
    assert keras.backend.standardize_dtype(scores.dtype) == "float32"
    # The evaluation path: reader batch -> keypoints in source-image pixels, float32.
    predict = evaluate.make_predict_function(network, keypoint_set=TEST_SET)
    output = predict({"image": tf.constant(batch["image"]),
                      "crop_box": tf.constant(batch["crop_box"])})
    image_points, image_scores = output["keypoints"], output["scores"]
    assert image_points.dtype == tf.float32 and image_scores.dtype == tf.float32
    assert tuple(image_points.shape) == (4, K, 2)
    assert np.all(np.isfinite(image_points.numpy()))


@pytest.mark.slow
def test_mixed_bfloat16_under_xla(policy):
    policy("mixed_bfloat16")
    trainer = make_trainer("stacked_hourglass", jit=True)
    losses = train_losses(trainer, reader_batch(4, CROP), steps=2)
    assert trainer.jit_compile is True
    assert np.all(np.isfinite(losses)), losses


@pytest.mark.slow
def test_mixed_float16_scales_the_loss(policy):
    policy("mixed_float16")
    trainer = make_trainer("stacked_hourglass", jit=False)
    # Keras wraps the optimizer when compiling under mixed_float16; the trainer's
    # optimizer.scale_loss then multiplies the loss by the dynamic scale.
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert trainer.optimizer.initial_scale > 1.0

    network = trainer.network
    images = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    assert _output_dtypes(network, images) == ["float32", "float32"]
    before = [np.array(v) for v in network.trainable_variables]
    losses = train_losses(trainer, reader_batch(4, CROP), steps=3)
    assert np.all(np.isfinite(losses)), losses
    after = [np.array(v) for v in network.trainable_variables]
    # Gradients were unscaled and applied: weights moved, and stayed finite.
    assert all(np.all(np.isfinite(w)) for w in after)
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))
    assert int(trainer.optimizer.iterations) >= 1
    # The loss the trainer differentiates is scaled by the current dynamic scale.
    scale = float(trainer.optimizer.dynamic_scale)
    assert 1.0 <= scale <= trainer.optimizer.initial_scale
    assert float(trainer.optimizer.scale_loss(tf.constant(2.0))) == pytest.approx(2.0 * scale)


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_fused_batch_norm_is_keras_batch_norm(policy, precision):
    """The models' BN (TF's fused kernel) gives Keras's outputs, gradients and moving
    statistics, in float32 and bfloat16, with and without XLA."""
    from keras_pose.models.layers import FusedBatchNormalization

    policy(precision)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(1.0, 2.0, (4, 8, 8, 6)).astype(np.float32))
    weights = [rng.uniform(0.5, 1.5, 6), rng.normal(0, 0.1, 6), rng.normal(0, 0.1, 6),
               rng.uniform(0.5, 1.5, 6)]
    probe = tf.constant(rng.normal(size=(4, 8, 8, 6)).astype(np.float32))
    reference = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    fused = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
    for layer in (reference, fused):
        layer.build(x.shape)
        layer.set_weights(weights)
    tol = 1e-5 if precision == "float32" else 1e-2
    for training in (True, False):
        results = []
        for layer in (reference, fused):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=training)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) * probe)
            results.append((y, tape.gradient(loss, [x, layer.gamma, layer.beta])))
        (y_ref, g_ref), (y_fused, g_fused) = results
        assert y_fused.dtype == y_ref.dtype
        np.testing.assert_allclose(np.asarray(tf.cast(y_fused, tf.float32)),
                                   np.asarray(tf.cast(y_ref, tf.float32)), atol=tol * 10)
        for a, b in zip(g_fused, g_ref):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)
    # One training call each: the moving statistics moved the same way.
    np.testing.assert_allclose(fused.moving_mean.numpy(), reference.moving_mean.numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(),
                               reference.moving_variance.numpy(), atol=1e-6)
    assert not np.allclose(fused.moving_variance.numpy(), weights[3])
    compiled = tf.function(lambda v: fused(v, training=True), jit_compile=True)
    np.testing.assert_allclose(np.asarray(tf.cast(compiled(x), tf.float32)),
                               np.asarray(tf.cast(fused(x, training=True), tf.float32)),
                               atol=tol * 10)


def test_fused_batch_norm_round_trips_and_falls_back(tmp_path):
    from keras_pose.models.layers import FusedBatchNormalization

    inputs = keras.Input((5, 5, 3))
    x = FusedBatchNormalization(name="bn4d")(inputs)
    flat = FusedBatchNormalization(name="bn2d")(keras.layers.Flatten()(x))  # Keras's path
    model = keras.Model(inputs, flat)
    data = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype(np.float32)
    model(data, training=True)
    path = tmp_path / "bn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("bn4d"), FusedBatchNormalization)
    np.testing.assert_allclose(np.asarray(loaded(data)), np.asarray(model(data)), atol=1e-6)
