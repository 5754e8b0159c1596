"""The Keras (and one TensorFlow) private APIs keras-pose relies on, named in one place.

Keras 3 has no public way to do a few things keras-pose needs: walk every call of a layer in a
functional graph (batch-norm folding, the FLOP count), resume ``fit`` at a given epoch from a
backup of our own format, replace the backup's file handling (atomic writes), and build a
trainer's optimizer under a strategy without reducing an input batch. Each use goes through
this module or is one of the overridden hooks listed below; ``tests/test_compat.py`` checks
every one against the installed Keras, so an upgrade that changes one fails there, by name,
rather than somewhere in a training run.

TensorFlow has no public way to freeze a concrete function's variables into constants, which the
TFLite export needs (:func:`freeze_variables`).

Checked against Keras ``KERAS_CHECKED``; ``setup.cfg`` caps ``keras`` below the next minor
version for that reason.
"""

from __future__ import annotations

import keras
from tensorflow.python.framework import convert_to_constants

KERAS_CHECKED = "3.15.1"

# Private methods keras-pose overrides, by the public class that defines them, and private
# attributes it reads there. ``tests/test_compat.py`` checks that Keras still calls each hook
# and sets each attribute.
OVERRIDDEN_HOOKS = {
    "keras.callbacks.BackupAndRestore": ("_load_model", "_save_model"),
    "keras.Model (TensorFlow trainer)": ("_maybe_symbolic_build",),
}
READ_ATTRIBUTES = {
    "keras.callbacks.BackupAndRestore": ("_current_epoch", "_last_batch_seen"),
    "keras.Model (TensorFlow trainer)": ("_distribute_strategy",),
}


def graph_nodes(model: keras.Model) -> list:
    """Every node (one call of an operation) of a functional model's graph."""
    return [node for operation in model.operations for node in operation._inbound_nodes]


def call_count(layer: keras.Operation) -> int:
    """How many times ``layer`` is called in the graphs it was built into."""
    return len(layer._inbound_nodes)


def calls(layer: keras.Operation) -> list:
    """The nodes of ``layer``: one per call, each with ``input_tensors``/``output_tensors``."""
    return list(layer._inbound_nodes)


def set_initial_epoch(model: keras.Model, epoch: int) -> None:
    """Make the ``fit`` in progress start at ``epoch`` (from ``on_train_begin``), as
    ``keras.callbacks.BackupAndRestore`` does for its own backups."""
    model._initial_epoch = epoch


def freeze_variables(concrete_function):
    """``concrete_function`` with its variables replaced by constants of their current values.

    TFLite's converter keeps Keras 3 variables as resource variables (``READ_VARIABLE`` ops that
    an interpreter without an initializer signature reads as garbage); a frozen function gives
    constants.
    """
    return convert_to_constants.convert_variables_to_constants_v2(concrete_function)
