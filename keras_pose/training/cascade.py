"""DeepPose's cascade trained stage by stage on simulated predictions (Toshev & Szegedy 2014).

Stage 1 is a one-stage DeepPose trained as any network. For each later stage s the paper
measures, on the training set, the displacement of stage s - 1's estimate of every joint i from
the ground truth, in the units of the box stage s - 1 saw, and fits a normal distribution
N(mean_i, Sigma_i) to it. Stage s then trains on "simulated predictions": crops of side
sigma x diam(ground truth) centred on the ground truth plus an offset drawn from that
distribution, the target being the displacement back to the ground truth in the crop's units.
One stage network is shared by all joints; joint i's two outputs are read from crop i.

Everything per step runs in the compiled train step (``keras.ops``): augmentation, the draws,
the crops (``crop_square_patches``, the sampler of the network's own ``PatchCrop``) and the
loss. The trained stages are put into the in-graph cascade (``DeepPose(num_stages=S)``) by
layer name, so evaluation, export and prediction take the result like any DeepPose.

Units: stage 1's displacements are in its frame, the network input (``x / W - 0.5``), so a
displacement d is ``d * (W, H)`` pixels (``FRAME``); stage s >= 2's are in its crop's side
(``CROP``), ``d * side`` pixels.
"""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_pose import augment, evaluate, losses, metrics, targets
from keras_pose.geometry import size_pair
from keras_pose.io import write_json_atomic
from keras_pose.keypoints import KeypointSet
from keras_pose.models.deeppose import DeepPose, apply_stage_regressor
from keras_pose.models.layers import crop_sides, crop_square_patches
from keras_pose.runs import RunLayout
from keras_pose.training.callbacks import atomic_save_network
from keras_pose.training.trainer import StepSeed, _replica_id

FRAME = "frame"
CROP = "crop"
# Added to each covariance's diagonal before its Cholesky factor: a joint whose errors are
# (numerically) degenerate still gets a valid normal distribution.
COVARIANCE_JITTER = 1e-8


# ---------------------------------------------------------------------------------------------
# The error distribution of a stage
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ErrorDistribution:
    """Per-joint normal distribution of a stage's displacements (estimate - ground truth).

    Attributes:
        mean: [K, 2] mean displacement (x, y).
        covariance: [K, 2, 2] unbiased covariance.
        counts: [K] displacements measured per joint (labeled, inside the input).
        mean_distance: [K] mean Euclidean length of the measured displacements.
        unit: ``FRAME`` (stage 1: the network input) or ``CROP`` (a later stage's crop side).
        pooled: [K] bool: joints measured fewer than twice, given the mean 0 and the
            covariance of all joints' displacements pooled.
    """

    mean: np.ndarray
    covariance: np.ndarray
    counts: np.ndarray
    mean_distance: np.ndarray
    unit: str
    pooled: np.ndarray

    def scale_tril(self) -> np.ndarray:
        """[K, 2, 2] lower Cholesky factors: offset = mean + L @ z with z ~ N(0, I)."""
        jitter = COVARIANCE_JITTER * np.eye(2)
        return np.linalg.cholesky(self.covariance + jitter).astype(np.float32)

    def overall_mean_distance(self) -> float:
        """Mean displacement length over every measured joint (weighted by count)."""
        return float(np.sum(self.mean_distance * self.counts) / max(np.sum(self.counts), 1))

    def to_dict(self) -> dict:
        return {"unit": self.unit, "mean": self.mean.tolist(),
                "covariance": self.covariance.tolist(), "counts": self.counts.tolist(),
                "mean_distance": self.mean_distance.tolist(), "pooled": self.pooled.tolist(),
                "overall_mean_distance": self.overall_mean_distance()}

    @classmethod
    def from_dict(cls, data: dict) -> ErrorDistribution:
        return cls(mean=np.asarray(data["mean"], np.float64),
                   covariance=np.asarray(data["covariance"], np.float64),
                   counts=np.asarray(data["counts"], np.int64),
                   mean_distance=np.asarray(data["mean_distance"], np.float64),
                   unit=data["unit"], pooled=np.asarray(data["pooled"], bool))


def error_distribution(displacements: np.ndarray, weights: np.ndarray, unit: str
                       ) -> ErrorDistribution:
    """Fit N(mean_i, Sigma_i) per joint to measured displacements.

    Args:
        displacements: [N, K, 2] estimate - ground truth, in ``unit``.
        weights: [N, K]; a displacement counts where its weight is > 0.
        unit: ``FRAME`` or ``CROP``, kept with the result.

    Returns:
        The :class:`ErrorDistribution`. A joint measured fewer than twice has no covariance of
        its own: it gets mean 0 and the covariance of all joints' displacements together.

    Raises:
        ValueError: fewer than two displacements in all.
    """
    displacements = np.asarray(displacements, np.float64)
    used = np.asarray(weights) > 0
    num_keypoints = displacements.shape[1]
    everything = displacements[used]
    if len(everything) < 2:
        raise ValueError(f"the error distribution needs at least 2 measured displacements, got "
                         f"{len(everything)} (no labeled joints inside the input?)")
    pooled_covariance = np.cov(everything - everything.mean(0), rowvar=False)
    mean = np.zeros((num_keypoints, 2))
    covariance = np.zeros((num_keypoints, 2, 2))
    counts = used.sum(0).astype(np.int64)
    distance = np.zeros(num_keypoints)
    pooled = counts < 2
    for joint in range(num_keypoints):
        values = displacements[used[:, joint], joint]
        if len(values):
            distance[joint] = np.linalg.norm(values, axis=-1).mean()
        if pooled[joint]:
            covariance[joint] = pooled_covariance
            continue
        mean[joint] = values.mean(0)
        covariance[joint] = np.cov(values, rowvar=False)
    return ErrorDistribution(mean=mean, covariance=covariance, counts=counts,
                             mean_distance=distance, unit=unit, pooled=pooled)


def stage_displacements(outputs, keypoints_input, input_size, stage: int, *, torso,
                        sigma: float, min_crop_fraction: float):
    """Displacement of stage ``stage``'s estimates from the ground truth, in that stage's units.

    Args:
        outputs: the cascade's outputs ``[stage_1, ..., stage_s, ...]``, each [B, K, 2]
            normalized (``x / W - 0.5``).
        keypoints_input: [B, K, 2] ground truth in input pixels.
        input_size: the network input size, an int or (height, width).
        stage: which output (1-based).
        torso, sigma, min_crop_fraction: the network's ``torso``, ``crop_scale`` and
            ``min_crop_fraction`` (the crop that stage ``stage`` saw).

    Returns:
        [B, K, 2]: stage 1 in its frame (normalized input units); stage s >= 2 in crop sides,
        the crop being the one the network cut around stage s - 1's estimate.
    """
    height, width = size_pair(input_size)
    truth = targets.coordinate_targets(keypoints_input, (height, width))
    estimate = ops.cast(outputs[stage - 1], "float32")
    if stage == 1:
        return estimate - truth
    _, side = crop_sides(ops.cast(outputs[stage - 2], "float32"), height, width, torso, sigma,
                         min_crop_fraction)
    size = ops.convert_to_tensor([float(width), float(height)], "float32")
    return (estimate - truth) * size / side[:, None, None]


def measure_errors(network: DeepPose, dataset, *, sampler: str = "gather",
                   max_batches: int | None = None) -> ErrorDistribution:
    """The error distribution of ``network``'s last stage on reader batches (no augmentation).

    Args:
        network: a DeepPose (the cascade up to the stage to measure).
        dataset: reader batches (``image``, ``keypoints`` crop pixels, ``visibility``), finite.
        sampler: the resize sampler, as in training.
        max_batches: stop after this many batches (``None``: the whole dataset).
    """
    stage = network.num_stages
    input_size = network.input_size

    @tf.function(reduce_retracing=True)
    def measure(batch):
        prepared = augment.augment_batch(
            batch["image"], batch["keypoints"], batch["visibility"], input_size=input_size,
            config=None, flip_permutation=np.arange(network.num_keypoints), training=False,
            sampler=sampler)
        outputs = network(prepared["images"], training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        displacement = stage_displacements(
            outputs, prepared["keypoints"], input_size, stage, torso=network.torso,
            sigma=network.crop_scale, min_crop_fraction=network.min_crop_fraction)
        weights = targets.keypoint_weights(prepared["keypoints"], prepared["visibility"],
                                           input_size)
        return displacement, weights

    gathered, weights = [], []
    batches = dataset.take(max_batches) if max_batches else dataset
    for batch in batches:
        displacement, weight = measure({key: batch[key]
                                        for key in ("image", "keypoints", "visibility")})
        gathered.append(np.asarray(displacement))
        weights.append(np.asarray(weight))
    if not gathered:
        raise ValueError("measuring the error distribution: the dataset is empty")
    return error_distribution(np.concatenate(gathered), np.concatenate(weights),
                              FRAME if stage == 1 else CROP)


# ---------------------------------------------------------------------------------------------
# Simulated predictions: offsets, crop centres, targets
# ---------------------------------------------------------------------------------------------


def draw_offsets(mean, scale_tril, batch, draws: int, seed):
    """Offsets from N(mean_i, L_i L_i^T): mean [K, 2], scale_tril [K, 2, 2] -> [B, D, K, 2]."""
    num_keypoints = mean.shape[0]
    normal = keras.random.normal((batch, draws, num_keypoints, 2), seed=seed)
    return mean + ops.einsum("kij,bdkj->bdki", scale_tril, normal)


def simulated_crops(keypoints_input, side, offsets, unit: str, input_size):
    """Crop centres around displaced ground truth and the displacement each crop must regress.

    Args:
        keypoints_input: [B, K, 2] ground truth in input pixels.
        side: [B] crop side in pixels (sigma x the ground truth's torso diameter).
        offsets: [B, D, K, 2] drawn offsets in ``unit`` (the previous stage's).
        unit: ``FRAME`` (an offset d moves d * (W, H) pixels) or ``CROP`` (d * side pixels).
        input_size: the network input size, an int or (height, width).

    Returns:
        ``(centres, displacement)``: centres [B, D, K, 2] in input pixels and the target
        displacement [B, D, K, 2] in crop sides, ``(truth - centre) / side``: the value that
        ``CascadeUpdate`` turns back into the ground truth.
    """
    if unit not in (FRAME, CROP):
        raise ValueError(f"unit must be {FRAME!r} or {CROP!r}, received {unit!r}")
    height, width = size_pair(input_size)
    truth = ops.cast(keypoints_input, "float32")[:, None]
    side = ops.cast(side, "float32")[:, None, None, None]
    if unit == FRAME:
        scale = ops.convert_to_tensor([float(width), float(height)], "float32")
    else:
        scale = side
    centres = truth + offsets * scale
    return centres, (truth - centres) / side


def own_displacements(regressed, num_keypoints: int, draws: int):
    """Joint i's two outputs from crop i: regressed [B*D*K, 2K] -> [B, D, K, 2].

    Crops are ordered batch, draw, joint (as ``crop_square_patches`` of [B, D*K] centres).
    """
    regressed = ops.reshape(ops.cast(regressed, "float32"),
                            (-1, draws, num_keypoints, num_keypoints, 2))
    own = ops.eye(num_keypoints, dtype="float32")[None, None, :, :, None]
    return ops.sum(regressed * own, axis=3)


# ---------------------------------------------------------------------------------------------
# Training one stage
# ---------------------------------------------------------------------------------------------


def build_stage_network(template: DeepPose, stage: int) -> keras.Model:
    """Stage ``stage``'s network alone: crops [N, S, S, 3] -> [N, 2K], layers named as in the
    cascade (``stage_2_conv1``)."""
    crops = keras.Input((template.crop_size, template.crop_size, 3), name="crops")
    regressed = apply_stage_regressor(
        crops, backbone=template.backbone, num_keypoints=template.num_keypoints,
        fc_units=template.fc_units, dropout_rate=template.dropout_rate,
        conv_filters=template.conv_filters, name=f"stage_{stage}")
    return keras.Model(crops, regressed, name=f"deeppose_stage_{stage}")


class CascadeStageTrainer(keras.Model):
    """Trains one later stage on simulated predictions of the stage before.

    Each step augments the reader batch as :class:`PoseTrainer` does, draws ``draws``
    offsets per record and joint from ``errors``, crops around the displaced ground truth and
    minimizes the squared L2 distance of joint i's regressed displacement from the target (in
    crop sides), masked like the coordinate loss (unlabeled joints, joints outside the input,
    and records whose torso joints are not both labeled, since their crop side is unknown).

    Args:
        stage_network: from :func:`build_stage_network`.
        template: the DeepPose whose geometry (input, crop size, torso, sigma) the stage uses.
        errors: the previous stage's :class:`ErrorDistribution`.
        draws: offsets per record and joint in each step.
        keypoint_set: the records' keypoint set (flip permutation).
        augment_config: ``augment.AugmentConfig`` or ``None`` (no augmentation).
        seed: base seed of the augmentation and the draws.
        sampler: the warp sampler of the augmentation.
    """

    def __init__(self, stage_network: keras.Model, *, template: DeepPose,
                 errors: ErrorDistribution, draws: int, keypoint_set: KeypointSet,
                 augment_config: augment.AugmentConfig | None, seed: int = 0,
                 sampler: str = "gather", records_crop_size: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if template.torso is None:
            raise ValueError("stage-wise cascade training needs the network's torso pair "
                             "(the crop side is sigma x the torso diameter)")
        self.network = stage_network
        self.input_hw = template.input_size
        self.crop_size = template.crop_size
        self.num_keypoints = template.num_keypoints
        self.torso = template.torso
        self.sigma = template.crop_scale
        self.min_crop_fraction = template.min_crop_fraction
        self.unit = errors.unit
        self.error_mean = errors.mean.astype(np.float32)
        self.error_tril = errors.scale_tril()
        self.draws = int(draws)
        self.augment_config = augment_config
        self.flip_permutation = np.asarray(keypoint_set.flip_permutation, np.int32)
        self.seed = int(seed)
        self.sampler = sampler
        self.records_crop_size = records_crop_size
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.distance_tracker = keras.metrics.Mean(name="distance")
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker, self.distance_tracker]

    def simulate(self, batch: dict, training: bool, step=None) -> dict:
        """Crops around simulated predictions of a reader batch and their targets.

        Returns ``crops`` [B*D*K, S, S, 3], ``targets`` [B, D*K, 2] (crop sides) and
        ``weights`` [B, D*K].
        """
        seed = StepSeed(self.seed, step if step is not None else 0, _replica_id())
        prepared = augment.augment_batch(
            batch["image"], batch["keypoints"], batch["visibility"], input_size=self.input_hw,
            config=self.augment_config or augment.AugmentConfig(),
            flip_permutation=self.flip_permutation, seed=seed,
            training=training and self.augment_config is not None, sampler=self.sampler,
            crop_size=self.records_crop_size)
        height, width = self.input_hw
        points = prepared["keypoints"]
        weights = targets.keypoint_weights(points, prepared["visibility"], self.input_hw)
        truth = targets.coordinate_targets(points, self.input_hw)
        _, side = crop_sides(truth, height, width, self.torso, self.sigma,
                             self.min_crop_fraction)
        has_torso = weights[:, self.torso[0]] * weights[:, self.torso[1]]
        batch_size = ops.shape(points)[0]
        offsets = draw_offsets(ops.convert_to_tensor(self.error_mean),
                               ops.convert_to_tensor(self.error_tril), batch_size,
                               self.draws, seed)
        centres, displacement = simulated_crops(points, side, offsets, self.unit, self.input_hw)
        count = self.draws * self.num_keypoints
        crops = crop_square_patches(prepared["images"],
                                    ops.reshape(centres, (batch_size, count, 2)), side,
                                    self.crop_size)
        weights = ops.tile((weights * has_torso[:, None])[:, None, :], (1, self.draws, 1))
        return {"crops": crops, "targets": ops.reshape(displacement, (batch_size, count, 2)),
                "weights": ops.reshape(weights, (batch_size, count))}

    def _loss(self, simulated: dict, training: bool):
        regressed = self.network(simulated["crops"], training=training)
        predicted = ops.reshape(own_displacements(regressed, self.num_keypoints, self.draws),
                                ops.shape(simulated["targets"]))
        loss = losses.coordinate_l2(simulated["targets"], predicted, simulated["weights"])
        distance = ops.sqrt(ops.sum(ops.square(predicted - simulated["targets"]), axis=-1))
        used = ops.sum(simulated["weights"])
        mean_distance = ops.sum(distance * simulated["weights"]) / ops.maximum(used, 1.0)
        return loss, mean_distance

    def _logs(self, loss, distance):
        self.loss_tracker.update_state(loss)
        self.distance_tracker.update_state(distance)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        data, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        simulated = self.simulate(data, training=True, step=self.optimizer.iterations)
        with tf.GradientTape() as tape:
            loss, distance = self._loss(simulated, training=True)
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss / replicas)
        variables = self.network.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return self._logs(loss, distance)

    def test_step(self, data):
        data, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        loss, distance = self._loss(self.simulate(data, training=False), training=False)
        return self._logs(loss, distance)


# ---------------------------------------------------------------------------------------------
# The assembled cascade
# ---------------------------------------------------------------------------------------------


def cascade_config(network: DeepPose, num_stages: int) -> dict:
    """``network``'s config with ``num_stages`` stages (and a name of its own)."""
    config = network.get_config()
    config.pop("trainable", None)
    return {**config, "num_stages": num_stages}


def assemble_cascade(stage_one: DeepPose, stage_networks: list[keras.Model]) -> DeepPose:
    """The in-graph cascade DeepPose(num_stages = 1 + len(stage_networks)) with the weights of
    the stage-wise trained networks, copied by layer name.

    Raises:
        ValueError: a layer of the cascade with weights that no given network has.
    """
    cascade = DeepPose(**cascade_config(stage_one, 1 + len(stage_networks)))
    sources = {layer.name: layer for net in (stage_one, *stage_networks) for layer in net.layers
               if layer.weights}
    for layer in cascade.layers:
        if not layer.weights:
            continue
        if layer.name not in sources:
            raise ValueError(f"assembling the cascade: no trained weights for layer "
                             f"{layer.name!r}")
        layer.set_weights(sources[layer.name].get_weights())
    return cascade


def held_out_report(network: DeepPose, dataset, keypoint_set: KeypointSet,
                    metric_names: list[str], sampler: str) -> dict:
    """The cascade's scores on held-out reader batches: the metrics (PCK) and the mean error
    of labeled joints in source-image pixels (``mean_error_px``)."""
    predict = evaluate.make_predict_function(network, keypoint_set=keypoint_set, sampler=sampler)
    predictions = evaluate.predict_records(network, dataset, keypoint_set=keypoint_set,
                                           predict_function=predict)
    report = evaluate.metric_report(predictions, keypoint_set, metric_names)
    labeled = predictions["visibility"] > 0
    distance = np.linalg.norm(predictions["keypoints"] - predictions["gt_keypoints"], axis=-1)
    return {"metrics": {name: report[name] for name in metric_names},
            "mean_error_px": float(distance[labeled].mean()) if labeled.any() else None,
            "persons": int(len(distance))}


@dataclasses.dataclass
class StageSettings:
    """What :func:`train_cascade` needs besides the data (from the pipeline)."""

    stages: int
    draws: int
    epochs: int
    steps_per_epoch: int
    error_batches: int | None
    keypoint_set: KeypointSet
    augment_config: augment.AugmentConfig | None
    seed: int
    sampler: str
    jit_compile: bool
    metric_names: list[str]
    # Side of the person crop inside the training reader's images ([data] crop_size); the
    # images hold context around it (None: no context).
    records_crop_size: int | None = None


def train_cascade(stage_one: DeepPose, settings: StageSettings, *, train_ds, measure_ds,
                  val_ds, make_optimizer, run: RunLayout, callbacks=(),
                  chief: bool = True, verbose="auto") -> tuple[DeepPose, list[dict]]:
    """Train stages 2..S one after another on simulated predictions; assemble the cascade.

    For each stage s: measure stage s - 1's error distribution on ``measure_ds`` (training
    records, not augmented), train stage s on ``train_ds`` for ``epochs`` x
    ``steps_per_epoch`` steps with an optimizer from ``make_optimizer()``, then score the
    cascade 1..s on ``val_ds``. A stage whose ``stage_<s>.keras`` exists in the run directory is
    taken from there (a re-run resumes after the last finished stage).

    Args:
        stage_one: the trained one-stage DeepPose.
        settings: the :class:`StageSettings`.
        train_ds, measure_ds, val_ds: reader datasets (training; training records once;
            validation).
        make_optimizer: a function returning a fresh optimizer for a stage.
        run: the run directory (``stage_<s>.keras``, ``cascade.json``, ``logs/stage_<s>``).
        callbacks: a function stage -> list of extra Keras callbacks (or an empty tuple).
        chief: whether this process writes files.
        verbose: ``fit``'s verbosity.

    Returns:
        The assembled DeepPose and one report per stage: ``stage``, ``held_out`` (see
        :func:`held_out_report`) and, for stages before the last, ``train_errors`` (the
        :class:`ErrorDistribution` the next stage was trained on, as a dict).
    """
    reports = []
    networks: list[keras.Model] = []
    cascade = stage_one
    writer = tf.summary.create_file_writer(str(run.logs / "cascade")) if chief else None
    for stage in range(1, settings.stages + 1):
        if stage > 1:
            errors = _stage_errors(stage, cascade, measure_ds, settings, run, chief)
            reports[-1]["train_errors"] = errors.to_dict()
            print(f"Cascade: stage {stage - 1}'s mean error on the training records "
                  f"{errors.overall_mean_distance():.4f} ({errors.unit} units), the "
                  f"distribution stage {stage} trains on", flush=True)
            networks.append(_stage_network(stage, cascade, errors, settings, train_ds, val_ds,
                                           make_optimizer, run, callbacks, chief,
                                           verbose))
            cascade = assemble_cascade(stage_one, networks)
        held_out = held_out_report(cascade, val_ds, settings.keypoint_set,
                                   settings.metric_names, settings.sampler)
        reports.append({"stage": stage, "held_out": held_out})
        headline = settings.metric_names[0]
        print(f"Cascade: stages 1-{stage} on the held-out records: "
              f"{metrics.parse_metric(headline).label} "
              f"{_fmt(held_out['metrics'][headline])}, mean error "
              f"{_fmt(held_out['mean_error_px'], 2)} px", flush=True)
        if writer is not None:
            _log_stage(writer, reports, stage)
            write_json_atomic(run.cascade, {"stages": reports})
    if writer is not None:
        writer.close()
    return cascade, reports


def _stage_errors(stage, previous, measure_ds, settings, run, chief) -> ErrorDistribution:
    """The error distribution stage ``stage`` trains on: the one a finished stage was trained
    on (``stage_<s>.errors.json`` beside ``stage_<s>.keras``), else measured now (and saved)."""
    path = run.stage_errors(stage)
    if path.exists() and run.stage_model(stage).exists():
        return ErrorDistribution.from_dict(json.loads(path.read_text()))
    errors = measure_errors(previous, measure_ds, sampler=settings.sampler,
                            max_batches=settings.error_batches)
    if chief:
        write_json_atomic(path, errors.to_dict())
    return errors


def _stage_network(stage, previous, errors, settings, train_ds, val_ds, make_optimizer,
                   run, callbacks, chief, verbose) -> keras.Model:
    """Stage ``stage``'s trained network: from ``stage_<s>.keras`` if a run made it, else
    trained now (and saved there)."""
    path = run.stage_model(stage)
    if path.exists():
        print(f"Cascade: stage {stage} taken from {path}", flush=True)
        return keras.saving.load_model(path, compile=False)
    network = build_stage_network(previous, stage)
    trainer = CascadeStageTrainer(network, template=previous, errors=errors,
                                  draws=settings.draws, keypoint_set=settings.keypoint_set,
                                  augment_config=settings.augment_config,
                                  seed=settings.seed + stage, sampler=settings.sampler,
                                  records_crop_size=settings.records_crop_size)
    trainer.compile(optimizer=make_optimizer(), jit_compile=settings.jit_compile)
    logs = run.stage_logs(stage)
    stage_callbacks = list(callbacks(stage)) if callbacks else []
    if chief:
        stage_callbacks += [keras.callbacks.TensorBoard(str(logs)),
                            keras.callbacks.CSVLogger(str(run.stage_history(stage)))]
    trainer.fit(train_ds, epochs=settings.epochs, steps_per_epoch=settings.steps_per_epoch,
                validation_data=val_ds, callbacks=stage_callbacks, verbose=verbose,
                shuffle=False)
    if chief:
        atomic_save_network(network, path)
    return network


def _log_stage(writer, reports: list[dict], stage: int) -> None:
    """Per-stage scalars under ``logs/cascade`` (step = stage)."""
    with writer.as_default(step=stage):
        held_out = reports[-1]["held_out"]
        for name, value in held_out["metrics"].items():
            if value is not None:
                tf.summary.scalar(f"cascade/val_{name}", value)
        if held_out["mean_error_px"] is not None:
            tf.summary.scalar("cascade/val_mean_error_px", held_out["mean_error_px"])
        if stage > 1:
            tf.summary.scalar("cascade/train_error_of_previous_stage",
                              reports[-2]["train_errors"]["overall_mean_distance"],
                              step=stage - 1)
    writer.flush()


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"

