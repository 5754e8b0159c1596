"""What every keras-pose network promises to the rest of the system.

Training, decoding and export never branch on a model's name: they read its
:class:`OutputSpec` instead.

The contract of a model returned by ``keras_pose.models.build_model``:

- It is a :class:`PoseModel`, a functional ``keras.Model`` whose single input is named
  ``"images"``: float32 [B, H, W, 3], RGB, values in [0, 255] (the model rescales itself).
- Its outputs are the intermediate-supervision outputs in order, each named
  (``stack_1`` ... ``stack_N``, ``stage_1`` ...); the last is the final prediction.
  Heatmap outputs are [B, h, w, K]; coordinate outputs are [B, K, 2]. All outputs are float32,
  also under a mixed-precision policy. Chained Prediction has a single output ``heatmaps``
  whose channel t is chain step t's prediction: its per-step supervision is the per-channel
  loss, so every output keeps the [B, h, w, K] shape of the targets.
- ``model.output_spec`` says what the outputs are (see :class:`OutputSpec`).
- ``model.teacher_forcing_model`` is ``None`` or a model sharing the weights that takes
  ``{"images": ..., "teacher_heatmaps": [B, h, w, K]}`` and returns the same outputs; the trainer
  uses it for training when it is not ``None`` (Chained Prediction). ``teacher_heatmaps`` are the
  Gaussian target heatmaps (any positive peak height: for the softmax loss the model divides
  each map by its sum).
- ``get_config`` returns the constructor arguments, so ``.keras`` files round-trip.
"""

from __future__ import annotations

import keras

from keras_pose.codecs import codec_for
from keras_pose.outputs import OutputSpec


class PoseModel(keras.Model):
    """Base class of the keras-pose networks: a functional model plus its :class:`OutputSpec`.

    Subclasses build their graph in ``__init__`` and call
    ``super().__init__(inputs=..., outputs=..., name=...)``, then set ``self._output_spec``.
    """

    @property
    def output_spec(self) -> OutputSpec:
        return self._output_spec

    @property
    def num_keypoints(self) -> int:
        return codec_for(self._output_spec, self.input_size).num_keypoints(self.outputs[-1].shape)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the network input."""
        shape = self.inputs[0].shape
        return int(shape[1]), int(shape[2])

    @property
    def teacher_forcing_model(self) -> keras.Model | None:
        return None
