"""Pipeline files: one TOML file fully describes a training run.

The dataclasses below are the one place where every pipeline key and its default live. A
pipeline file overrides them; ``--set section.key=value`` overrides the file; the resolved
result is written next to the run's logs (``pipeline.resolved.toml``) so the run can be repeated.
Unknown or mistyped keys are errors that name the key, the file and the valid keys.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import tomllib

from keras_pose import metrics
from keras_pose.data.source import parse_range
from keras_pose.keypoints import KEYPOINT_SETS

# [augment]'s choices; AugmentConfig is defined here, free of Keras, so that loading a
# pipeline needs no deep-learning framework (keras_pose.augment applies it).
DISTRIBUTIONS = ("uniform", "clipped_normal")
SCALE_MODES = ("linear", "log2")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transform; the pipeline file sets these fields.

    Defaults follow the Residual Stacked Hourglass poster (rotation +-40 degrees, scale +-30%,
    translation 2% of the input size, each uniform) plus the usual horizontal flip; the
    rotation probability follows the official hourglass code (``pose-hg-train`` rotates 40% of
    the samples).

    ``distribution`` says how ``rotation``, ``scale`` and ``translation`` are read:

    - ``"uniform"`` (default): each is the half-width of a uniform draw, e.g. the angle is
      uniform in ``[-rotation, rotation]``.
    - ``"clipped_normal"``: each is the standard deviation of a normal draw clipped at two
      standard deviations, e.g. the angle is ``clip(N(0, rotation^2), -2 rotation,
      2 rotation)``. This is ``rnd(x) = max(-2x, min(2x, randn() * x))`` of the hourglass
      code (``pose-hg-train`` ``src/util/pose.lua``); 4.55% of the draws sit on a clip bound.

    ``scale_mode`` says how the scale draw ``d`` becomes a zoom factor: ``"linear"``
    (default) ``1 + d``; ``"log2"`` ``2 ** d``, as the hourglass code scales its crop by
    ``2 ^ rnd(0.25)`` (zoom in ``[2 ** -0.5, 2 ** 0.5]``, symmetric in log scale).

    Args:
        rotation: rotation range in degrees (half-width or standard deviation, above).
        rotation_prob: probability that a sample is rotated at all.
        scale: zoom range (half-width or standard deviation of ``d``, above; a zoom above 1
            makes the person appear larger).
        translation: shift range as a fraction of the input size, drawn per axis and
            multiplied by (width, height).
        flip_prob: probability of a horizontal flip (with left/right keypoints swapped).
        brightness: photometric jitter, off at 0: adds ``U(-brightness, brightness) * 255``.
        contrast: multiplies the deviation from the image's mean grey by
            ``U(1 - contrast, 1 + contrast)``; off at 0.
        saturation: multiplies the deviation from each pixel's grey by
            ``U(1 - saturation, 1 + saturation)``; off at 0.
        channel_scale: multiplies each colour channel by its own
            ``U(1 - channel_scale, 1 + channel_scale)`` and clips to [0, 255], the hourglass
            code's colour augmentation (0.4 there); off at 0. Photometric draws are uniform
            whatever ``distribution`` says.
        distribution: ``"uniform"`` or ``"clipped_normal"`` (above).
        scale_mode: ``"linear"`` or ``"log2"`` (above).
    """

    rotation: float = 40.0
    rotation_prob: float = 0.4
    scale: float = 0.3
    translation: float = 0.02
    flip_prob: float = 0.5
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    channel_scale: float = 0.0
    distribution: str = "uniform"
    scale_mode: str = "linear"

    def __post_init__(self):
        _check_choice("distribution", self.distribution, DISTRIBUTIONS)
        _check_choice("scale_mode", self.scale_mode, SCALE_MODES)
        # The largest draw is the range itself (uniform) or twice it (clipped normal).
        reach = 2.0 if self.distribution == "clipped_normal" else 1.0
        why = (" (clipped_normal draws reach twice the range)" if reach > 1 else "")
        _check_range("rotation", self.rotation, 0.0, 180.0 / reach, why=why)
        _check_range("rotation_prob", self.rotation_prob, 0.0, 1.0)
        if self.scale_mode == "linear":  # the zoom 1 - reach * scale must stay positive
            _check_range("scale", self.scale, 0.0, 1.0 / reach, upper_open=True, why=why)
        else:
            _check_range("scale", self.scale, 0.0, 1.0, upper_open=True)
        _check_range("translation", self.translation, 0.0, 1.0)
        _check_range("flip_prob", self.flip_prob, 0.0, 1.0)
        _check_range("brightness", self.brightness, 0.0, 1.0)
        _check_range("contrast", self.contrast, 0.0, 1.0)
        _check_range("saturation", self.saturation, 0.0, 1.0)
        _check_range("channel_scale", self.channel_scale, 0.0, 1.0)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> AugmentConfig:
        """Build a config from a pipeline-file table, rejecting unknown keys by name."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"Unknown augmentation option(s) {unknown}; allowed options: {sorted(known)}"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, float | str]:
        return dataclasses.asdict(self)

    @property
    def photometric(self) -> bool:
        return (self.brightness > 0 or self.contrast > 0 or self.saturation > 0
                or self.channel_scale > 0)


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(
            f"AugmentConfig.{name} must be one of {list(allowed)}, received {name}={value!r}"
        )


def _check_range(name, value, low, high, upper_open=False, why=""):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"AugmentConfig.{name} must be a number, received {name}={value!r}")
    too_high = value >= high if upper_open else value > high
    if value < low or too_high:
        bracket = ")" if upper_open else "]"
        raise ValueError(
            f"AugmentConfig.{name} must be in [{low}, {high}{bracket}{why}, "
            f"received {name}={value}"
        )


class PipelineError(ValueError):
    """A pipeline file or override that cannot be used; the message says where and why."""


@dataclasses.dataclass
class ModelSection:
    """``[model]``: which network and its builder options (passed to ``build_model``)."""

    name: str = "stacked_hourglass"
    input_size: int = 256
    options: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class SyntheticSection:
    """``[data.synthetic]``: make the embedded synthetic dataset before training."""

    enabled: bool = False
    directory: str = "data/synthetic"
    num_train_images: int = 2000
    num_val_images: int = 200
    image_size: int = 256
    seed: int = 0


SOURCE_FORMATS = ("", "coco", "lsp", "lspet", "mpii")


@dataclasses.dataclass
class SourceSection:
    """``[data.source]``: convert a real dataset to TFRecords before training (cached).

    Paths of files and image folders are relative to ``path``; an empty one takes the
    format's usual layout (``keras_pose.training.inputs.SOURCE_LAYOUTS``): LSP/LSPET
    ``joints.mat`` and ``images/``; MPII ``annot/train.json``, ``annot/valid.json`` and
    ``images/``; COCO ``annotations/person_keypoints_{train,val}2017.json`` and
    ``{train,val}2017/``.
    """

    format: str = ""  # "" = off, "coco", "lsp", "lspet" or "mpii"
    path: str = ""  # the dataset folder
    directory: str = ""  # where records go ("" = data/<format>); records-<crop_size>/ inside
    # 1-based inclusive "A-B": images (LSP, LSPET) or person entries (MPII, COCO files: all).
    train_range: str = ""
    val_range: str = ""
    train_annotations: str = ""
    val_annotations: str = ""
    train_images: str = ""
    val_images: str = ""
    head_boxes: str = ""  # MPII validation head boxes (.mat); "" = upper neck to head top
    layout: str = "auto"  # LSP/LSPET flag sense: "auto" (from the array), "lsp" or "lspet"
    workers: int = 0  # converter processes; 0 = automatic (CPU count), 1 = in-process


@dataclasses.dataclass
class DataSection:
    """``[data]``: records, keypoint set and how records are read."""

    keypoint_set: str = "coco17"
    train_records: str = ""
    val_records: str = ""
    # COCO json of the validation split, for COCO keypoint AP at the end of training.
    val_annotations: str = ""
    crop_size: int = 256
    margin: float = 1.25
    # Stored side / crop side: the records keep this much of the surrounding image around each
    # crop, at the crop's scale, so a zoom-out or rotation shows real surroundings (1 = none,
    # black there). keras_pose.augment.context_needed([augment]) is what the ranges reach.
    context: float = 1.0
    shuffle_buffer: int = 2048
    num_parallel_calls: int = 2
    synthetic: SyntheticSection = dataclasses.field(default_factory=SyntheticSection)
    source: SourceSection = dataclasses.field(default_factory=SourceSection)


@dataclasses.dataclass(frozen=True)
class AugmentSection(AugmentConfig):
    """``[augment]``: the ranges of ``augment.AugmentConfig`` (defaults there, from the poster),
    plus whether to augment at all and which sampler warps the images."""

    enabled: bool = True
    # "auto": the gather sampler under XLA (it compiles; affine_transform does not), TF's
    # affine_transform op without XLA (measured faster there on CPU).
    sampler: str = "auto"


@dataclasses.dataclass
class TargetsSection:
    """``[targets]``: Gaussian sigma in heatmap pixels (0 = 1 px per 64 heatmap pixels)."""

    sigma: float = 0.0


@dataclasses.dataclass
class LossSection:
    """``[loss]``: weight of each intermediate output in the summed loss (empty = all 1)."""

    output_weights: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class OptimizerSection:
    """``[optimizer]``: RMSprop 2.5e-4 as in the hourglass code and the poster.

    ``epsilon_outside_sqrt`` (RMSprop only): divide by ``sqrt(v) + epsilon`` as Torch7 and
    PyTorch do, instead of Keras's ``sqrt(v + epsilon)``; off = Keras's built-in rule. The
    reference pipelines turn it on (``keras_pose.training.optimizers``). Adam needs no such
    option (Keras's Adam already adds epsilon outside the root) and SGD has no epsilon.
    """

    name: str = "rmsprop"
    learning_rate: float = 2.5e-4
    rho: float = 0.99
    momentum: float = 0.0
    epsilon: float = 1e-8
    epsilon_outside_sqrt: bool = False
    weight_decay: float = 0.0
    clipnorm: float = 0.0


@dataclasses.dataclass
class ScheduleSection:
    """``[schedule]``: ``constant``, ``step`` (x``factor`` every ``step_epochs``) or
    ``linear_decay`` (constant, then linear to ``final_scale`` over the last ``decay_fraction``)."""

    kind: str = "step"
    step_epochs: int = 50
    factor: float = 0.1
    decay_fraction: float = 0.3
    final_scale: float = 0.1


@dataclasses.dataclass
class TrainSection:
    """``[train]``: loop length, batch, precision, compilation and distribution."""

    batch_size: int = 6
    epochs: int = 100
    steps_per_epoch: int = 8000
    validation_records: int = 0  # 0 = the whole validation set
    seed: int = 0
    jit_compile: str = "auto"  # "auto" (XLA on GPU, off on CPU), "true" or "false"
    mixed_precision: str = "float32"  # "float32", "mixed_float16" or "mixed_bfloat16"
    strategy: str = "default"  # "default", "mirrored" or "multiworker"


@dataclasses.dataclass
class CallbacksSection:
    """``[callbacks]``: metrics on the validation records, TensorBoard images, checkpoints.

    ``metrics`` names what is scored (``keras_pose.metrics``: ``pck_torso@0.2``,
    ``pck_bbox@0.05``, ``pckh@0.5``, ``poster_acc@0.5``, any threshold after the ``@``) every
    ``pck_every`` epochs and at the end; the first is the headline: the best checkpoint and
    early stopping monitor it and the closing summary leads with it.
    """

    metrics: list = dataclasses.field(default_factory=lambda: list(metrics.DEFAULT_METRICS))
    pck_every: int = 1
    images_every: int = 1
    num_images: int = 4
    flip_test: bool = False
    early_stopping_patience: int = 0  # 0 = off
    profile_batch: int = 0  # 0 = off


@dataclasses.dataclass
class CascadeSection:
    """``[cascade]``: DeepPose trained stage by stage, as in the paper (``stages = 1``: off).

    With ``stages = S >= 2`` the run trains stage 1 as usual ([train], one-stage DeepPose),
    then each stage s = 2..S on its own: crops of side ``sigma`` x the ground truth's torso
    diameter around the ground truth displaced by offsets drawn from stage s - 1's measured
    error distribution, ``draws`` offsets per record and joint in every step, for ``epochs``
    x ``steps_per_epoch`` steps with [optimizer] and [schedule] (keras_pose.training.cascade).
    ``sigma`` is the network's ``crop_scale`` and ``stages`` its ``num_stages``, so [model]
    options must not set either. ``error_records``: training records the error distribution
    is measured on (0 = all).
    """

    stages: int = 1
    sigma: float = 1.0
    draws: int = 1
    epochs: int = 1
    steps_per_epoch: int = 1000
    error_records: int = 0


@dataclasses.dataclass
class ExportSection:
    """``[export]``: the SavedModel written at the end of training."""

    enabled: bool = True
    name: str = ""  # "" = the pipeline's name
    base: str = "saved_models"


@dataclasses.dataclass
class Pipeline:
    """A whole run: every section of a pipeline file."""

    name: str = "run"
    description: str = ""
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    data: DataSection = dataclasses.field(default_factory=DataSection)
    augment: AugmentSection = dataclasses.field(default_factory=AugmentSection)
    targets: TargetsSection = dataclasses.field(default_factory=TargetsSection)
    loss: LossSection = dataclasses.field(default_factory=LossSection)
    optimizer: OptimizerSection = dataclasses.field(default_factory=OptimizerSection)
    schedule: ScheduleSection = dataclasses.field(default_factory=ScheduleSection)
    train: TrainSection = dataclasses.field(default_factory=TrainSection)
    callbacks: CallbacksSection = dataclasses.field(default_factory=CallbacksSection)
    cascade: CascadeSection = dataclasses.field(default_factory=CascadeSection)
    export: ExportSection = dataclasses.field(default_factory=ExportSection)

    def validate(self, source: str = "pipeline") -> None:
        """Check values that types alone do not catch; raise :class:`PipelineError`."""
        choices = {
            ("optimizer", "name"): ("rmsprop", "adam", "sgd"),
            ("schedule", "kind"): ("constant", "step", "linear_decay"),
            ("train", "jit_compile"): ("auto", "true", "false"),
            ("train", "mixed_precision"): ("float32", "mixed_float16", "mixed_bfloat16"),
            ("train", "strategy"): ("default", "mirrored", "multiworker"),
            ("augment", "sampler"): ("auto", "gather", "affine_transform"),
        }
        for (section, key), allowed in choices.items():
            value = getattr(getattr(self, section), key)
            if value not in allowed:
                raise PipelineError(
                    f"{source}: [{section}] {key} = {value!r} is not valid; "
                    f"choose one of {list(allowed)}"
                )
        self._validate_source(source)
        positive = [("train", "batch_size"), ("train", "epochs"), ("train", "steps_per_epoch"),
                    ("model", "input_size"), ("data", "crop_size")]
        for section, key in positive:
            if getattr(getattr(self, section), key) <= 0:
                raise PipelineError(f"{source}: [{section}] {key} must be > 0")
        if not 1.0 <= self.data.context <= 8.0:
            raise PipelineError(f"{source}: [data] context must be in [1, 8] (stored side / "
                                f"crop side), received {self.data.context}")
        self._validate_metrics(source)
        self._validate_cascade(source)

    def _validate_cascade(self, source: str) -> None:
        cascade = self.cascade
        for key, low in (("stages", 1), ("draws", 1), ("epochs", 1), ("steps_per_epoch", 1),
                         ("error_records", 0)):
            if getattr(cascade, key) < low:
                raise PipelineError(f"{source}: [cascade] {key} must be >= {low}, got "
                                    f"{getattr(cascade, key)}")
        if not cascade.sigma > 0:
            raise PipelineError(f"{source}: [cascade] sigma must be > 0, got {cascade.sigma}")
        if cascade.stages == 1:
            return
        if self.model.name != "deeppose":
            raise PipelineError(f"{source}: [cascade] stages = {cascade.stages} trains a "
                                f"DeepPose cascade, but [model] name = {self.model.name!r}; "
                                "set stages = 1 or name = \"deeppose\"")
        for key, owner in (("num_stages", "stages"), ("crop_scale", "sigma")):
            if key in self.model.options:
                raise PipelineError(
                    f"{source}: [model] options set {key}, which [cascade] {owner} sets in a "
                    f"stage-wise cascade ([cascade] stages = {cascade.stages}); remove it")

    def _validate_metrics(self, source: str) -> None:
        """Known metric names, each defined for the keypoint set (not a crash at the first
        evaluation). Whether the model has heatmaps is checked when the run builds it."""
        names = self.callbacks.metrics
        try:
            specs = metrics.parse_metrics(names)
            keypoint_set = KEYPOINT_SETS.get(self.data.keypoint_set)
            if keypoint_set is not None:  # an unknown set is reported where it is loaded
                metrics.check_metrics(specs, keypoint_set)
        except ValueError as error:
            raise PipelineError(f"{source}: [callbacks] metrics = {names!r}: {error}") from None


    def _validate_source(self, source: str) -> None:
        section = self.data.source
        allowed = {"format": SOURCE_FORMATS, "layout": ("auto", "lsp", "lspet")}
        for key, values in allowed.items():
            if getattr(section, key) not in values:
                raise PipelineError(
                    f"{source}: [data.source] {key} = {getattr(section, key)!r} is not valid; "
                    f"choose one of {list(values)}"
                )
        for key in ("train_range", "val_range"):
            try:
                parse_range(getattr(section, key))
            except ValueError as error:
                raise PipelineError(f"{source}: [data.source] {key}: {error}") from None
        if section.workers < 0:
            raise PipelineError(f"{source}: [data.source] workers must be >= 0")
        if section.format and self.data.synthetic.enabled:
            raise PipelineError(
                f"{source}: [data.source] format = {section.format!r} and [data.synthetic] "
                "enabled = true both make the records; choose one"
            )


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check a TOML value against a dataclass field type (ints are accepted as floats)."""
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    origin = typing.get_origin(tp) or tp
    if origin in (dict, list):
        if not isinstance(value, origin):
            raise PipelineError(f"{where} must be of type {origin.__name__}, got {value!r}")
        return value
    if tp in (bool, int, float, str):
        # bool is an int subclass; keep them apart so `epochs = true` is caught.
        if type(value) is not tp:
            raise PipelineError(f"{where} must be of type {_type_name(tp)}, got {value!r}")
        return value
    return value


def _from_mapping(cls: type, data: Mapping[str, Any], source: str, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            where = f"[{prefix}]" if prefix else "top level"
            raise PipelineError(
                f"{source}: unknown key {key!r} in {where}; valid keys: {sorted(fields)}"
            )
        tp = hints[key]
        name = f"{prefix}.{key}" if prefix else key
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise PipelineError(f"{source}: [{name}] must be a table, got {value!r}")
            kwargs[key] = _from_mapping(tp, value, source, name)
        else:
            kwargs[key] = _coerce(value, tp, f"{source}: {name}")
    try:
        return cls(**kwargs)
    except ValueError as error:  # a section's own validation (e.g. augmentation ranges)
        raise PipelineError(f"{source}: [{prefix}] {error}") from None


def pipeline_from_dict(data: Mapping[str, Any], source: str = "pipeline") -> Pipeline:
    """Build and validate a :class:`Pipeline` from a parsed TOML mapping."""
    pipeline = _from_mapping(Pipeline, data, source, "")
    pipeline.validate(source)
    return pipeline


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise PipelineError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string: --set model.name=deeppose
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply ``section.key=value`` overrides (TOML values) to a raw pipeline mapping."""
    for text in overrides:
        path, value = _parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise PipelineError(f"--set {text!r}: {part!r} is not a table")
        node[path[-1]] = value
    return data


def load_pipeline(path: str | pathlib.Path | None, overrides: Iterable[str] = ()) -> Pipeline:
    """Read a pipeline TOML file, apply ``--set`` overrides, validate.

    Raises:
        PipelineError: the file is missing or not TOML, or a key or value is invalid; the
            message names the file and the key.
    """
    data: dict = {}
    source = "--set"
    if path is not None:
        path = pathlib.Path(path)
        source = str(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise PipelineError(f"pipeline file not found: {path}") from None
        except tomllib.TOMLDecodeError as error:
            raise PipelineError(f"{path}: not valid TOML: {error}") from None
    data = apply_overrides(data, overrides)
    return pipeline_from_dict(data, source)


def toml_value(value: Any) -> str:
    """``value`` as TOML (also what a ``--set section.key=VALUE`` override takes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def to_toml(pipeline: Pipeline) -> str:
    """Serialize a resolved pipeline to TOML (every key, defaults included)."""
    lines: list[str] = []

    def emit(obj: Any, prefix: str) -> None:
        scalars = [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)
                   if not dataclasses.is_dataclass(getattr(obj, f.name))]
        tables = [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)
                  if dataclasses.is_dataclass(getattr(obj, f.name))]
        if prefix:
            lines.append(f"\n[{prefix}]")
        for key, value in scalars:
            lines.append(f"{key} = {toml_value(value)}")
        for key, value in tables:
            emit(value, f"{prefix}.{key}" if prefix else key)

    emit(pipeline, "")
    return "\n".join(lines).lstrip() + "\n"
