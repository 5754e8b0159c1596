"""Batch-norm folding for inference: which pairs fold, the folded weights, and that every network
gives the same outputs folded and unfolded."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402

from keras_pose.models.fold import fold_batch_norms, foldable_pairs  # noqa: E402
from tests.test_models import SMALL, as_list, random_images, small_model  # noqa: E402


def randomize_batch_norms(model, seed=0):
    """Moving statistics and affine weights far from the initial 0/1, so a wrong fold shows."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, channels).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, channels).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.5, channels).astype("float32"))


def test_folded_weights_by_hand():
    inputs = keras.Input((5, 5, 2))
    conv = layers.Conv2D(3, 3, name="conv")
    norm = layers.BatchNormalization(epsilon=1e-3, name="bn")
    model = keras.Model(inputs, layers.ReLU()(norm(conv(inputs))))
    kernel = np.arange(54, dtype="float32").reshape(3, 3, 2, 3) / 50.0
    conv.set_weights([kernel, np.array([1.0, -2.0, 0.5], "float32")])
    norm.set_weights([np.array([2.0, 1.0, 0.5], "float32"),  # gamma
                      np.array([0.1, 0.2, 0.3], "float32"),  # beta
                      np.array([0.5, 0.0, -1.0], "float32"),  # mean
                      np.array([3.999, 0.999, 0.249], "float32")])  # variance (+ eps = 4, 1, .25)

    folded = fold_batch_norms(model)

    new_kernel, new_bias = folded.get_layer("conv").get_weights()
    scale = np.array([1.0, 1.0, 1.0])  # gamma / sqrt(variance + eps) = 2/2, 1/1, 0.5/0.5
    np.testing.assert_allclose(new_kernel, kernel * scale, rtol=1e-6)
    # (bias - mean) * scale + beta
    np.testing.assert_allclose(new_bias, [0.6, -1.8, 1.8], rtol=1e-6)
    assert isinstance(folded.get_layer("bn"), layers.Identity)
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 2)).astype("float32")
    np.testing.assert_allclose(folded(x), model(x, training=False), rtol=1e-5, atol=1e-5)


def test_pairs_that_must_not_fold():
    inputs = keras.Input((6, 6, 2))
    # Conv output read twice: folding would change the second reader's input.
    shared = layers.Conv2D(2, 1, name="conv_read_twice")(inputs)
    a = layers.BatchNormalization(name="bn_a")(shared)
    b = layers.Add()([a, shared])
    # Conv with an activation: BN is applied after the ReLU.
    activated = layers.Conv2D(2, 1, activation="relu", name="conv_relu")(b)
    c = layers.BatchNormalization(name="bn_c")(activated)
    # A plain pair that folds.
    d = layers.BatchNormalization(name="bn_d")(layers.Conv2D(2, 1, name="conv_plain")(c))
    # A conv whose output is also a model output.
    e = layers.Conv2D(2, 1, name="conv_out")(d)
    f = layers.BatchNormalization(name="bn_f")(e)
    model = keras.Model(inputs, [e, f])

    assert foldable_pairs(model) == {"conv_plain": "bn_d"}


# Two variants whose folding the others already exercise (ResNet-34 blocks: the chained
# networks' backbones; the hourglass variant: the Newell one) run in the slow tier.
@pytest.mark.parametrize("key", [
    pytest.param(key, marks=pytest.mark.slow) if key in ("deeppose_resnet34", "hourglass_nj")
    else key for key in sorted(SMALL)])
def test_every_network_same_outputs_folded(key):
    model = small_model(key)
    randomize_batch_norms(model)
    images = random_images(model)
    expected = as_list(model(images, training=False))
    before = [w.copy() for w in model.get_weights()]
    pairs = foldable_pairs(model)

    folded = fold_batch_norms(model)
    got = as_list(folded(images, training=False))

    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(e).max()))
    # The original is untouched (weights and graph): folding it again finds the same pairs.
    for w, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(w, b)
    assert foldable_pairs(model) == pairs
    assert len(folded.layers) == len(model.layers)


def test_hourglass_folds_every_conv_bn_pair():
    # 2 stacks, depth 2, 1 module: 1 stem conv + 2 per residual (the conv->BN inside each
    # pre-activation bottleneck) + 1 per stack (the conv-BN-ReLU after each hourglass).
    model = small_model("hourglass_newell")
    pairs = foldable_pairs(model)
    residuals = sum(1 for layer in model.layers
                    if layer.name.endswith("_conv1") and "res" in layer.name)
    assert residuals > 0
    assert len(pairs) == 1 + 2 * residuals + 2
