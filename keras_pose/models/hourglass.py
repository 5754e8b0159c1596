"""Stacked Hourglass and Residual Stacked Hourglass networks.

References:
    Newell, Yang, Deng. "Stacked Hourglass Networks for Human Pose Estimation", ECCV 2016,
    arXiv:1603.06937 (official Torch code: github.com/anewell/pose-hg-train).
    Yoo, Peng, Aggarwal. "Residual Stacked Hourglass Networks for Human Pose Estimation",
    JHU 601.482 project poster, 2019 (see docs/models.md section 4).
"""

from __future__ import annotations

import keras
from keras import layers

from keras_pose.models.base import PoseModel
from keras_pose.models.layers import apply_preact_residual, batch_norm, rescale_images
from keras_pose.outputs import HEATMAPS, MSE, SOFTMAX_CROSS_ENTROPY, OutputSpec

VARIANTS = ("newell", "nj")
LOSSES = (MSE, SOFTMAX_CROSS_ENTROPY)


def apply_hourglass(x, depth: int, num_modules: int, filters: int, name: str):
    """One hourglass, recursively: ``up(x) + upsample(inner(pool(x)))``.

    Every location holds ``num_modules`` residuals; ``depth`` poolings reach the bottom, which
    holds one more group of residuals. Depth 4 with one module = 13 residuals.

    Args:
        x: tensor [B, H, W, filters], H and W divisible by 2**depth.
        depth: number of 2x poolings.
        num_modules: residual blocks per location.
        filters: feature width.
        name: prefix; the level is appended (``stack_1_hg4_up_res1``).

    Returns:
        Tensor of the same shape as ``x``.
    """
    level = f"{name}_hg{depth}"
    up = x
    for m in range(1, num_modules + 1):
        up = apply_preact_residual(up, filters, f"{level}_up_res{m}")
    low = layers.MaxPooling2D(2, name=f"{level}_pool")(x)
    for m in range(1, num_modules + 1):
        low = apply_preact_residual(low, filters, f"{level}_low1_res{m}")
    if depth > 1:
        low = apply_hourglass(low, depth - 1, num_modules, filters, name)
    else:
        for m in range(1, num_modules + 1):
            low = apply_preact_residual(low, filters, f"{level}_bottom_res{m}")
    for m in range(1, num_modules + 1):
        low = apply_preact_residual(low, filters, f"{level}_low3_res{m}")
    low = layers.UpSampling2D(2, interpolation="nearest", name=f"{level}_upsample")(low)
    return layers.Add(name=f"{level}_add")([up, low])


def _apply_stem(images, filters: int, variant: str):
    """Stride-4 stem: 7x7/2 conv, Res(f/4 -> f/2), 2x max-pool, Res(f/2), Res(f/2 -> f)."""
    x = rescale_images(images, "rescaling")
    if variant == "newell":
        # Torch code: conv -> BN -> ReLU.
        x = layers.Conv2D(filters // 4, 7, strides=2, padding="same", name="stem_conv")(x)
        x = batch_norm("stem_bn")(x)
        x = layers.ReLU(name="stem_relu")(x)
    else:
        # The PyTorch code behind the poster: BN -> ReLU -> conv on the image.
        x = batch_norm("stem_bn")(x)
        x = layers.ReLU(name="stem_relu")(x)
        x = layers.Conv2D(filters // 4, 7, strides=2, padding="same", name="stem_conv")(x)
    x = apply_preact_residual(x, filters // 2, "stem_res1")
    x = layers.MaxPooling2D(2, name="stem_pool")(x)
    x = apply_preact_residual(x, filters // 2, "stem_res2")
    return apply_preact_residual(x, filters, "stem_res3")


def _validate(num_keypoints, input_shape, num_stacks, num_modules, num_features, depth,
              variant, loss):
    for key, value, low in (("num_keypoints", num_keypoints, 1), ("num_stacks", num_stacks, 1),
                            ("num_modules", num_modules, 1), ("depth", depth, 1),
                            ("num_features", num_features, 8)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{key} must be an integer >= {low}, received {key}={value!r}")
    if num_features % 4:
        raise ValueError("num_features must be a multiple of 4 (the stem uses num_features/4 "
                         f"and /2), received num_features={num_features}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, received variant={variant!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, received loss={loss!r}")
    multiple = 4 * 2**depth
    if (len(input_shape) != 3 or input_shape[2] != 3 or input_shape[0] % multiple
            or input_shape[1] % multiple):
        raise ValueError(f"input_shape must be (H, W, 3) with H and W multiples of {multiple} "
                         f"(stride-4 stem, then depth={depth} poolings), "
                         f"received input_shape={tuple(input_shape)}")


@keras.saving.register_keras_serializable(package="keras_pose")
class StackedHourglass(PoseModel):
    """Stacked Hourglass network (Newell et al., ECCV 2016): one heatmap output per stack.

    Stem (stride 4) then ``num_stacks`` hourglasses; after each, ``num_modules`` residuals, a
    1x1 "linear" block and a 1x1 conv to K heatmaps (output ``stack_i``, float32). Between
    stacks the features and the heatmaps are mapped back by 1x1 convs and added to the stack's
    input (intermediate supervision). All residuals are pre-activation bottlenecks.

    ``variant="newell"`` follows the official Torch code (stem conv-BN-ReLU; linear block
    conv-BN-ReLU): 2/4/8 stacks, 1 module, 256 features, 16 keypoints = 6,570,400 /
    12,858,304 / 25,434,112 trainable parameters. ``variant="nj"`` follows the PyTorch code
    whose numbers the poster quotes (stem BN-ReLU-conv on the image; linear block BN-ReLU-conv):
    the poster's 2 stacks x 2 modules gives 12,577,062 at 16 keypoints; the poster's 12.6M
    (12,647,206) also counts that code's last-stack merge convs, which it computes and throws
    away, and which are not built here. Loss: MSE against Gaussian heatmaps, summed over stacks.

    Args:
        num_keypoints: heatmap channels K.
        input_shape: (H, W, 3); H and W multiples of 4 * 2**depth. Heatmaps are H/4 x W/4.
        num_stacks: number of hourglasses (and outputs).
        num_modules: residual blocks per hourglass location and in each head.
        num_features: feature width (the stem uses num_features/4 and /2).
        depth: poolings per hourglass.
        variant: ``"newell"`` or ``"nj"`` (see above).
        highways: add the output of hourglass k to the input of stack N+1-k whenever
            k < N+1-k (parameter-free "gradient highways" of the Residual Stacked Hourglass).
        loss: ``"mse"`` (the papers: Gaussian heatmap regression) or
            ``"softmax_cross_entropy"`` (each output is a map of logits; a spatial softmax
            against the normalized Gaussian). The second learns real photographs several
            times faster in short CPU budgets (the ``lspet`` pipeline's notes).
        **kwargs: ``name``, ``trainable``.

    Example:
    >>> model = StackedHourglass(num_keypoints=17, input_shape=(128, 128, 3), num_stacks=1,
    ...                          num_features=64, depth=3)
    >>> [tuple(o.shape) for o in model.outputs]
    [(None, 32, 32, 17)]
    """

    def __init__(self, num_keypoints: int = 17, input_shape: tuple[int, int, int] | None = None,
                 num_stacks: int = 8, num_modules: int = 1, num_features: int = 256,
                 depth: int = 4, variant: str = "newell", highways: bool = False,
                 loss: str = MSE, **kwargs):
        input_shape = tuple(int(v) for v in (input_shape or (256, 256, 3)))
        _validate(num_keypoints, input_shape, num_stacks, num_modules, num_features, depth,
                  variant, loss)
        images = keras.Input(shape=input_shape, name="images")
        x = _apply_stem(images, num_features, variant)
        outputs, hourglass_outputs = [], []
        for i in range(1, num_stacks + 1):
            name = f"stack_{i}"
            source = num_stacks + 1 - i  # highway from hourglass `source` into this stack
            if highways and source < i:
                x = layers.Add(name=f"{name}_highway")([x, hourglass_outputs[source - 1]])
            hg = apply_hourglass(x, depth, num_modules, num_features, name)
            hourglass_outputs.append(hg)
            y = hg
            for m in range(1, num_modules + 1):
                y = apply_preact_residual(y, num_features, f"{name}_head_res{m}")
            if variant == "newell":
                y = layers.Conv2D(num_features, 1, name=f"{name}_lin_conv")(y)
                y = batch_norm(f"{name}_lin_bn")(y)
                y = layers.ReLU(name=f"{name}_lin_relu")(y)
            else:
                y = batch_norm(f"{name}_lin_bn")(y)
                y = layers.ReLU(name=f"{name}_lin_relu")(y)
                y = layers.Conv2D(num_features, 1, name=f"{name}_lin_conv")(y)
            # The heatmaps (and so the loss) stay float32 under mixed precision.
            heatmaps = layers.Conv2D(num_keypoints, 1, dtype="float32", name=name)(y)
            outputs.append(heatmaps)
            if i < num_stacks:
                features = layers.Conv2D(num_features, 1, name=f"{name}_merge_features")(y)
                remapped = layers.Conv2D(num_features, 1, name=f"{name}_merge_heatmaps")(
                    heatmaps)
                x = layers.Add(name=f"{name}_merge")([x, features, remapped])
        kwargs.setdefault("name", "stacked_hourglass")
        super().__init__(inputs=images, outputs=outputs, **kwargs)
        self.image_shape = input_shape
        self.num_stacks = num_stacks
        self.num_modules = num_modules
        self.num_features = num_features
        self.depth = depth
        self.variant = variant
        self.highways = bool(highways)
        self.loss_name = loss
        self._output_spec = OutputSpec(
            kind=HEATMAPS, stride=4, loss=loss,
            output_names=tuple(f"stack_{i}" for i in range(1, num_stacks + 1)))

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_keypoints": self.num_keypoints,
            "input_shape": self.image_shape,
            "num_stacks": self.num_stacks,
            "num_modules": self.num_modules,
            "num_features": self.num_features,
            "depth": self.depth,
            "variant": self.variant,
            "highways": self.highways,
            "loss": self.loss_name,
        }


@keras.saving.register_keras_serializable(package="keras_pose")
class ResidualStackedHourglass(StackedHourglass):
    """Residual Stacked Hourglass (Yoo, Peng, Aggarwal 2019): hourglasses with U-Net highways.

    A :class:`StackedHourglass` in the poster's configuration (``variant="nj"``, 5 stacks,
    2 modules, 256 features, depth 4) plus parameter-free "gradient highways": the output of
    hourglass k is added to the input of stack N+1-k for k < N+1-k (with 5 stacks: 1 -> 5 and
    2 -> 4), like the skips of a U-Net across stacks. 31,019,094 trainable parameters at
    16 keypoints (poster: 31.1M; 31,089,238 in the PyTorch code, which also builds the unused
    last-stack merge convs). Outputs ``stack_1`` ... ``stack_N``; loss: MSE summed over stacks.

    Args:
        num_keypoints, input_shape, num_stacks, num_modules, num_features, depth, variant:
            as for :class:`StackedHourglass`, with the poster's defaults.
        **kwargs: ``name``, ``trainable``.

    Example:
    >>> model = ResidualStackedHourglass(num_keypoints=16, input_shape=(64, 64, 3),
    ...                                  num_stacks=3, num_modules=1, num_features=32, depth=2)
    >>> model.output_spec.output_names
    ('stack_1', 'stack_2', 'stack_3')
    """

    def __init__(self, num_keypoints: int = 17, input_shape: tuple[int, int, int] | None = None,
                 num_stacks: int = 5, num_modules: int = 2, num_features: int = 256,
                 depth: int = 4, variant: str = "nj", loss: str = MSE, **kwargs):
        kwargs.pop("highways", None)
        kwargs.setdefault("name", "residual_stacked_hourglass")
        super().__init__(num_keypoints=num_keypoints, input_shape=input_shape,
                         num_stacks=num_stacks, num_modules=num_modules,
                         num_features=num_features, depth=depth, variant=variant,
                         highways=True, loss=loss, **kwargs)

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("highways")
        return config
