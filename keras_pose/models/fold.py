"""Inference copy of a network with each ``Conv2D -> BatchNormalization`` pair merged into one conv.

In inference a batch norm is a per-channel affine map, so a conv whose output feeds only a batch
norm can absorb it: ``kernel' = kernel * s``, ``bias' = (bias - mean) * s + beta`` with
``s = gamma / sqrt(variance + epsilon)``. The batch norm becomes an identity. TensorFlow's graph
optimizer then fuses the conv, its bias and a following ReLU into one kernel, which it cannot
do across a batch norm that follows a biased conv. Measured on a 2-core CPU, the 2-stack
hourglass at batch 1 (the network as a ``tf.function``): 65 of its 95 batch norms fold, and
86.5 ms -> 78.2 ms per image.

Export uses this for the serving graph; training keeps the original network (a folded network
can no longer update batch statistics).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from keras_pose.compat import graph_nodes


def foldable_pairs(model: keras.Model) -> dict[str, str]:
    """``{conv layer name: batch-norm layer name}`` for the pairs :func:`fold_batch_norms` merges.

    A pair qualifies when a ``Conv2D`` (channels last, no activation, called once) feeds a
    ``BatchNormalization`` over its channels (called once) and nothing else reads the conv's
    output (no other layer, not a model output).
    """
    nodes = graph_nodes(model)
    calls: dict[int, int] = {}
    readers: dict[int, int] = {}
    producer: dict[int, object] = {}
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        for tensor in node.input_tensors:
            readers[id(tensor)] = readers.get(id(tensor), 0) + 1
        for tensor in node.output_tensors:
            producer[id(tensor)] = node.operation
    for tensor in keras.tree.flatten(model.outputs):
        readers[id(tensor)] = readers.get(id(tensor), 0) + 1

    pairs = {}
    for node in nodes:
        norm = node.operation
        if not isinstance(norm, layers.BatchNormalization) or calls[id(norm)] != 1:
            continue
        if len(node.input_tensors) != 1:
            continue
        tensor = node.input_tensors[0]
        conv = producer.get(id(tensor))
        if (type(conv) is not layers.Conv2D or calls[id(conv)] != 1
                or conv.data_format != "channels_last"
                or conv.activation is not keras.activations.linear
                or norm.axis not in (-1, len(tensor.shape) - 1)
                or readers[id(tensor)] != 1):
            continue
        pairs[conv.name] = norm.name
    return pairs


def _folded_weights(conv: layers.Conv2D, norm: layers.BatchNormalization):
    def numpy(variable):
        return keras.ops.convert_to_numpy(variable).astype("float64")

    kernel = numpy(conv.kernel)
    bias = numpy(conv.bias) if conv.use_bias else 0.0
    gamma = numpy(norm.gamma) if norm.scale else 1.0
    beta = numpy(norm.beta) if norm.center else 0.0
    scale = gamma / np.sqrt(numpy(norm.moving_variance) + norm.epsilon)
    return kernel * scale, (bias - numpy(norm.moving_mean)) * scale + beta


def fold_batch_norms(model: keras.Model) -> keras.Model:
    """A new functional model, for inference only, with the batch norms of
    :func:`foldable_pairs` merged into their convs.

    Every other layer is a fresh copy with the same weights, so the original model is left
    untouched. Outputs match the original's in inference mode to float rounding.

    Args:
        model: a functional model (any keras-pose network).

    Returns:
        A ``keras.Model`` with the same inputs and outputs (names and structure).

    Example:
        >>> folded = fold_batch_norms(network)
        >>> heatmaps = folded(images, training=False)[-1]
    """
    pairs = foldable_pairs(model)
    norms = set(pairs.values())

    def clone(layer):
        if layer.name in norms:
            return layers.Identity(name=layer.name)
        config = layer.get_config()
        if layer.name in pairs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    def call(layer, *args, **kwargs):
        if layer.name in norms:  # an Identity: drop the batch norm's training/mask arguments
            return layer(args[0])
        return layer(*args, **kwargs)

    folded = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for layer in model.layers:
        if layer.name in norms or not layer.weights:
            continue
        target = folded.get_layer(layer.name)
        if layer.name in pairs:
            kernel, bias = _folded_weights(layer, model.get_layer(pairs[layer.name]))
            dtype = keras.backend.standardize_dtype(target.kernel.dtype)
            target.set_weights([kernel.astype(dtype), bias.astype(dtype)])
        else:
            target.set_weights(layer.get_weights())
    return folded


def cast_network(model: keras.Model, dtype: str) -> keras.Model:
    """A copy of a functional network whose layers compute and keep their weights in ``dtype``.

    Measured on the 2-core AVX512-BF16 CPU (AMD EPYC), the folded 2-stack hourglass at 256 px
    as a ``tf.function``, timed alternately in one process while other jobs ran (1-min load
    1.4-3.7): a ``bfloat16`` copy (bfloat16 weights) ran batch 1 in 104 ms and batch 8 in
    1304 ms, a ``mixed_bfloat16`` copy (float32 weights cast at every call) 120 ms and 1403 ms,
    float32 380 ms and 3001 ms. Freezing the bfloat16 weights into graph constants (oneDNN may
    then cache their reordered layout) was not faster (150 ms vs 139 ms at load 6.7).
    Inputs of another float dtype are cast by the first layer.

    Args:
        model: a functional model (e.g. ``keras_pose.models.fold.fold_batch_norms``'s copy).
        dtype: a Keras dtype policy name, e.g. ``"bfloat16"``.

    Returns:
        A ``keras.Model`` with the same layer names and structure; the original is untouched.
    """
    def clone(layer):
        config = layer.get_config()
        if not isinstance(layer, keras.layers.InputLayer) and "dtype" in config:
            config["dtype"] = dtype
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.weights:  # set_weights casts to each variable's dtype
            copy.get_layer(layer.name).set_weights(layer.get_weights())
    return copy
