"""The optional baseline runtimes of ``benchmark.py infer`` and ``train``, and which run here.

Every baseline runs the PyTorch port of the hourglass (``torch_hourglass.py``), through PyTorch
itself or through a runtime fed from it (ONNX Runtime reads ``torch.onnx.export``'s file,
OpenVINO converts the module). None of them is a dependency of keras-pose: they come with the
``bench`` extra, and a baseline whose packages are absent is skipped with a printed reason, as
is a bfloat16 baseline on a CPU without bfloat16 instructions (there it would measure an
emulation nobody deploys).

A registry is a tuple of :class:`Baseline`; :func:`select` splits one into what runs here and
the skip notes. The benchmarks take the registry as an argument, so another set (or a baseline
with a package that is not installed) goes through the same code.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Iterable, Sequence
from importlib.metadata import PackageNotFoundError, version

from keras_pose.precision import (
    BFLOAT16,
    BFLOAT16_FLAGS,
    FLOAT32,
    bfloat16_support,
    read_cpu_flags,
)

INSTALL_HINT = "pip install 'keras-pose[bench]'"


@dataclasses.dataclass(frozen=True)
class Baseline:
    """One baseline configuration.

    Attributes:
        name: the key ``--baselines`` selects it by.
        label: its row in the tables.
        precision: ``float32`` or ``bfloat16``; it is compared with keras-pose at this precision.
        packages: modules it imports (skipped when one is not installed).
        spec: what the worker process needs to build it (merged into the worker spec).
    """

    name: str
    label: str
    precision: str
    packages: tuple[str, ...]
    spec: dict = dataclasses.field(default_factory=dict)


def _torch(name, label, precision=FLOAT32, **spec) -> Baseline:
    return Baseline(name, label, precision, ("torch",), {"runtime": "torch", **spec})


# PyTorch float32, eager and compiled: a baseline of both benchmarks.
_TORCH_FLOAT32 = (
    _torch("torch-nchw", "PyTorch eager NCHW", layout="nchw"),
    _torch("torch-channels-last", "PyTorch eager channels_last", layout="channels_last"),
    _torch("torch-compile", "PyTorch torch.compile channels_last", layout="channels_last",
           compile=True),
)

INFER_BASELINES = (
    *_TORCH_FLOAT32,
    Baseline("onnxruntime", "ONNX Runtime (torch.onnx.export)", FLOAT32,
             ("torch", "onnx", "onnxruntime"), {"runtime": "onnxruntime"}),
    Baseline("openvino-f32", "OpenVINO f32 hint", FLOAT32, ("torch", "openvino"),
             {"runtime": "openvino", "hint": "f32"}),
    Baseline("openvino-bf16", "OpenVINO bf16 hint", BFLOAT16, ("torch", "openvino"),
             {"runtime": "openvino", "hint": "bf16"}),
)

TRAIN_BASELINES = (
    *_TORCH_FLOAT32,
    _torch("torch-bf16", "PyTorch eager bf16 autocast channels_last", BFLOAT16,
           layout="channels_last", autocast=True),
    _torch("torch-compile-bf16", "PyTorch torch.compile bf16 autocast channels_last", BFLOAT16,
           layout="channels_last", compile=True, autocast=True),
)


def precision_of(keras_precision: str) -> str:
    """The baseline precision a keras-pose precision (a Keras dtype policy) is compared with.

    ``mixed_bfloat16`` computes convolutions in bfloat16 with float32 weights, like PyTorch's
    bfloat16 autocast; ``mixed_float16`` has no CPU baseline and maps to itself.
    """
    return {"float32": FLOAT32, "mixed_bfloat16": BFLOAT16}.get(keras_precision, keras_precision)


def missing_packages(baseline: Baseline) -> list[str]:
    return [name for name in baseline.packages if importlib.util.find_spec(name) is None]


def select(registry: Sequence[Baseline], names: Sequence[str] | None = None,
           cpu_flags: Iterable[str] | None = None) -> tuple[list[Baseline], list[str]]:
    """The baselines of ``registry`` that run here, and a skip note for each that does not.

    Args:
        registry: the candidates.
        names: only these (``None``: all); an unknown name raises ``ValueError``.
        cpu_flags: the CPU flags (default: :func:`read_cpu_flags`), for bfloat16 baselines.
    """
    known = {baseline.name for baseline in registry}
    unknown = [name for name in names or () if name not in known]
    if unknown:
        raise ValueError(f"--baselines: unknown {unknown}; choose from {sorted(known)}")
    if cpu_flags is None and any(b.precision == BFLOAT16 for b in registry):
        cpu_flags = read_cpu_flags()
    chosen, notes = [], []
    for baseline in registry:
        if names is not None and baseline.name not in names:
            continue
        missing = missing_packages(baseline)
        if missing:
            notes.append(f"{baseline.label} skipped: {', '.join(missing)} not installed "
                         f"({INSTALL_HINT})")
        elif baseline.precision == BFLOAT16 and not bfloat16_support(cpu_flags):
            notes.append(f"{baseline.label} skipped: this CPU has no bfloat16 instructions "
                         f"(none of {', '.join(BFLOAT16_FLAGS)} in /proc/cpuinfo)")
        else:
            chosen.append(baseline)
    return chosen, notes


def parse_names(text: str | None) -> list[str] | None:
    """``--baselines a,b`` -> ``["a", "b"]``; ``None`` or ``"all"`` -> ``None`` (all)."""
    if text is None or text.strip() == "all":
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


def fastest(medians: dict[str, tuple[str, float]]) -> dict[str, tuple[str, float]]:
    """``{label: (precision, seconds)}`` -> ``{precision: (label, seconds)}`` of the fastest."""
    best: dict[str, tuple[str, float]] = {}
    for label, (precision, seconds) in medians.items():
        if precision not in best or seconds < best[precision][1]:
            best[precision] = (label, seconds)
    return best


def versions() -> str:
    """Versions of the installed baseline packages, for the notes."""

    found = []
    for package in ("torch", "onnxruntime", "openvino"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            continue
    return ", ".join(found) or "none installed"
