"""RMSprop with epsilon outside the square root follows the Torch7 / PyTorch update rule."""

from __future__ import annotations

import pathlib

import keras
import numpy as np
import pytest

from keras_pose.pipeline import load_pipeline
from keras_pose.training import optimizers
from keras_pose.training.run import make_optimizer

PIPELINES = pathlib.Path(__file__).parents[1] / "pipelines"
# Gradients spanning the regime where the two rules part (|g| << sqrt(eps) = 1e-4) and the one
# where they agree (|g| >> 1e-4); both signs.
GRADIENTS = np.array([[3e-6, -1e-5, 4e-5, 1e-3, -2e-2]] * 2
                     + [[-5e-6, 2e-5, -3e-5, 5e-4, 1e-2]] * 3)
START = np.array([0.5, -0.25, 1.0, 0.0, 2.0])


def torch_rmsprop(learning_rates, rho, epsilon, momentum=0.0, centered=False):
    """The reference rule written out: Torch7 optim.rmsprop / torch.optim.RMSprop."""
    x, v = START.copy(), np.zeros_like(START)
    buffer, average = np.zeros_like(START), np.zeros_like(START)
    path = []
    for g, lr in zip(GRADIENTS, learning_rates):
        v = rho * v + (1 - rho) * g * g
        if centered:
            average = rho * average + (1 - rho) * g
            denominator = np.sqrt(v - average * average) + epsilon
        else:
            denominator = np.sqrt(v) + epsilon
        if momentum > 0:
            buffer = momentum * buffer + g / denominator
            x = x - lr * buffer
        else:
            x = x - lr * g / denominator
        path.append(x.copy())
    return np.array(path)


class _Halving(keras.optimizers.schedules.LearningRateSchedule):
    """1e-3 for the first two steps, then 5e-4 (a step schedule in miniature)."""

    def __call__(self, step):
        return keras.ops.where(step < 2, 1e-3, 5e-4)


def keras_path(optimizer):
    variable = keras.Variable(START, dtype="float64")
    path = []
    for g in GRADIENTS:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(g, "float64"), variable)])
        path.append(keras.ops.convert_to_numpy(variable).copy())
    return np.array(path)


CASES = {
    "plain": dict(momentum=0.0, centered=False),
    "momentum": dict(momentum=0.9, centered=False),
    "centered": dict(momentum=0.0, centered=True),
}


@pytest.mark.parametrize("case", CASES)
def test_rmsprop_matches_the_torch_formula(case):
    options = CASES[case]
    rho, epsilon = 0.9, 1e-8  # rho away from the default so that it is really used
    # The optimizer holds its learning rate in float32; everything else runs in float64.
    rates = np.float32([1e-3, 1e-3, 5e-4, 5e-4, 5e-4]).astype(np.float64)
    expected = torch_rmsprop(rates, rho, epsilon, **options)
    ours = keras_path(optimizers.RMSprop(learning_rate=_Halving(), rho=rho, epsilon=epsilon,
                                         **options))
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-15)

    # Keras's built-in rule (sqrt(v + eps)) misses the reference by far on small gradients,
    # so this test would catch a regression to it.
    builtin = keras_path(keras.optimizers.RMSprop(learning_rate=_Halving(), rho=rho,
                                                  epsilon=epsilon, **options))
    step_ours = np.abs(ours[0] - START)
    step_builtin = np.abs(builtin[0] - START)
    assert step_ours[0] > 5 * step_builtin[0]  # |g| = 3e-6: the reference step is much larger
    np.testing.assert_allclose(step_ours[-1], step_builtin[-1], rtol=1e-3)  # |g| = 2e-2: ~equal
    assert not np.allclose(builtin, expected, rtol=1e-3, atol=0)


def test_option_off_is_the_keras_rule():
    ours = keras_path(optimizers.RMSprop(learning_rate=1e-3, rho=0.9, momentum=0.9,
                                         epsilon_outside_sqrt=False))
    builtin = keras_path(keras.optimizers.RMSprop(learning_rate=1e-3, rho=0.9, momentum=0.9))
    np.testing.assert_allclose(ours, builtin, rtol=1e-12)


def test_option_survives_config_and_keras_file_round_trip(tmp_path):
    optimizer = optimizers.RMSprop(learning_rate=2e-3, rho=0.95, momentum=0.5, epsilon=1e-7)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is optimizers.RMSprop
    assert restored.epsilon_outside_sqrt is True
    assert (restored.rho, restored.momentum, restored.epsilon) == (0.95, 0.5, 1e-7)
    off = optimizers.RMSprop.from_config(
        optimizers.RMSprop(epsilon_outside_sqrt=False).get_config())
    assert off.epsilon_outside_sqrt is False

    # A compiled model saved to .keras comes back with the same optimizer and slot values.
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is optimizers.RMSprop
    assert loaded.optimizer.epsilon_outside_sqrt is True
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b))


@pytest.mark.parametrize("name", ["stacked_hourglass_coco", "stacked_hourglass_poster_coco",
                                  "residual_stacked_hourglass_coco", "chained_prediction_coco",
                                  "chained_prediction_resnet50_coco", "deeppose_coco"])
def test_reference_pipelines_use_the_torch_rule(name):
    path = PIPELINES / f"{name}.toml"
    pipeline = load_pipeline(path)
    assert pipeline.optimizer.name == "rmsprop"
    assert pipeline.optimizer.epsilon_outside_sqrt
    assert "epsilon_outside_sqrt" in path.read_text().split("\nname = ")[0]  # said in the header
    optimizer = make_optimizer(pipeline)
    assert isinstance(optimizer, optimizers.RMSprop) and optimizer.epsilon_outside_sqrt


def test_option_defaults_off_and_can_be_set():
    assert not load_pipeline(None).optimizer.epsilon_outside_sqrt
    pipeline = load_pipeline(None, ["optimizer.epsilon_outside_sqrt=true"])
    assert make_optimizer(pipeline).epsilon_outside_sqrt
