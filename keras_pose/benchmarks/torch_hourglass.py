"""A PyTorch port of Newell et al.'s Stacked Hourglass, the baseline of the benchmarks.

Newell, Yang and Deng, "Stacked Hourglass Networks for Human Pose Estimation", ECCV 2016
(``anewell/pose-hg-train``, ``src/models/hg.lua``). Written for ``tools/benchmark.py``: the same
network and loss as ``build_model("stacked_hourglass", num_modules=1)`` of keras-pose, so that the
two frameworks are timed on identical arithmetic:

- pre-activation bottleneck residuals (BN-ReLU-Conv1x1, BN-ReLU-Conv3x3, BN-ReLU-Conv1x1, skip
  convolution only when the channel count changes);
- stem Conv7x7/2 + BN + ReLU, Res(64->128), MaxPool 2, Res(128->128), Res(128->256) (with
  ``num_features=256``: the stem widths are num_features/4 and /2, as in keras-pose);
- recursive hourglass (up branch, max-pool, ``depth`` levels, nearest 2x upsampling);
- per stack Res -> Conv1x1 + BN + ReLU -> Conv1x1 to keypoint heatmaps, and the merge
  ``x + Conv1x1(features) + Conv1x1(heatmaps)`` between stacks;
- loss: sum over stacks of the weight-masked heatmap MSE of ``keras_pose.losses``.

The model rescales [0, 255] images to [-1, 1] itself, like the Keras model. Its 7x7/2 stem
convolution pads like Keras ``padding="same"`` (2 before, 3 after on even sizes) so Keras
weights copied with :func:`copy_keras_weights` give the same outputs; everything else pads
symmetrically in both frameworks. 6,570,400 trainable parameters for 2 stacks at 16 keypoints
(``docs/models.md`` section 3).

This module imports ``torch``: it is only imported when torch is installed (extra ``bench``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Torch's BatchNorm momentum 0.1 is Keras's 0.9 (the two define it from opposite sides).
BN_MOMENTUM = 0.1
BN_EPSILON = 1e-5


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)


def _same_padding(size: int, kernel: int, stride: int) -> int:
    """Total padding of TF/Keras ``padding="same"`` along one axis."""
    out = -(-size // stride)
    return max((out - 1) * stride + kernel - size, 0)


class Residual(nn.Module):
    """Pre-activation bottleneck residual ``Residual(in, out)`` of the hourglass code."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        self.bn1 = _bn(in_channels)
        self.conv1 = nn.Conv2d(in_channels, mid, 1)
        self.bn2 = _bn(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1)
        self.bn3 = _bn(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x):
        y = self.conv1(F.relu(self.bn1(x)))
        y = self.conv2(F.relu(self.bn2(y)))
        y = self.conv3(F.relu(self.bn3(y)))
        return (x if self.skip is None else self.skip(x)) + y


class Hourglass(nn.Module):
    """``Hourglass(n, f)``: up branch + (pool, residual, inner hourglass, residual, upsample)."""

    def __init__(self, depth: int, features: int, num_modules: int = 1):
        super().__init__()

        def residuals():
            return nn.Sequential(*[Residual(features, features) for _ in range(num_modules)])

        self.up = residuals()
        self.low1 = residuals()
        self.low2 = Hourglass(depth - 1, features, num_modules) if depth > 1 else residuals()
        self.low3 = residuals()

    def forward(self, x):
        up = self.up(x)
        low = self.low3(self.low2(self.low1(F.max_pool2d(x, 2))))
        return up + F.interpolate(low, scale_factor=2, mode="nearest")


class StackedHourglass(nn.Module):
    """Newell's stacked hourglass; ``forward`` returns the list of per-stack heatmaps (NCHW).

    Args:
        num_keypoints: heatmap channels.
        num_stacks: hourglasses in sequence (one output each).
        num_features: channels inside the hourglasses (256 in the paper).
        depth: pooling levels of each hourglass (4: 64 -> 4 at a 256 input).
        num_modules: residuals at each hourglass location (1 in the paper).
    """

    def __init__(self, num_keypoints: int = 16, num_stacks: int = 2, num_features: int = 256,
                 depth: int = 4, num_modules: int = 1):
        super().__init__()
        if num_stacks < 1 or depth < 1 or num_modules < 1:
            raise ValueError(f"num_stacks, depth and num_modules must be >= 1, received "
                             f"{num_stacks}, {depth}, {num_modules}")
        f = num_features
        self.num_stacks = num_stacks
        self.stem_conv = nn.Conv2d(3, f // 4, 7, stride=2)
        self.stem_bn = _bn(f // 4)
        self.stem_res1 = Residual(f // 4, f // 2)
        self.stem_res2 = Residual(f // 2, f // 2)
        self.stem_res3 = Residual(f // 2, f)
        self.hourglasses = nn.ModuleList(
            [Hourglass(depth, f, num_modules) for _ in range(num_stacks)])
        self.residuals = nn.ModuleList(
            [nn.Sequential(*[Residual(f, f) for _ in range(num_modules)])
             for _ in range(num_stacks)])
        self.features = nn.ModuleList([nn.Conv2d(f, f, 1) for _ in range(num_stacks)])
        self.features_bn = nn.ModuleList([_bn(f) for _ in range(num_stacks)])
        self.heads = nn.ModuleList([nn.Conv2d(f, num_keypoints, 1) for _ in range(num_stacks)])
        self.merge_features = nn.ModuleList([nn.Conv2d(f, f, 1) for _ in range(num_stacks - 1)])
        self.merge_heatmaps = nn.ModuleList(
            [nn.Conv2d(num_keypoints, f, 1) for _ in range(num_stacks - 1)])

    def forward(self, images):
        """images: float [B, 3, H, W] in [0, 255]; returns ``num_stacks`` heatmaps [B, K, h, w]."""
        x = images * (1.0 / 127.5) - 1.0
        # Keras padding="same" for the 7x7 stride-2 conv: the odd extra pixel goes after.
        pad_h, pad_w = _same_padding(x.shape[2], 7, 2), _same_padding(x.shape[3], 7, 2)
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        x = F.relu(self.stem_bn(self.stem_conv(x)))
        x = self.stem_res1(x)
        x = F.max_pool2d(x, 2)
        x = self.stem_res3(self.stem_res2(x))
        outputs = []
        for i in range(self.num_stacks):
            y = self.residuals[i](self.hourglasses[i](x))
            y = F.relu(self.features_bn[i](self.features[i](y)))
            heatmaps = self.heads[i](y)
            outputs.append(heatmaps)
            if i < self.num_stacks - 1:
                x = x + self.merge_features[i](y) + self.merge_heatmaps[i](heatmaps)
        return outputs


def masked_mse(target, prediction, weights):
    """``keras_pose.losses.heatmap_mse`` in torch: NCHW heatmaps, weights [B, K]."""
    per_keypoint = torch.mean(torch.square(prediction.float() - target), dim=(2, 3))
    return torch.sum(per_keypoint * weights) / weights.numel()


def summed_loss(outputs, target, weights):
    """Sum over stacks of the masked MSE against the same target (Newell's loss)."""
    return sum(masked_mse(target, out, weights) for out in outputs)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (BN running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------
# Weight copy from the Keras model (faithfulness check)


def _keras_conv(layer) -> list[np.ndarray]:
    kernel, bias = (np.asarray(w) for w in layer.get_weights())
    return [kernel.transpose(3, 2, 0, 1), bias]  # HWIO -> OIHW


def _load_conv(conv: nn.Conv2d, layer) -> None:
    kernel, bias = _keras_conv(layer)
    if tuple(conv.weight.shape) != kernel.shape:
        raise ValueError(f"Keras layer {layer.name!r} has kernel {kernel.shape}, the torch conv "
                         f"expects {tuple(conv.weight.shape)}")
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
        conv.bias.copy_(torch.from_numpy(bias))


def _load_bn(bn: nn.BatchNorm2d, layer) -> None:
    gamma, beta, mean, variance = (np.asarray(w) for w in layer.get_weights())
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(gamma))
        bn.bias.copy_(torch.from_numpy(beta))
        bn.running_mean.copy_(torch.from_numpy(mean))
        bn.running_var.copy_(torch.from_numpy(variance))


def _load_residual(block: Residual, layers: dict, name: str) -> None:
    for i in (1, 2, 3):
        _load_bn(getattr(block, f"bn{i}"), layers[f"{name}_bn{i}"])
        _load_conv(getattr(block, f"conv{i}"), layers[f"{name}_conv{i}"])
    if block.skip is not None:
        _load_conv(block.skip, layers[f"{name}_skip"])


def _load_hourglass(hg: Hourglass, layers: dict, depth: int, name: str) -> None:
    level = f"{name}_hg{depth}"
    for branch, group in (("up", hg.up), ("low1", hg.low1), ("low3", hg.low3)):
        for m, block in enumerate(group, start=1):
            _load_residual(block, layers, f"{level}_{branch}_res{m}")
    if depth > 1:
        _load_hourglass(hg.low2, layers, depth - 1, name)
    else:
        for m, block in enumerate(hg.low2, start=1):
            _load_residual(block, layers, f"{level}_bottom_res{m}")


def copy_keras_weights(model: StackedHourglass, keras_model) -> None:
    """Copy the weights of a keras-pose ``StackedHourglass`` (``variant="newell"``, no
    highways) into this port, layer by layer by Keras layer name.

    Raises:
        ValueError: the Keras model is another variant or its shapes differ from the port's.
    """
    if getattr(keras_model, "variant", "newell") != "newell" or getattr(
            keras_model, "highways", False):
        raise ValueError("the torch port mirrors variant='newell' without highways; received "
                         f"variant={keras_model.variant!r}, highways={keras_model.highways}")
    if keras_model.num_stacks != model.num_stacks:
        raise ValueError(f"the Keras model has {keras_model.num_stacks} stacks, the port "
                         f"{model.num_stacks}")
    layers = {layer.name: layer for layer in keras_model.layers}
    depth = keras_model.depth
    _load_conv(model.stem_conv, layers["stem_conv"])
    _load_bn(model.stem_bn, layers["stem_bn"])
    for i in (1, 2, 3):
        _load_residual(getattr(model, f"stem_res{i}"), layers, f"stem_res{i}")
    for i in range(model.num_stacks):
        name = f"stack_{i + 1}"
        _load_hourglass(model.hourglasses[i], layers, depth, name)
        for m, block in enumerate(model.residuals[i], start=1):
            _load_residual(block, layers, f"{name}_head_res{m}")
        _load_conv(model.features[i], layers[f"{name}_lin_conv"])
        _load_bn(model.features_bn[i], layers[f"{name}_lin_bn"])
        _load_conv(model.heads[i], layers[name])
        if i < model.num_stacks - 1:
            _load_conv(model.merge_features[i], layers[f"{name}_merge_features"])
            _load_conv(model.merge_heatmaps[i], layers[f"{name}_merge_heatmaps"])


def from_keras(keras_model) -> StackedHourglass:
    """A port with the same configuration and weights as a keras-pose ``StackedHourglass``."""
    model = StackedHourglass(
        num_keypoints=keras_model.num_keypoints, num_stacks=keras_model.num_stacks,
        num_features=keras_model.num_features, depth=keras_model.depth,
        num_modules=keras_model.num_modules)
    copy_keras_weights(model, keras_model)
    return model
