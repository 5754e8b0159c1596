"""Behaviour of the four networks on small configurations: gradients, weights files,
Chained Prediction's two paths, DeepPose's in-graph crops, mixed precision, custom layers.
(The contract every network keeps, .keras round trips included, is test_model_contract.py's.)"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_pose.models import build_model  # noqa: E402
from keras_pose.models.layers import (  # noqa: E402
    CascadeUpdate,
    LocalResponseNormalization,
    PatchCrop,
    SpatialNormalize,
    SpatialSoftmax,
)

# Small versions of every network (and of its variants); the full sizes are in
# test_models_sizes.py.
SMALL = {
    "hourglass_newell": ("stacked_hourglass", dict(
        num_keypoints=17, input_shape=(64, 64, 3), num_stacks=2, num_features=16, depth=2)),
    "hourglass_nj": ("stacked_hourglass", dict(
        num_keypoints=16, input_shape=(64, 64, 3), num_stacks=2, num_modules=2,
        num_features=16, depth=2, variant="nj")),
    "hourglass_softmax": ("stacked_hourglass", dict(
        num_keypoints=14, input_shape=(64, 64, 3), num_stacks=1, num_features=16, depth=2,
        loss="softmax_cross_entropy")),
    "rsh": ("residual_stacked_hourglass", dict(
        num_keypoints=16, input_shape=(32, 32, 3), num_stacks=3, num_modules=1,
        num_features=16, depth=1)),
    "chained_softmax": ("chained_prediction", dict(
        num_keypoints=3, input_shape=(64, 64, 3), hidden_features=8)),
    "chained_mse": ("chained_prediction", dict(
        num_keypoints=3, input_shape=(64, 64, 3), hidden_features=8, loss="mse")),
    "deeppose_alexnet": ("deeppose", dict(
        num_keypoints=4, input_shape=(64, 64, 3), num_stages=3, fc_units=16, torso=(0, 1))),
    "deeppose_resnet34": ("deeppose", dict(
        num_keypoints=5, input_shape=(64, 64, 3), backbone="resnet34", num_stages=2,
        crop_size=32)),
}


def small_model(key):
    name, options = SMALL[key]
    return build_model(name, **options)


def random_images(model, batch=2, seed=0):
    height, width = model.input_size
    return np.random.default_rng(seed).uniform(0, 255, (batch, height, width, 3)).astype("float32")


def as_list(outputs):
    return [keras.ops.convert_to_numpy(o) for o in (outputs if isinstance(outputs, (list, tuple))
                                                      else [outputs])]


# Variants that repeat another's layers (the ResNet-34 backbone, the MSE chain, the second
# hourglass flavour) run in the slow tier.
@pytest.mark.parametrize("key", [
    pytest.param(key, marks=pytest.mark.slow)
    if key in ("deeppose_resnet34", "chained_mse", "hourglass_nj") else key
    for key in sorted(SMALL)])
def test_every_trainable_weight_gets_a_gradient(key):
    model = small_model(key)
    images = tf.constant(random_images(model))
    rng = np.random.default_rng(1)
    with tf.GradientTape() as tape:
        outputs = model(images, training=True)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        loss = tf.add_n([tf.reduce_mean(tf.square(o - rng.normal(size=o.shape).astype("float32")))
                         for o in outputs])
    gradients = tape.gradient(loss, model.trainable_weights)
    dead = [w.path for w, g in zip(model.trainable_weights, gradients)
            if g is None or not np.any(keras.ops.convert_to_numpy(g) != 0)]
    assert not dead, f"weights without gradient: {dead}"


def test_build_with_weights_file(tmp_path):
    model = small_model("hourglass_newell")
    path = str(tmp_path / "hg.weights.h5")
    model.save_weights(path)
    name, options = SMALL["hourglass_newell"]
    reloaded = build_model(name, weights=path, **options)
    images = random_images(model)
    np.testing.assert_array_equal(as_list(model(images))[-1], as_list(reloaded(images))[-1])
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        build_model(name, weights=str(tmp_path / "missing.weights.h5"), **options)


def _fed_maps(outputs: np.ndarray, loss: str) -> np.ndarray:
    """What the inference path feeds its chain: softmax over positions, or the maps as is."""
    if loss == "mse":
        return outputs
    b, h, w, k = outputs.shape
    flat = outputs.reshape(b, h * w, k)
    p = np.exp(flat - flat.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return (p * 50.0).reshape(outputs.shape)  # any positive scale: the teacher path normalizes


@pytest.mark.parametrize("key", ["chained_softmax",
                                 pytest.param("chained_mse", marks=pytest.mark.slow)])
def test_chained_teacher_forcing_agrees_with_inference(key, tmp_path):
    model = small_model(key)
    images = random_images(model)
    predicted = as_list(model(images, training=False))[0]
    teacher = model.teacher_forcing_model
    assert teacher is model.teacher_forcing_model  # built once
    # Shares the weights: no variable of its own.
    assert {id(v) for v in teacher.weights} == {id(v) for v in model.weights}
    fed = _fed_maps(predicted, model.output_spec.loss)
    forced = as_list(teacher({"images": images, "teacher_heatmaps": fed}, training=False))[0]
    np.testing.assert_allclose(forced, predicted, rtol=1e-4, atol=1e-5)
    # Other teacher maps change every step but the first, which sees no earlier joint.
    other = as_list(teacher({"images": images, "teacher_heatmaps": np.roll(fed, 3, axis=1)},
                            training=False))[0]
    np.testing.assert_allclose(other[..., 0], predicted[..., 0], rtol=1e-5, atol=1e-6)
    assert np.abs(other[..., 1:] - predicted[..., 1:]).max() > 1e-4
    # Saving after the teacher model exists stores nothing extra and still round-trips.
    path = tmp_path / "chained.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert len(loaded.weights) == len(model.weights)
    again = as_list(loaded.teacher_forcing_model({"images": images, "teacher_heatmaps": fed},
                                                 training=False))[0]
    np.testing.assert_array_equal(again, forced)


def test_only_chained_prediction_has_a_teacher_forcing_model():
    assert small_model("hourglass_newell").teacher_forcing_model is None
    assert small_model("deeppose_alexnet").teacher_forcing_model is None


def test_deeppose_crop_positions_pass_no_gradient():
    model = small_model("deeppose_alexnet")
    images = tf.constant(random_images(model))
    with tf.GradientTape() as tape:
        stage_2 = model(images, training=True)[1]
        loss = tf.reduce_sum(tf.square(stage_2))
    gradients = tape.gradient(loss, model.trainable_weights)
    for weight, gradient in zip(model.trainable_weights, gradients):
        moved = gradient is not None and np.any(keras.ops.convert_to_numpy(gradient) != 0)
        assert moved == weight.path.startswith("stage_2_"), weight.path


def test_hourglass_loss_option_sets_the_output_spec_and_round_trips(tmp_path):
    model = small_model("hourglass_softmax")
    assert model.output_spec.loss == "softmax_cross_entropy"
    path = tmp_path / "softmax.keras"
    model.save(path)
    assert keras.saving.load_model(path).output_spec.loss == "softmax_cross_entropy"
    # The loss changes what the outputs mean, not the graph: same weights as the MSE network.
    mse = build_model("stacked_hourglass", **{**SMALL["hourglass_softmax"][1], "loss": "mse"})
    assert mse.output_spec.loss == "mse"
    assert mse.count_params() == model.count_params()


def test_residual_stacked_hourglass_highways_are_parameter_free():
    model = build_model("residual_stacked_hourglass", num_keypoints=16,
                        input_shape=(32, 32, 3), num_stacks=5, num_modules=1,
                        num_features=16, depth=1)
    names = {layer.name for layer in model.layers}
    # Hourglass 1 -> stack 5 and 2 -> 4; stack 3 is the centre.
    assert {"stack_4_highway", "stack_5_highway"} <= names
    assert not {"stack_1_highway", "stack_2_highway", "stack_3_highway"} & names
    assert model.get_layer("stack_5_highway").input[1].name == \
        model.get_layer("stack_1_hg1_add").output.name
    plain = build_model("stacked_hourglass", num_keypoints=16, input_shape=(32, 32, 3),
                        num_stacks=5, num_modules=1, num_features=16, depth=1, variant="nj")
    assert model.count_params() == plain.count_params()
    assert "stack_5_highway" not in {layer.name for layer in plain.layers}


@pytest.fixture
def mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("key", ["hourglass_nj", "chained_softmax", "deeppose_alexnet"])
def test_outputs_are_float32_under_mixed_bfloat16(key, mixed_bfloat16):
    model = small_model(key)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs[0].compute_dtype == "bfloat16"  # the policy took effect inside
    assert all(output.dtype == "float32" for output in model.outputs)
    outputs = model(random_images(model, batch=1), training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    assert [keras.backend.standardize_dtype(o.dtype) for o in outputs] == \
        ["float32"] * len(model.output_spec.output_names)
    if key == "chained_softmax":
        teacher = model.teacher_forcing_model
        out = teacher({"images": random_images(model, batch=1),
                       "teacher_heatmaps": np.ones((1, 8, 8, 3), "float32")})
        assert keras.backend.standardize_dtype(out.dtype) == "float32"


@pytest.mark.parametrize("name, options, message", [
    ("hourglass", {}, "Unknown model"),
    ("stacked_hourglass", {"stacks": 2}, "Unknown option"),
    ("stacked_hourglass", {"num_stacks": 0}, "num_stacks must be an integer >= 1"),
    ("stacked_hourglass", {"input_shape": (100, 100, 3)}, "multiples of 64"),
    ("stacked_hourglass", {"variant": "poster"}, "variant must be one of"),
    ("stacked_hourglass", {"loss": "l1"}, "loss must be one of"),
    ("chained_prediction", {"backbone": "resnet18"}, "backbone must be one of"),
    ("chained_prediction", {"loss": "l1"}, "loss must be one of"),
    ("deeppose", {"input_shape": (48, 48, 3)}, "too small"),
    ("deeppose", {"num_keypoints": 4, "torso": (0, 9)}, "torso indices"),
])
def test_bad_arguments_raise_clear_errors(name, options, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, **options)


# ---------------------------------------------------------------------------------------------
# Custom layers
# ---------------------------------------------------------------------------------------------


def test_local_response_normalization_matches_tensorflow():
    x = np.random.default_rng(2).normal(0, 30, (2, 5, 5, 11)).astype("float32")
    layer = LocalResponseNormalization()
    expected = tf.nn.local_response_normalization(x, depth_radius=2, bias=2.0, alpha=1e-4,
                                                  beta=0.75)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected.numpy(),
                               rtol=1e-5, atol=1e-6)
    clone = LocalResponseNormalization.from_config(layer.get_config())
    assert (clone.size, clone.alpha, clone.beta, clone.k) == (5, 1e-4, 0.75, 2.0)


def test_patch_crop_samples_a_linear_image_exactly():
    size, crop = 32, 6
    rows, cols = np.mgrid[0:size, 0:size].astype("float32")
    image = (cols + 2.0 * rows)[None, :, :, None]  # value at pixel centre (c+0.5, r+0.5)
    points = np.array([[[12.3, 15.7], [20.3, 21.7]]], "float32")  # torso diameter 10 px
    coords = points / size - 0.5
    layer = PatchCrop(crop, torso=(0, 1), crop_scale=1.0)
    patches, boxes = (keras.ops.convert_to_numpy(t) for t in layer([image, coords]))
    assert patches.shape == (2, crop, crop, 1)
    np.testing.assert_allclose(boxes[0, :, :2], coords[0], atol=1e-6)
    np.testing.assert_allclose(boxes[0, :, 2:], 10.0 / size, atol=1e-6)
    t = (np.arange(crop) + 0.5) / crop * 10.0 - 5.0
    for k in range(2):
        x = points[0, k, 0] + t[None, :]
        y = points[0, k, 1] + t[:, None]
        np.testing.assert_allclose(patches[k, :, :, 0], (x - 0.5) + 2 * (y - 0.5), atol=1e-3)
    clone = PatchCrop.from_config(layer.get_config())
    assert (clone.crop_size, clone.torso) == (crop, (0, 1))


def test_patch_crop_is_zero_outside_the_image_and_clips_the_side():
    image = np.full((1, 16, 16, 3), 7.0, "float32")
    coords = np.array([[[-0.5, -0.5], [-0.5, -0.5]]], "float32")  # both at the corner (0, 0)
    patches, boxes = (keras.ops.convert_to_numpy(t) for t in
                      PatchCrop(4, torso=(0, 1), min_crop_fraction=0.5)([image, coords]))
    # Diameter 0 -> side clipped to 0.5 * 16 = 8 px: samples at -3, -1, 1, 3 px.
    np.testing.assert_allclose(boxes[0, :, 2:], 0.5)
    np.testing.assert_allclose(patches[0, :2, :, :], 0.0)
    np.testing.assert_allclose(patches[0, :, :2, :], 0.0)
    np.testing.assert_allclose(patches[0, 2:, 2:, :], 7.0, atol=1e-5)


def test_cascade_update_keeps_each_patch_own_keypoint():
    previous = np.array([[[0.1, -0.2], [0.0, 0.3]]], "float32")
    # Patch 0 regresses (dx0, dy0, dx1, dy1) = (0.5, -0.5, 9, 9); patch 1 = (9, 9, -0.25, 1).
    regressed = np.array([[0.5, -0.5, 9.0, 9.0], [9.0, 9.0, -0.25, 1.0]], "float32")
    boxes = np.array([[[0.1, -0.2, 0.2, 0.4], [0.0, 0.3, 0.1, 0.1]]], "float32")
    new = keras.ops.convert_to_numpy(CascadeUpdate()([previous, regressed, boxes]))
    np.testing.assert_allclose(new, [[[0.1 + 0.1, -0.2 - 0.2], [0.0 - 0.025, 0.3 + 0.1]]],
                               atol=1e-6)


def test_spatial_softmax_and_normalize():
    x = np.random.default_rng(3).normal(size=(2, 4, 5, 3)).astype("float32")
    soft = keras.ops.convert_to_numpy(SpatialSoftmax()(x))
    np.testing.assert_allclose(soft.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(soft[0, ..., 0], np.exp(x[0, ..., 0]) / np.exp(x[0, ..., 0]).sum(),
                               rtol=1e-5)
    maps = np.abs(x)
    maps[1, ..., 2] = 0.0  # an unlabeled joint's empty target stays empty
    normalized = keras.ops.convert_to_numpy(SpatialNormalize()(maps))
    np.testing.assert_allclose(normalized[0].sum(axis=(0, 1)), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(normalized[1, ..., 2], 0.0)
