"""Serving precision: where bfloat16 arithmetic exists (the network's bfloat16 copy is
``keras_pose.models.fold.cast_network``).

bfloat16 keeps float32's exponent with an 8-bit mantissa (about 3 significant digits). It pays
only on hardware with bfloat16 instructions: Intel AMX tiles or AVX512-BF16 dot products on a
CPU, compute capability 8.0 (Ampere) or later on an NVIDIA GPU. Elsewhere bfloat16 is
emulated (converted to float32 and back around the arithmetic): it loses precision and buys no
speed, so the export refuses it there instead of offering an override.

Also the one home of the CPU capability check the benchmarks use (no TensorFlow import at
module level: the PyTorch baseline workers import it too).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

FLOAT32, BFLOAT16 = "float32", "bfloat16"
PRECISIONS = (FLOAT32, BFLOAT16)
# /proc/cpuinfo flags of bfloat16 arithmetic: AMX tiles (Intel Sapphire Rapids and later) or
# AVX512-BF16 dot products (Intel Cooper Lake, AMD Zen 4 and later).
BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")
# NVIDIA GPUs compute bfloat16 natively from Ampere (compute capability 8.0) on.
GPU_BFLOAT16_CAPABILITY = (8, 0)


class PrecisionError(ValueError):
    """A precision this machine cannot serve well (or one that does not exist)."""


def read_cpu_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo``; ``None`` where it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        return None
    return set()


def bfloat16_support(flags: Iterable[str] | None) -> str | None:
    """The first of :data:`BFLOAT16_FLAGS` the CPU has, or ``None``."""
    flags = set(flags or ())
    return next((flag for flag in BFLOAT16_FLAGS if flag in flags), None)


def gpu_capabilities() -> list[tuple[int, int]]:
    """The compute capability of each visible GPU (empty without one)."""
    # TensorFlow only here: the CPU check serves the benchmarks' non-TensorFlow workers too.
    import tensorflow as tf

    capabilities = []
    for device in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(device).get("compute_capability")
        if capability:
            capabilities.append(tuple(int(v) for v in capability))
    return capabilities


def bfloat16_hardware(cpu_flags: Iterable[str] | None = None,
                      gpus: Sequence[tuple[int, int]] | None = None) -> str | None:
    """What computes bfloat16 natively here (``"GPU 8.0"``, ``"amx_bf16"``...), or ``None``.

    Args:
        cpu_flags: the CPU's flags (default: :func:`read_cpu_flags`).
        gpus: the GPUs' compute capabilities (default: :func:`gpu_capabilities`).
    """
    gpus = gpu_capabilities() if gpus is None else gpus
    for capability in gpus:
        if tuple(capability) >= GPU_BFLOAT16_CAPABILITY:
            return f"GPU {capability[0]}.{capability[1]}"
    return bfloat16_support(read_cpu_flags() if cpu_flags is None else cpu_flags)


def check_precision(precision: str, *, cpu_flags: Iterable[str] | None = None,
                    gpus: Sequence[tuple[int, int]] | None = None) -> str | None:
    """Refuse a serving precision this machine cannot compute natively.

    Args:
        precision: ``float32`` or ``bfloat16``.
        cpu_flags, gpus: as for :func:`bfloat16_hardware` (default: this machine's).

    Returns:
        The bfloat16 hardware found (``None`` for float32).

    Raises:
        PrecisionError: an unknown precision, or bfloat16 without bfloat16 hardware.
    """
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, "
                             f"received {precision!r}")
    if precision == FLOAT32:
        return None
    hardware = bfloat16_hardware(cpu_flags, gpus)
    if hardware is None:
        raise PrecisionError(
            "bfloat16 needs a CPU with bfloat16 instructions (none of "
            f"{', '.join(BFLOAT16_FLAGS)} in /proc/cpuinfo) or an NVIDIA GPU of compute "
            f"capability {GPU_BFLOAT16_CAPABILITY[0]}.{GPU_BFLOAT16_CAPABILITY[1]} or later; "
            "this machine has neither, and emulated bfloat16 loses precision for no speed: "
            "export float32 (or export on the serving hardware)")
    return hardware
