"""Each Keras private API in keras_pose/compat.py against the installed Keras: a change in
Keras fails here, naming the API, instead of somewhere in a training run."""

from __future__ import annotations

import configparser
import inspect
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from packaging.specifiers import SpecifierSet

from keras_pose import compat

REPO = pathlib.Path(__file__).resolve().parents[1]


def _shared_dense_model() -> tuple[keras.Model, keras.layers.Layer]:
    inputs = keras.Input((3,), name="points")
    shared = keras.layers.Dense(2, name="shared")
    outputs = keras.layers.Add(name="sum")([shared(inputs), shared(inputs * 2.0)])
    return keras.Model(inputs, outputs), shared


def _fit_data():
    x = np.ones((4, 3), np.float32)
    return tf.data.Dataset.from_tensor_slices((x, np.zeros((4, 2), np.float32))).batch(2)


def test_the_installed_keras_is_the_checked_one_and_setup_cfg_caps_it():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    requirement = next(line.strip() for line in config["options"]["install_requires"].split("\n")
                       if line.strip().startswith("keras"))
    specifier = SpecifierSet(requirement.removeprefix("keras"))
    assert compat.KERAS_CHECKED in specifier, requirement
    assert keras.__version__ in specifier, (keras.__version__, requirement)
    major, minor = map(int, compat.KERAS_CHECKED.split(".")[:2])
    assert f"{major}.{minor + 1}.0" not in specifier  # an upper bound below the next minor


def test_inbound_nodes_give_every_call_of_a_layer():
    model, shared = _shared_dense_model()
    assert compat.call_count(shared) == 2
    assert [tuple(node.output_tensors[0].shape) for node in compat.calls(shared)] == [
        (None, 2), (None, 2)]
    # Input, shared x2, the multiply by 2, add: one node per call.
    nodes = compat.graph_nodes(model)
    assert sum(node.operation is shared for node in nodes) == 2
    assert len(nodes) == len(model.operations) + 1


def test_initial_epoch_set_in_on_train_begin_skips_epochs():
    model, _ = _shared_dense_model()
    model.compile(optimizer="sgd", loss="mse")
    started = []

    class StartAtTwo(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            compat.set_initial_epoch(self.model, 2)

        def on_epoch_begin(self, epoch, logs=None):
            started.append(epoch)

    history = model.fit(_fit_data(), epochs=3, shuffle=False, callbacks=[StartAtTwo()], verbose=0)
    assert started == [2] and len(history.history["loss"]) == 1


def test_backup_and_restore_calls_the_overridden_hooks_and_sets_its_state(tmp_path):
    for name in compat.OVERRIDDEN_HOOKS["keras.callbacks.BackupAndRestore"]:
        assert list(inspect.signature(getattr(keras.callbacks.BackupAndRestore, name)).parameters
                    ) == ["self"], name
    seen = []

    class Recording(keras.callbacks.BackupAndRestore):
        def _load_model(self):
            seen.append(("load",))

        def _save_model(self):
            seen.append(("save", *(getattr(self, attribute) for attribute in
                                   compat.READ_ATTRIBUTES["keras.callbacks.BackupAndRestore"])))

    model, _ = _shared_dense_model()
    model.compile(optimizer="sgd", loss="mse")
    model.fit(_fit_data(), epochs=2, shuffle=False, callbacks=[Recording(str(tmp_path))], verbose=0)
    # At an epoch-end save, _current_epoch counts the finished epochs (the epoch a resume
    # starts at) and _last_batch_seen is reset: AtomicBackupAndRestore stores both.
    assert seen == [("load",), ("save", 1, 0), ("save", 2, 0)]


def test_trainer_builds_through_maybe_symbolic_build_with_its_strategy():
    hook, = compat.OVERRIDDEN_HOOKS["keras.Model (TensorFlow trainer)"]
    parameters = inspect.signature(getattr(keras.Model, hook)).parameters
    assert list(parameters) == ["self", "iterator", "data_batch"]
    calls = []

    class Recording(keras.Model):
        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            calls.append(self._distribute_strategy)
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        inputs = keras.Input((3,))
        model = Recording(inputs, keras.layers.Dense(2)(inputs))
        model.compile(optimizer="sgd", loss="mse")
    attribute, = compat.READ_ATTRIBUTES["keras.Model (TensorFlow trainer)"]
    assert getattr(model, attribute) is strategy
    model.fit(_fit_data(), epochs=1, shuffle=False, verbose=0)
    assert calls == [strategy]


@pytest.mark.parametrize("module", ["keras_pose.models.fold", "keras_pose.training.callbacks"])
def test_private_keras_attributes_are_used_only_through_compat(module):
    """No module but compat touches ``_inbound_nodes`` or ``_initial_epoch``."""
    source = inspect.getsource(__import__(module, fromlist=["_"]))
    assert "._inbound_nodes" not in source and "._initial_epoch" not in source


def test_freeze_variables_turns_variables_into_constants_of_their_values():
    weight = tf.Variable([[2.0], [3.0]])

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    def apply(x):
        return tf.matmul(x, weight)

    frozen = compat.freeze_variables(apply.get_concrete_function())
    ops = {op.type for op in frozen.graph.get_operations()}
    assert "ReadVariableOp" not in ops and "VarHandleOp" not in ops, ops
    assert not frozen.variables
    weight.assign([[0.0], [0.0]])  # the frozen copy keeps the values it was frozen with
    np.testing.assert_allclose(frozen(tf.constant([[1.0, 1.0]]))[0].numpy(), [[5.0]])
