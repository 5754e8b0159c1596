"""Chained Prediction network.

Reference:
    Gkioxari, Toshev, Jaitly. "Chained Predictions Using Convolutional Neural Networks",
    ECCV 2016, arXiv:1605.02346. Layer sizes follow the public PyTorch code the poster's
    numbers come from (github.com/Naman-ntc/Pytorch-Human-Pose-Estimation).
"""

from __future__ import annotations

import keras
from keras import layers

from keras_pose.models.base import PoseModel
from keras_pose.models.layers import (
    SpatialNormalize,
    SpatialSoftmax,
    apply_resnet,
    batch_norm,
    rescale_images,
)
from keras_pose.outputs import HEATMAPS, MSE, SOFTMAX_CROSS_ENTROPY, OutputSpec

BACKBONES = ("resnet34", "resnet50")
LOSSES = (SOFTMAX_CROSS_ENTROPY, MSE)
OUTPUT_NAME = "heatmaps"


def _make_deception(hidden: int, name: str) -> list:
    """Layers of one "deception" decoder (deconvolution + inception), 8x8 -> 32x32x1.

    Conv1x1 to hidden/2, then twice the sum of three stride-2 transposed convs (2x2, 4x4, 6x6),
    then a 3x3 conv to one map (float32). No activations, as in the public code.
    """
    width = hidden // 2
    made = [layers.Conv2D(width, 1, name=f"{name}_reduce")]
    for level in (1, 2):
        made.append([layers.Conv2DTranspose(width, k, strides=2, padding="same",
                                            name=f"{name}_up{level}_k{k}") for k in (2, 4, 6)])
        made.append(layers.Add(name=f"{name}_up{level}_sum"))
    made.append(layers.Conv2D(1, 3, padding="same", dtype="float32", name=f"{name}_out"))
    return made


def _apply_deception(h, made):
    x = made[0](h)
    for index in (1, 3):
        x = made[index + 1]([conv(x) for conv in made[index]])
    return made[-1](x)


def _make_output_to_hidden(hidden: int, kernel_size: int, name: str) -> list:
    """Layers encoding an earlier joint's map into the hidden state (32x32x1 -> 8x8xhidden).

    Conv1x1(1 -> hidden), then twice [2x2 average pool, Conv k x k, BN]. The public code uses
    1x1 convs with stride 2 here, which sample one pixel in four and can miss a narrow
    Gaussian peak entirely; pooling first keeps the parameter count and sees every pixel.
    """
    return [
        layers.Conv2D(hidden, 1, name=f"{name}_embed"),
        layers.AveragePooling2D(2, name=f"{name}_pool1"),
        layers.Conv2D(hidden, kernel_size, padding="same", name=f"{name}_conv1"),
        batch_norm(f"{name}_bn1"),
        layers.AveragePooling2D(2, name=f"{name}_pool2"),
        layers.Conv2D(hidden, kernel_size, padding="same", name=f"{name}_conv2"),
        batch_norm(f"{name}_bn2"),
    ]


def _apply_sequence(x, made):
    for layer in made:
        x = layer(x)
    return x


class _ChainLayers:
    """The chain's layers, created once and applied to either path (not a Keras object, so
    nothing here is tracked twice or saved twice)."""

    def __init__(self, num_keypoints: int, hidden: int, h2h_kernel_size: int,
                 o2h_kernel_size: int, loss: str):
        k = num_keypoints
        self.deception = [_make_deception(hidden, f"step_{t + 1:02d}_deception") for t in range(k)]
        self.hidden_to_hidden = [None] + [
            [layers.Conv2D(hidden, h2h_kernel_size, padding="same",
                           name=f"step_{t + 1:02d}_h2h_conv"),
             batch_norm(f"step_{t + 1:02d}_h2h_bn")] for t in range(1, k)]
        self.output_to_hidden = [
            [_make_output_to_hidden(hidden, o2h_kernel_size, f"step_{t + 1:02d}_o2h_{j + 1:02d}")
             for j in range(t)] for t in range(k)]
        self.update = [None] + [(layers.Add(name=f"step_{t + 1:02d}_sum"),
                                 layers.ReLU(name=f"step_{t + 1:02d}_relu")) for t in range(1, k)]
        # What the chain sees of a map: a distribution over positions for the softmax loss
        # (the softmax of the logits, or a target map divided by its sum), the map itself for
        # MSE. With this, teacher maps of any positive scale work.
        if loss == SOFTMAX_CROSS_ENTROPY:
            self.predicted_feed = SpatialSoftmax(dtype="float32", name="chain_feed_softmax")
            self.teacher_feed = SpatialNormalize(dtype="float32", name="chain_feed_normalize")
        else:
            self.predicted_feed = None
            self.teacher_feed = None
        if k > 1:
            self.collect = layers.Concatenate(axis=-1, dtype="float32", name=OUTPUT_NAME)
        else:
            self.collect = layers.Identity(dtype="float32", name=OUTPUT_NAME)

    def apply(self, h, teacher_maps=None):
        """Runs the chain from h_0; feeds the teacher maps [B,h,w,K] if given, else its own."""
        maps, feeds = [], []
        teacher = None
        if teacher_maps is not None and self.teacher_feed is not None:
            teacher = self.teacher_feed(teacher_maps)
        elif teacher_maps is not None:
            teacher = teacher_maps
        for t, deception in enumerate(self.deception):
            if t > 0:
                conv, bn = self.hidden_to_hidden[t]
                terms = [bn(conv(h))]
                terms += [_apply_sequence(feeds[j], made)
                          for j, made in enumerate(self.output_to_hidden[t])]
                add, relu = self.update[t]
                h = relu(add(terms) if len(terms) > 1 else terms[0])
            prediction = _apply_deception(h, deception)
            maps.append(prediction)
            if t + 1 < len(self.deception):
                if teacher is not None:
                    feeds.append(teacher[..., t:t + 1])
                elif self.predicted_feed is not None:
                    feeds.append(self.predicted_feed(prediction))
                else:
                    feeds.append(prediction)
        return self.collect(maps if len(maps) > 1 else maps[0])


def _validate(num_keypoints, input_shape, backbone, hidden_features, loss, h2h, o2h):
    for key, value, low in (("num_keypoints", num_keypoints, 1),
                            ("hidden_features", hidden_features, 2),
                            ("h2h_kernel_size", h2h, 1), ("o2h_kernel_size", o2h, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{key} must be an integer >= {low}, received {key}={value!r}")
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, received backbone={backbone!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, received loss={loss!r}")
    if (len(input_shape) != 3 or input_shape[2] != 3 or input_shape[0] % 32
            or input_shape[1] % 32):
        raise ValueError("input_shape must be (H, W, 3) with H and W multiples of 32 (ResNet "
                         f"stride), received input_shape={tuple(input_shape)}")


@keras.saving.register_keras_serializable(package="keras_pose")
class ChainedPrediction(PoseModel):
    """Chained Prediction network (Gkioxari et al., ECCV 2016): one joint per chain step.

    A ResNet encoder (stride 32) gives h_0 = Conv1x1(features) with ``hidden_features``
    channels. Step t predicts joint t's map with its own "deception" decoder (stride 32 -> 8:
    32x32 maps for a 256 input) from h_t, where
    ``h_t = ReLU(BN(Conv(h_{t-1})) + sum_{j<t} o2h_{t,j}(map_j))``; all weights are untied
    across steps, the chain runs in keypoint index order.

    Output: a single tensor ``heatmaps`` [B, H/8, W/8, K] whose channel t is step t's
    prediction; per-channel supervision is the paper's per-step supervision.
    ``output_spec.loss`` is ``"softmax_cross_entropy"`` (the paper: the outputs are logits of
    a spatial softmax) or ``"mse"`` (the public code: the outputs are Gaussian heatmaps).

    Two paths share all weights: this model feeds the chain its own predictions (inference;
    in softmax mode the spatial softmax of each map), ``teacher_forcing_model`` takes
    ``{"images", "teacher_heatmaps" [B, H/8, W/8, K]}`` and feeds the given maps (training;
    in softmax mode each map is divided by its spatial sum, so Gaussian targets of any peak
    height work). Feeding a model's own fed maps as teacher maps reproduces its outputs.

    Trainable parameters at 16 keypoints: 24,302,288 (ResNet-34; spec 24.4M, which also
    counts the public code's never-called BNs and o2h blocks) and 26,623,952 (ResNet-50 with a
    1x1 2048 -> 64 conv for h_0; poster 26.5M, whose code folds the 2048 channels into the
    batch instead).

    Args:
        num_keypoints: chain length K.
        input_shape: (H, W, 3), H and W multiples of 32.
        backbone: ``"resnet34"`` or ``"resnet50"`` (built from scratch).
        hidden_features: channels of the hidden state.
        loss: ``"softmax_cross_entropy"`` or ``"mse"``.
        h2h_kernel_size: kernel of the hidden-to-hidden convs (1 in the public code).
        o2h_kernel_size: kernel of the output-to-hidden convs (1 in the public code).
        **kwargs: ``name``, ``trainable``.

    Example:
    >>> model = ChainedPrediction(num_keypoints=3, input_shape=(64, 64, 3))
    >>> tuple(model.outputs[0].shape)
    (None, 8, 8, 3)
    """

    def __init__(self, num_keypoints: int = 17, input_shape: tuple[int, int, int] | None = None,
                 backbone: str = "resnet34", hidden_features: int = 64,
                 loss: str = SOFTMAX_CROSS_ENTROPY, h2h_kernel_size: int = 1,
                 o2h_kernel_size: int = 1, **kwargs):
        input_shape = tuple(int(v) for v in (input_shape or (256, 256, 3)))
        _validate(num_keypoints, input_shape, backbone, hidden_features, loss, h2h_kernel_size,
                  o2h_kernel_size)
        images = keras.Input(shape=input_shape, name="images")
        features = apply_resnet(rescale_images(images, "rescaling"), backbone, "encoder")
        h0 = layers.Conv2D(hidden_features, 1, name="chain_init")(features)
        chain = _ChainLayers(num_keypoints, hidden_features, h2h_kernel_size, o2h_kernel_size,
                             loss)
        heatmaps = chain.apply(h0)
        kwargs.setdefault("name", "chained_prediction")
        super().__init__(inputs=images, outputs=heatmaps, **kwargs)
        self.image_shape = input_shape
        self.backbone = backbone
        self.hidden_features = hidden_features
        self.loss_name = loss
        self.h2h_kernel_size = h2h_kernel_size
        self.o2h_kernel_size = o2h_kernel_size
        self._output_spec = OutputSpec(kind=HEATMAPS, stride=8, loss=loss,
                                       output_names=(OUTPUT_NAME,))
        # Plain attributes that Keras does not track: the chain's layers are already tracked
        # through the graph, the teacher model is built lazily from the same layer objects.
        object.__setattr__(self, "_chain", chain)
        object.__setattr__(self, "_chain_h0", h0)
        object.__setattr__(self, "_teacher_model", None)

    @property
    def teacher_forcing_model(self) -> keras.Model:
        """Model sharing this model's weights: {"images", "teacher_heatmaps"} -> same output."""
        if self._teacher_model is None:
            encoder = keras.Model(self.inputs[0], self._chain_h0, name="chain_encoder")
            images = keras.Input(shape=self.image_shape, name="images")
            teacher = keras.Input(shape=tuple(self.outputs[0].shape[1:]),
                                  name="teacher_heatmaps")
            heatmaps = self._chain.apply(encoder(images), teacher_maps=teacher)
            model = keras.Model({"images": images, "teacher_heatmaps": teacher}, heatmaps,
                                name=f"{self.name}_teacher_forcing")
            object.__setattr__(self, "_teacher_model", model)
        return self._teacher_model

    def __dir__(self):
        # Keras' .keras writer visits every attribute in dir(); keep the lazily built teacher
        # model out of it so saving neither builds it nor stores it.
        return [a for a in super().__dir__()
                if a not in ("teacher_forcing_model", "_teacher_model", "_chain", "_chain_h0")]

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_keypoints": self.num_keypoints,
            "input_shape": self.image_shape,
            "backbone": self.backbone,
            "hidden_features": self.hidden_features,
            "loss": self.loss_name,
            "h2h_kernel_size": self.h2h_kernel_size,
            "o2h_kernel_size": self.o2h_kernel_size,
        }
