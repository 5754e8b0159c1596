"""The model contract (``keras_pose.models.base``), checked once for each of the four networks.

At tiny sizes (one stack, few features and keypoints, 32-64 px inputs): the output spec
describes the outputs; one trainer step changes every trainable weight and gives a finite
loss; a ``.keras`` file predicts exactly what the model did; the serving export predicts the
keypoints of the Keras model plus its codec's decoding.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_pose import codecs, export
from keras_pose.keypoints import KeypointSet
from keras_pose.models import build_model
from keras_pose.outputs import COORDINATES, HEATMAPS
from keras_pose.training.trainer import PoseTrainer

# Two keypoints: Chained Prediction has a decoder per keypoint, and its graph sets the pace.
KEYPOINTS = KeypointSet(name="contract2", names=("left_hand", "right_hand"),
                        flip_pairs=((0, 1),), skeleton=((0, 1),), torso=(0, 1))
K = KEYPOINTS.num_keypoints

# (network, options, input side, the output names the network promises, its output kind).
NETWORKS = {
    "deeppose": (dict(num_stages=2, fc_units=16, dropout_rate=0.0, torso=(0, 1)), 64,
                 ("stage_1", "stage_2"), COORDINATES),
    "chained_prediction": (dict(hidden_features=8), 32, ("heatmaps",), HEATMAPS),
    "stacked_hourglass": (dict(num_stacks=1, num_features=8, depth=1), 32, ("stack_1",),
                          HEATMAPS),
    "residual_stacked_hourglass": (dict(num_stacks=1, num_modules=1, num_features=8, depth=1),
                                   32, ("stack_1",), HEATMAPS),
}


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def network(request):
    name = request.param
    options, side, _, _ = NETWORKS[name]
    keras.utils.set_random_seed(0)
    model = build_model(name, num_keypoints=K, input_shape=(side, side, 3), **options)
    return name, model


def _images(model, batch=2, seed=0) -> np.ndarray:
    height, width = model.input_size
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (batch, height, width, 3)).astype("float32")


def _outputs(model, images) -> list[np.ndarray]:
    outputs = model(images, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [keras.ops.convert_to_numpy(o) for o in outputs]


def _reader_batch(side: int, batch: int = 2, seed: int = 1) -> dict:
    """A ``make_dataset`` batch of crops of the network's input size (no augmentation)."""
    rng = np.random.default_rng(seed)
    keypoints = rng.uniform(0.2, 0.8, (batch, K, 2)).astype(np.float32) * side
    return {"image": rng.integers(0, 256, (batch, side, side, 3), dtype=np.uint8),
            "keypoints": keypoints, "visibility": np.full((batch, K), 2, np.int32)}


def test_output_spec_describes_the_outputs(network):
    name, model = network
    _, side, names, kind = NETWORKS[name]
    spec = model.output_spec
    assert spec.kind == kind and spec.output_names == names
    assert list(model.output_names) == list(names)
    assert model.input_size == (side, side) and model.num_keypoints == K
    outputs = _outputs(model, _images(model))
    assert len(outputs) == len(names)
    for output in outputs:
        assert output.dtype == np.float32
        if kind == HEATMAPS:
            assert side % spec.stride == 0
            assert output.shape == (2, side // spec.stride, side // spec.stride, K)
        else:
            assert spec.stride is None and output.shape == (2, K, 2)


def test_one_train_step_changes_every_weight_and_gives_a_finite_loss(network):
    name, model = network
    trainer = PoseTrainer(model, keypoint_set=KEYPOINTS, augment_config=None, sigma=1.0)
    # Eager: the step's graph and XLA compilation are test_precision.py's (tracing costs).
    trainer.compile(optimizer=keras.optimizers.RMSprop(1e-3), run_eagerly=True)
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    try:
        logs = trainer.train_on_batch(_reader_batch(model.input_size[0]), return_dict=True)
    finally:
        after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
        # The module's later tests expect the model as built.
        for weight, value in zip(model.trainable_weights, before):
            weight.assign(value)
    assert math.isfinite(logs["loss"]) and logs["loss"] > 0
    per_output = [logs[f"loss_{n}"] for n in model.output_spec.output_names]
    assert logs["loss"] == pytest.approx(sum(per_output), rel=1e-5)
    # RMSprop moves every weight with a non-zero gradient by about the learning rate. Every
    # kernel learns; a bias or beta right before a batch normalization has a zero gradient,
    # and so do some of Chained Prediction's under teacher forcing (its targets feed the chain).
    unchanged = [w.path for w, b, a in zip(model.trainable_weights, before, after)
                 if len(w.shape) >= 2 and np.array_equal(a, b)]
    assert not unchanged, f"kernels a step did not change: {unchanged}"
    changed = sum(not np.array_equal(a, b) for b, a in zip(before, after))
    assert changed >= 0.75 * len(before)


def test_keras_file_round_trip_predicts_the_same(network, tmp_path):
    _, model = network
    images = _images(model, seed=2)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    assert loaded.output_spec == model.output_spec
    for before, after in zip(_outputs(model, images), _outputs(loaded, images)):
        np.testing.assert_array_equal(after, before)


# The serving graph differs by output kind, not by family: the fast tier exports one heatmap
# network and the coordinate one; the other two heatmap networks export in the slow tier.
@pytest.mark.parametrize("network", [
    pytest.param(name, marks=pytest.mark.slow)
    if name in ("chained_prediction", "residual_stacked_hourglass") else name
    for name in sorted(NETWORKS)], indirect=True)
def test_serving_export_predicts_the_keras_keypoints(network, tmp_path):
    name, model = network
    side = model.input_size[0]
    # Margin 1 and the whole image as the box: the serving crop is the image itself, so the
    # export must give the Keras model's decoded keypoints (input pixels = image pixels).
    version = export.export_saved_model(model, name=name, base=tmp_path, keypoint_set=KEYPOINTS,
                                        margin=1.0, update_config=False)
    image = np.random.default_rng(3).integers(0, 256, (side, side, 3), dtype=np.uint8)
    predicted = export.load_predictor(version).predict(image)
    codec = codecs.codec_for(model.output_spec, model.input_size)
    keypoints, scores = codec.decode(model(image[None].astype("float32"), training=False))
    assert predicted["keypoints"].shape == (1, K, 2)
    np.testing.assert_allclose(predicted["keypoints"], keras.ops.convert_to_numpy(keypoints),
                               atol=1e-3)
    np.testing.assert_allclose(predicted["scores"], keras.ops.convert_to_numpy(scores),
                               atol=1e-4)
    assert tf.saved_model.contains_saved_model(str(version))
