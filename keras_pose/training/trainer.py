"""The trainer model: joins records, on-device augmentation, targets, a network and its loss.

``PoseTrainer`` wraps a ``PoseModel``. Its compiled training step takes a batch of uint8 crops
straight from the tf.data reader, draws one affine transform per sample, warps the batch once,
renders targets, runs the network and sums the weight-masked loss over all intermediate
outputs. Nothing model-specific is branched on: the network's ``output_spec`` says what its
outputs are. The validation step is the same without augmentation. Keypoints in source-image
pixels, for PCK and COCO scoring, come from ``keras_pose.evaluate.predict_records``.

TensorFlow-specific (``tf.GradientTape``, ``tf.distribute``) by design: this is the edge where
Keras meets the TF training loop.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_pose import augment
from keras_pose.codecs import codec_for
from keras_pose.keypoints import KeypointSet
from keras_pose.losses import get_loss
from keras_pose.models.base import PoseModel


class StepSeed(keras.random.SeedGenerator):
    """Stateless seeds derived from (base seed, training step, replica).

    Keras draws a fresh seed from a generator at every random call. A stateful generator holds
    a variable that must be checkpointed and that ``MirroredStrategy`` cannot update from a
    replica; deriving every seed from the optimizer's step instead makes augmentation
    reproducible across a kill-and-resume and different on each replica.
    """

    def __init__(self, base_seed: int, step, replica_id=0):  # noqa: D107
        # No super().__init__: that would create the state variable this class exists to avoid.
        step = ops.cast(step, "int32")
        replica = ops.cast(replica_id, "int32")
        self._seed = ops.stack([ops.cast(base_seed, "int32") + 7919 * replica, step])
        self._calls = 0

    def next(self, ordered: bool = True):
        # Each random call site in the traced step gets its own stream.
        self._calls += 1
        return self._seed + ops.convert_to_tensor([self._calls * 1_000_003, 0], "int32")


def _replica_id():
    context = tf.distribute.get_replica_context()
    if context is None:
        return 0
    return context.replica_id_in_sync_group


def _multi_worker() -> bool:
    """True inside a ``MultiWorkerMirroredStrategy`` that spans several workers."""
    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    # The test Keras itself uses to pick its multi-worker reduction.
    return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())


class PoseTrainer(keras.Model):
    """Training wrapper around a pose network.

    Args:
        network: a ``PoseModel`` from ``keras_pose.models.build_model``.
        keypoint_set: the records' keypoint set (flip permutation for augmentation).
        augment_config: ``augment.AugmentConfig``; ``None`` disables augmentation.
        sigma: Gaussian sigma in heatmap pixels; ``None`` or 0 = heatmap width / 64.
        output_weights: weight of each output in the summed loss (default all 1).
        seed: base seed of the augmentation draws.
        sampler: ``"gather"`` (XLA-compilable) or ``"affine_transform"``.
        crop_size: side of the person crop inside the reader's images (``[data] crop_size``);
            images larger than it carry context around the crop (``make_dataset(context=
            True)``), which augmentation samples. None = the images' side.
    """

    def __init__(
        self,
        network: PoseModel,
        *,
        keypoint_set: KeypointSet,
        augment_config: augment.AugmentConfig | None,
        sigma: float | None = None,
        output_weights: list[float] | None = None,
        seed: int = 0,
        sampler: str = "gather",
        crop_size: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.network = network
        self.keypoint_set = keypoint_set
        self.augment_config = augment_config
        self.sigma = sigma or None
        self.seed = int(seed)
        self.sampler = sampler
        self.crop_size = crop_size
        spec = network.output_spec
        self.spec = spec
        self.output_names_ = list(spec.output_names)
        if output_weights:
            if len(output_weights) != len(self.output_names_):
                raise ValueError(
                    f"loss.output_weights has {len(output_weights)} values but the model has "
                    f"{len(self.output_names_)} outputs {self.output_names_}"
                )
            self.output_weights = [float(w) for w in output_weights]
        else:
            self.output_weights = [1.0] * len(self.output_names_)
        self.loss_fn = get_loss(spec.loss)
        self.input_hw = network.input_size
        # Targets, decoding and the flip test for this network's output kind.
        self.codec = codec_for(spec, self.input_hw, sigma=self.sigma)
        self.flip_permutation = np.asarray(keypoint_set.flip_permutation, np.int32)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.output_trackers = [keras.metrics.Mean(name=f"loss_{n}") for n in self.output_names_]
        # The wrapped network is a built functional model, so the trainer is built too
        # (BackupAndRestore needs built weights before fit starts).
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, *self.output_trackers]

    def call(self, images, training=False):
        return self.network(images, training=training)

    # -- the parts of a step -------------------------------------------------------------

    def prepare(self, batch: dict, training: bool, step=None) -> dict:
        """Augment (or resize) a reader batch and render its targets.

        Returns a dict with ``images`` (network input), ``targets``, ``weights``,
        ``keypoints`` (input pixels), ``visibility`` and ``matrices`` (crop -> input).
        """
        use_augmentation = training and self.augment_config is not None
        seed = StepSeed(self.seed, step if step is not None else 0, _replica_id())
        out = augment.augment_batch(
            batch["image"],
            batch["keypoints"],
            batch["visibility"],
            input_size=self.input_hw,
            config=self.augment_config or augment.AugmentConfig(),
            flip_permutation=self.flip_permutation,
            seed=seed,
            training=use_augmentation,
            sampler=self.sampler,
            crop_size=self.crop_size,
        )
        target, weights = self.codec.encode(out["keypoints"], out["visibility"])
        return {**out, "targets": target, "weights": weights}

    def forward(self, images, target, training: bool):
        """Run the network; the teacher-forced path when the model has one and we train."""
        teacher = self.network.teacher_forcing_model
        if training and teacher is not None:
            outputs = teacher({"images": images, "teacher_heatmaps": target}, training=True)
        else:
            outputs = self.network(images, training=training)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return list(outputs)

    def compute_losses(self, outputs, target, weights):
        per_output = [self.loss_fn(target, out, weights) for out in outputs]
        total = ops.sum(ops.stack([w * loss for w, loss in zip(self.output_weights, per_output)]))
        return total, per_output

    def _update_trackers(self, total, per_output):
        self.loss_tracker.update_state(total)
        for tracker, value in zip(self.output_trackers, per_output):
            tracker.update_state(value)
        logs = {m.name: m.result() for m in self.metrics}
        if _multi_worker():
            # Keras 3 averages step logs across workers with a reduce over axis 0, which
            # fails on scalars (tensorflow/tensorflow#72388): give every value that axis.
            logs = {name: ops.reshape(value, (1,)) for name, value in logs.items()}
        return logs

    # -- Keras hooks -----------------------------------------------------------------------

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Under a strategy, build the optimizer without reducing an input batch.

        Keras's TF trainer averages one distributed input batch over replicas only to build
        the model symbolically. ``MultiWorkerMirroredStrategy`` cannot reduce a dict of
        tensors, so ``fit`` failed before its first step; the network, a functional model, is
        built already, and only the optimizer's variables are left to create.
        """
        strategy = self._distribute_strategy
        if strategy is None:
            return
        with strategy.scope():
            if self.optimizer is not None and not self.optimizer.built:
                self.optimizer.build(self.trainable_variables)

    def train_step(self, data):
        # fit() passes the reader's dict; train_on_batch() wraps it as (x, y, sample_weight).
        data, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        prepared = self.prepare(data, training=True, step=self.optimizer.iterations)
        with tf.GradientTape() as tape:
            outputs = self.forward(prepared["images"], prepared["targets"], training=True)
            total, per_output = self.compute_losses(
                outputs, prepared["targets"], prepared["weights"]
            )
            # Gradients are summed over replicas, so each replica's share is 1/replicas.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(total / replicas)
        variables = self.network.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        return self._update_trackers(total, per_output)

    def test_step(self, data):
        data, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        prepared = self.prepare(data, training=False)
        outputs = self.forward(prepared["images"], prepared["targets"], training=False)
        total, per_output = self.compute_losses(outputs, prepared["targets"], prepared["weights"])
        return self._update_trackers(total, per_output)
