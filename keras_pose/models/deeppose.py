"""DeepPose: cascaded regression of normalized joint coordinates.

Reference:
    Toshev, Szegedy. "DeepPose: Human Pose Estimation via Deep Neural Networks", CVPR 2014,
    arXiv:1312.4659. The ResNet-34 variant is the public PyTorch one the poster's DeepPose
    numbers come from (github.com/Naman-ntc/Pytorch-Human-Pose-Estimation).
"""

from __future__ import annotations

import keras
from keras import layers

from keras_pose.keypoints import KEYPOINT_SETS
from keras_pose.models.base import PoseModel
from keras_pose.models.layers import (
    CascadeUpdate,
    LocalResponseNormalization,
    PatchCrop,
    apply_resnet,
    rescale_images,
)
from keras_pose.outputs import COORDINATE_L2, COORDINATES, OutputSpec

BACKBONES = ("alexnet", "resnet34")
DEFAULT_INPUT = {"alexnet": (220, 220, 3), "resnet34": (256, 256, 3)}
DEFAULT_STAGES = {"alexnet": 3, "resnet34": 1}
# The paper's (AlexNet's) convolution widths, conv1 ... conv5.
ALEXNET_FILTERS = (96, 256, 384, 384, 256)


def apply_alexnet_regressor(x, num_outputs: int, fc_units: int, dropout_rate: float, name: str,
                            conv_filters: tuple[int, ...] = ALEXNET_FILTERS):
    """DeepPose stage network (AlexNet layout, ungrouped), images in [0, 255] -> [N, outputs].

    C(96, 11/4)-LRN-P-C(256, 5)-LRN-P-C(384, 3)-C(384, 3)-C(256, 3)-P-F(fc)-F(fc)-F(outputs);
    ReLU after every conv and hidden dense, dropout after the hidden denses, max-pools 3/2.
    At 220x220 input: 55 -> 27 -> 13 -> 6, 6*6*256 = 9,216 features into F6. ``conv_filters``
    replaces the five convolution widths (narrower networks for tests on a CPU).
    """
    f1, f2, f3, f4, f5 = conv_filters
    x = rescale_images(x, f"{name}_rescaling")
    x = layers.Conv2D(f1, 11, strides=4, padding="same", activation="relu",
                      name=f"{name}_conv1")(x)
    x = LocalResponseNormalization(name=f"{name}_lrn1")(x)
    x = layers.MaxPooling2D(3, strides=2, name=f"{name}_pool1")(x)
    x = layers.Conv2D(f2, 5, padding="same", activation="relu", name=f"{name}_conv2")(x)
    x = LocalResponseNormalization(name=f"{name}_lrn2")(x)
    x = layers.MaxPooling2D(3, strides=2, name=f"{name}_pool2")(x)
    x = layers.Conv2D(f3, 3, padding="same", activation="relu", name=f"{name}_conv3")(x)
    x = layers.Conv2D(f4, 3, padding="same", activation="relu", name=f"{name}_conv4")(x)
    x = layers.Conv2D(f5, 3, padding="same", activation="relu", name=f"{name}_conv5")(x)
    x = layers.MaxPooling2D(3, strides=2, name=f"{name}_pool5")(x)
    x = layers.Flatten(name=f"{name}_flatten")(x)
    for index in (6, 7):
        x = layers.Dense(fc_units, activation="relu", name=f"{name}_fc{index}")(x)
        x = layers.Dropout(dropout_rate, name=f"{name}_dropout{index}")(x)
    return layers.Dense(num_outputs, dtype="float32", name=f"{name}_regression")(x)


def apply_resnet34_regressor(x, num_outputs: int, name: str):
    """ResNet-34 trunk, global average pool, Dense(outputs) (the public DeepPose variant)."""
    x = apply_resnet(rescale_images(x, f"{name}_rescaling"), "resnet34", f"{name}_resnet")
    x = layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    return layers.Dense(num_outputs, dtype="float32", name=f"{name}_regression")(x)


def apply_stage_regressor(x, *, backbone: str, num_keypoints: int, fc_units: int,
                          dropout_rate: float, conv_filters: tuple[int, ...], name: str):
    """One cascade stage's network: images [N, h, w, 3] in [0, 255] -> [N, 2K] coordinates.

    Layer names start with ``name`` (``stage_2_conv1``), so a stage network built on its own
    (``keras_pose.training.cascade``) and the same stage inside :class:`DeepPose` share them.
    """
    if backbone == "alexnet":
        return apply_alexnet_regressor(x, 2 * num_keypoints, fc_units, dropout_rate, name,
                                       conv_filters)
    return apply_resnet34_regressor(x, 2 * num_keypoints, name)


def _alexnet_feature_size(size: int) -> int:
    size = -(-size // 4)  # conv1, stride 4, "same"
    for _ in range(3):  # three 3/2 max-pools, "valid"
        size = (size - 3) // 2 + 1 if size >= 3 else 0
    return size


def default_torso(num_keypoints: int) -> tuple[int, int] | None:
    """The torso pair of the keypoint set with this many keypoints (COCO-17, MPII-16), or None."""
    for keypoint_set in KEYPOINT_SETS.values():
        if keypoint_set.num_keypoints == num_keypoints and keypoint_set.torso is not None:
            return tuple(keypoint_set.torso)
    return None


@keras.saving.register_keras_serializable(package="keras_pose")
class DeepPose(PoseModel):
    """DeepPose (Toshev & Szegedy, CVPR 2014): a cascade of coordinate regressors.

    Stage 1 regresses all K joints from the image. Each later stage crops, for every joint i,
    a square patch around the previous estimate (side ``crop_scale`` x torso diameter of the
    previous estimate, resized to ``crop_size``; bilinear, inside the graph), runs its own
    stage network on the K patches and keeps joint i's two outputs from patch i as a
    displacement in patch units. No gradient flows through the crop positions or the previous
    estimate, so each stage's loss trains that stage only. Trained as one model, all stages
    train at once, each on the current estimates of the one before;
    ``keras_pose.training.cascade`` trains them stage by stage on simulated predictions, as
    the paper does, and assembles this model.

    Outputs ``stage_1`` ... ``stage_S``: full estimates [B, K, 2], normalized as
    ``x / input_width - 0.5`` (and y / height) in the keypoint coordinate convention. Loss:
    L2 on normalized coordinates, masked by visibility.

    Trainable parameters per AlexNet stage: 58,412,448 at 16 keypoints (58,420,642 at 17),
    from the paper's layer sizes without AlexNet's two-GPU grouping; the paper states
    "about 40M", which its own listed sizes do not reproduce (a known discrepancy). The
    ResNet-34 variant (one stage, 256x256 input, no cascade by default): 21,301,088 at 16
    keypoints. No ImageNet weights: train from scratch or pass a weights file.

    Args:
        num_keypoints: K.
        input_shape: (H, W, 3); default 220x220 (AlexNet) or 256x256 (ResNet-34).
        backbone: ``"alexnet"`` or ``"resnet34"``.
        num_stages: cascade stages S (default 3 for AlexNet as in the paper, 1 for ResNet-34).
        crop_size: side of the patches the later stages see (default: min(H, W)).
        crop_scale: patch side in torso diameters (the paper's sigma; its value in the paper
            is not verified here).
        min_crop_fraction: smallest patch side as a fraction of min(H, W), so that a
            collapsed early estimate still gives a usable patch.
        torso: pair of keypoint indices giving the torso diameter; None: left shoulder and
            right hip for K = 17 (COCO) or 16 (MPII), the estimates' bounding-box diagonal
            for other K.
        fc_units: width of the two hidden dense layers (AlexNet).
        conv_filters: the five convolution widths (AlexNet; default the paper's
            96, 256, 384, 384, 256).
        dropout_rate: dropout after the hidden dense layers (AlexNet).
        **kwargs: ``name``, ``trainable``.

    Example:
    >>> model = DeepPose(num_keypoints=4, input_shape=(64, 64, 3), num_stages=2, fc_units=32,
    ...                  torso=(0, 1))
    >>> [tuple(o.shape) for o in model.outputs]
    [(None, 4, 2), (None, 4, 2)]
    """

    def __init__(self, num_keypoints: int = 17, input_shape: tuple[int, int, int] | None = None,
                 backbone: str = "alexnet", num_stages: int | None = None,
                 crop_size: int | None = None, crop_scale: float = 1.0,
                 min_crop_fraction: float = 0.1, torso: tuple[int, int] | None = None,
                 fc_units: int = 4096, dropout_rate: float = 0.6,
                 conv_filters: tuple[int, ...] = ALEXNET_FILTERS, **kwargs):
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, received "
                             f"backbone={backbone!r}")
        input_shape = tuple(int(v) for v in (input_shape or DEFAULT_INPUT[backbone]))
        num_stages = DEFAULT_STAGES[backbone] if num_stages is None else num_stages
        crop_size = min(input_shape[:2]) if crop_size is None else crop_size
        torso = default_torso(num_keypoints) if torso is None else (int(torso[0]), int(torso[1]))
        conv_filters = tuple(conv_filters)
        self._validate(num_keypoints, input_shape, backbone, num_stages, crop_size, crop_scale,
                       min_crop_fraction, torso, fc_units, dropout_rate, conv_filters)

        def regressor(x, name):
            return apply_stage_regressor(x, backbone=backbone, num_keypoints=num_keypoints,
                                         fc_units=fc_units, dropout_rate=dropout_rate,
                                         conv_filters=conv_filters, name=name)

        images = keras.Input(shape=input_shape, name="images")
        estimate = layers.Reshape((num_keypoints, 2), dtype="float32", name="stage_1")(
            regressor(images, "stage_1"))
        outputs = [estimate]
        for stage in range(2, num_stages + 1):
            patches, boxes = PatchCrop(crop_size, torso=torso, crop_scale=crop_scale,
                                       min_crop_fraction=min_crop_fraction, dtype="float32",
                                       name=f"stage_{stage}_crop")([images, estimate])
            regressed = regressor(patches, f"stage_{stage}")
            estimate = CascadeUpdate(dtype="float32", name=f"stage_{stage}")(
                [estimate, regressed, boxes])
            outputs.append(estimate)
        kwargs.setdefault("name", "deeppose")
        super().__init__(inputs=images, outputs=outputs, **kwargs)
        self.image_shape = input_shape
        self.backbone = backbone
        self.num_stages = num_stages
        self.crop_size = crop_size
        self.crop_scale = float(crop_scale)
        self.min_crop_fraction = float(min_crop_fraction)
        self.torso = torso
        self.fc_units = fc_units
        self.dropout_rate = float(dropout_rate)
        self.conv_filters = conv_filters
        self._output_spec = OutputSpec(
            kind=COORDINATES, stride=None, loss=COORDINATE_L2,
            output_names=tuple(f"stage_{s}" for s in range(1, num_stages + 1)))

    @staticmethod
    def _validate(num_keypoints, input_shape, backbone, num_stages, crop_size, crop_scale,
                  min_crop_fraction, torso, fc_units, dropout_rate, conv_filters):
        if len(conv_filters) != 5 or not all(
                isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in conv_filters):
            raise ValueError("conv_filters must be five integers >= 1, received "
                             f"conv_filters={conv_filters!r}")
        for key, value, low in (("num_keypoints", num_keypoints, 1),
                                ("num_stages", num_stages, 1), ("crop_size", crop_size, 1),
                                ("fc_units", fc_units, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{key} must be an integer >= {low}, received {key}={value!r}")
        if len(input_shape) != 3 or input_shape[2] != 3:
            raise ValueError(f"input_shape must be (H, W, 3), received {tuple(input_shape)}")
        minimum = 32
        for key, size in (("input_shape", min(input_shape[:2])), ("crop_size", crop_size)):
            if backbone == "alexnet" and _alexnet_feature_size(size) < 1:
                raise ValueError(f"{key} {size} is too small for the AlexNet stage network "
                                 "(it needs at least 57 pixels)")
            if backbone == "resnet34" and size < minimum:
                raise ValueError(f"{key} {size} is too small for ResNet-34 (at least {minimum})")
        if not crop_scale > 0:
            raise ValueError(f"crop_scale must be > 0, received crop_scale={crop_scale}")
        if not 0 < min_crop_fraction <= 1:
            raise ValueError("min_crop_fraction must be in (0, 1], received "
                             f"min_crop_fraction={min_crop_fraction}")
        if not 0 <= dropout_rate < 1:
            raise ValueError(f"dropout_rate must be in [0, 1), received {dropout_rate}")
        if torso is not None and not all(0 <= i < num_keypoints for i in torso):
            raise ValueError(f"torso indices must be in [0, {num_keypoints}), received {torso}")

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_keypoints": self.num_keypoints,
            "input_shape": self.image_shape,
            "backbone": self.backbone,
            "num_stages": self.num_stages,
            "crop_size": self.crop_size,
            "crop_scale": self.crop_scale,
            "min_crop_fraction": self.min_crop_fraction,
            "torso": self.torso,
            "fc_units": self.fc_units,
            "dropout_rate": self.dropout_rate,
            "conv_filters": self.conv_filters,
        }
