"""tf.distribute for a run: the strategy a pipeline names, this process's role in a
multi-worker cluster, and where XLA can compile the training step."""

from __future__ import annotations

import tensorflow as tf

from keras_pose.pipeline import PipelineError


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy a pipeline names (``default`` = no distribution)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _cluster_resolver(strategy: tf.distribute.Strategy):
    try:
        return strategy.cluster_resolver
    except (AttributeError, NotImplementedError):
        return None


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Processes training together (chief and workers of TF_CONFIG's cluster; 1 without)."""
    resolver = _cluster_resolver(strategy)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, len(spec.get("chief", [])) + len(spec.get("worker", [])))


def worker_role(strategy: tf.distribute.Strategy) -> tuple[bool, int]:
    """(is this process the chief, its task index) in a multi-worker cluster.

    The chief is task ``chief`` or, without one, ``worker`` 0 (TF_CONFIG conventions); a
    process outside any cluster is the chief.
    """
    resolver = _cluster_resolver(strategy)
    task_type = getattr(resolver, "task_type", None)
    if not task_type:
        return True, 0
    task_id = int(getattr(resolver, "task_id", 0) or 0)
    if task_type == "chief":
        return True, task_id
    has_chief = bool(resolver.cluster_spec().as_dict().get("chief"))
    return task_type == "worker" and task_id == 0 and not has_chief, task_id


def resolve_jit_compile(value: str, strategy: tf.distribute.Strategy | None = None) -> bool:
    """``auto`` = XLA on GPU only (on CPU it measured slower, quickstart.md), and only with a
    single replica, like Keras's own ``auto``.

    Keras 3 compiles the whole distributed step as one XLA computation: that cannot span the
    devices of one machine, and XLA has no collectives on CPU, so ``true`` in those cases is
    a :class:`PipelineError` instead of a failure at the first step.

    Args:
        value: ``[train] jit_compile``: ``"auto"``, ``"true"`` or ``"false"``.
        strategy: the run's strategy (default: the current one).
    """
    strategy = strategy or tf.distribute.get_strategy()
    gpus = bool(tf.config.list_physical_devices("GPU"))
    replicas = strategy.num_replicas_in_sync
    if value == "auto":
        return gpus and replicas == 1
    if value == "true" and replicas > 1:
        local = len(strategy.extended.worker_devices)
        if local > 1 or not gpus:
            where = f"{local} devices of one machine" if local > 1 else "CPU workers"
            raise PipelineError(
                f"[train] jit_compile = true: XLA cannot compile a training step spread over "
                f"{where} ({replicas} replicas); use jit_compile = \"auto\" or \"false\"")
    return value == "true"
