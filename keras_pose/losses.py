"""Weight-masked losses for heatmap and coordinate outputs (``keras.ops``, backend-agnostic).

Every loss returns the mean over batch and keypoints of a per-keypoint error times its weight
(0 for unlabeled keypoints and for keypoints pushed out of frame), divided by the constant
``batch * keypoints``: masked keypoints add nothing, and the loss never rewards predicting
zeros for them. Predictions are cast to float32 so mixed-precision outputs are scored exactly.
"""

from __future__ import annotations

from keras import ops

from keras_pose.outputs import COORDINATE_L2, MSE, SOFTMAX_CROSS_ENTROPY


def _masked_mean(per_keypoint, weights):
    weights = ops.cast(weights, "float32")
    return ops.sum(per_keypoint * weights) / ops.cast(ops.size(weights), "float32")


def heatmap_mse(target, pred, weights):
    """Mean squared error per heatmap channel: target/pred [B, h, w, K], weights [B, K]."""
    pred = ops.cast(pred, "float32")
    per_keypoint = ops.mean(ops.square(pred - target), axis=(1, 2))
    return _masked_mean(per_keypoint, weights)


def spatial_softmax_cross_entropy(target, logits, weights):
    """Cross-entropy of a softmax over all h*w positions of each channel (Chained Prediction).

    The Gaussian target is normalized to sum to 1 per channel, so it is a distribution over
    positions; an all-zero target (weight 0) contributes nothing.
    """
    logits = ops.cast(logits, "float32")
    shape = ops.shape(logits)
    flat_logits = ops.reshape(logits, (shape[0], -1, shape[3]))
    flat_target = ops.reshape(target, (shape[0], -1, shape[3]))
    flat_target = flat_target / ops.maximum(ops.sum(flat_target, axis=1, keepdims=True), 1e-12)
    log_probs = ops.log_softmax(flat_logits, axis=1)
    per_keypoint = -ops.sum(flat_target * log_probs, axis=1)
    return _masked_mean(per_keypoint, weights)


def coordinate_l2(target, pred, weights):
    """Squared L2 distance of normalized coordinates: target/pred [B, K, 2], weights [B, K]."""
    pred = ops.cast(pred, "float32")
    per_keypoint = ops.sum(ops.square(pred - target), axis=-1)
    return _masked_mean(per_keypoint, weights)


LOSSES = {
    MSE: heatmap_mse,
    SOFTMAX_CROSS_ENTROPY: spatial_softmax_cross_entropy,
    COORDINATE_L2: coordinate_l2,
}


def get_loss(name: str):
    """The loss function a model's ``OutputSpec.loss`` names."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"Unknown loss {name!r}; valid losses: {sorted(LOSSES)}") from None
