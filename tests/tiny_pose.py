"""Tiny PoseModels for export, serving and prediction tests (seconds to build and save)."""

from __future__ import annotations

import keras

from keras_pose.models.base import PoseModel
from keras_pose.outputs import COORDINATES, HEATMAPS, OutputSpec


@keras.saving.register_keras_serializable(package="keras_pose_tests")
class TinyHeatmapPose(PoseModel):
    """Two strided convolutions: input [S, S, 3] -> heatmaps [S/4, S/4, K] (stride 4)."""

    def __init__(self, num_keypoints: int = 17, input_size: int = 64, seed: int = 0, **kwargs):
        inputs = keras.Input((input_size, input_size, 3), name="images")
        x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
        init = keras.initializers.GlorotUniform(seed=seed)
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu",
                                kernel_initializer=init, name="stem_conv")(x)
        out = keras.layers.Conv2D(num_keypoints, 3, strides=2, padding="same",
                                  kernel_initializer=init, name="stack_1")(x)
        super().__init__(inputs=inputs, outputs=[out], **kwargs)
        self._output_spec = OutputSpec(HEATMAPS, 4, "mse", ("stack_1",))
        self.config_ = {"num_keypoints": num_keypoints, "input_size": input_size, "seed": seed}

    def get_config(self):
        return {**self.config_, "name": self.name}


@keras.saving.register_keras_serializable(package="keras_pose_tests")
class TinyCoordinatePose(PoseModel):
    """Pooling and a dense layer: input [h, w, 3] -> normalized coordinates [K, 2]."""

    def __init__(self, num_keypoints: int = 17, input_size=(64, 48), seed: int = 0, **kwargs):
        inputs = keras.Input((input_size[0], input_size[1], 3), name="images")
        x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
        x = keras.layers.Conv2D(4, 3, strides=4, activation="relu", name="stem_conv",
                                kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dense(2 * num_keypoints, name="dense",
                               kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
        out = keras.layers.Reshape((num_keypoints, 2), name="stage_1")(x)
        super().__init__(inputs=inputs, outputs=[out], **kwargs)
        self._output_spec = OutputSpec(COORDINATES, None, "coordinate_l2", ("stage_1",))
        self.config_ = {"num_keypoints": num_keypoints, "input_size": list(input_size),
                        "seed": seed}

    def get_config(self):
        return {**self.config_, "name": self.name}


@keras.saving.register_keras_serializable(package="keras_pose_tests")
class ConstantCoordinatePose(PoseModel):
    """Predicts the same normalized coordinates for every image (a zero kernel and a bias).

    Its keypoints in input pixels are ``(offsets + 0.5) * (w, h)`` whatever the image, so every
    coordinate mapping after the network can be checked by hand.
    """

    def __init__(self, offsets, input_size=(48, 40), shift: float = 0.0, **kwargs):
        offsets = [[float(x), float(y)] for x, y in offsets]
        k = len(offsets)
        inputs = keras.Input((input_size[0], input_size[1], 3), name="images")
        x = keras.layers.GlobalAveragePooling2D(name="pool")(inputs)
        x = keras.layers.Dense(
            2 * k, kernel_initializer="zeros", name="dense",
            bias_initializer=keras.initializers.Constant(
                [v + shift for pair in offsets for v in pair]))(x)
        if shift:
            # offsets + shift - shift: the same outputs in float32; in bfloat16 (8 significant
            # bits) a shift of 1000 rounds the offsets away, a network bfloat16 breaks.
            x = keras.layers.Rescaling(1.0, offset=-shift, name="unshift")(x)
        out = keras.layers.Reshape((k, 2), name="stage_1")(x)
        super().__init__(inputs=inputs, outputs=[out], **kwargs)
        self._output_spec = OutputSpec(COORDINATES, None, "coordinate_l2", ("stage_1",))
        self.config_ = {"offsets": offsets, "input_size": list(input_size), "shift": shift}

    def get_config(self):
        return {**self.config_, "name": self.name}
