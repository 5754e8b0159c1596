"""Callbacks: PCK on the validation records, TensorBoard pictures, the best checkpoint, a
backup that survives a kill, a stop at the first non-finite loss, a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import threading
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_pose import evaluate, metrics, visualize
from keras_pose.compat import set_initial_epoch
from keras_pose.io import write_json_atomic
from keras_pose.keypoints import KeypointSet
from keras_pose.resources import peak_rss_mib


def atomic_save_network(network: keras.Model, path: pathlib.Path) -> None:
    """Save a ``.keras`` file so that ``path`` only ever holds a complete file."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    _save_then_rename(lambda: network.save(tmp), tmp, path)


def _save_then_rename(save, temp: pathlib.Path, path: pathlib.Path) -> None:
    """``save()`` writes ``temp``, renamed to ``path`` once complete. On a failure (a full
    disk) ``temp`` is removed, ``path`` keeps its previous file, and the error names ``path``."""
    try:
        save()
        os.replace(temp, path)
    except Exception as error:
        temp.unlink(missing_ok=True)
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise CheckpointError(
            f"saving {path} failed ({type(error).__name__}: {reason}); its previous version, "
            "if any, is intact") from error
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


class CheckpointError(OSError):
    """A checkpoint or backup could not be written (a full disk); it names the file."""


def summary_writer(log_dir):
    """A ``tf.summary`` writer for ``log_dir``: a path (a new writer), a writer (itself) or
    ``None``.

    TensorBoard follows only the newest event file of a directory, so callbacks that write
    into one directory must share one writer (each new writer starts a new event file).
    """
    if log_dir is None or hasattr(log_dir, "as_default"):
        return log_dir
    return tf.summary.create_file_writer(os.fspath(log_dir))


class PCKCallback(keras.callbacks.Callback):
    """Scores the configured metrics on the validation records every ``every`` epochs.

    Writes each metric into the epoch logs under its ``MetricSpec.log_name`` (``val_pck`` for
    ``pck_torso@0.2``, ``val_pck_bbox`` for ``pck_bbox@0.05``, ``val_<name>`` otherwise), so
    that checkpointing, early stopping and TensorBoard see them (place this callback before
    them), and per-keypoint values to TensorBoard under ``keypoint_<name>/<keypoint>``.

    Args:
        dataset: validation reader batches (finite).
        keypoint_set: names for the per-keypoint scalars.
        every: evaluate every N epochs (and always at the last epoch).
        log_dir: TensorBoard directory for the per-keypoint scalars, or a ``tf.summary``
            writer (share one with :class:`TensorBoardImages` writing the same directory), or
            ``None``.
        total_epochs: the run's epochs (the last one is always scored).
        flip_test: average with the mirrored input's prediction.
        metric_names: the metrics, the monitored headline first (default: PCK@0.2 torso and
            PCK@0.05 bbox).

    Raises:
        ValueError: an unknown metric, or one undefined for the keypoint set.
    """

    def __init__(self, dataset, keypoint_set: KeypointSet, every: int = 1,
                 log_dir: str | None = None, total_epochs: int | None = None,
                 flip_test: bool = False,
                 metric_names: Sequence[str] = metrics.DEFAULT_METRICS):
        super().__init__()
        self.specs = metrics.parse_metrics(metric_names)
        metrics.check_metrics(self.specs, keypoint_set)
        self.dataset = dataset
        self.keypoint_set = keypoint_set
        self.every = max(1, int(every))
        self.total_epochs = total_epochs
        self.flip_test = flip_test
        self.writer = summary_writer(log_dir or None)
        self._predict = None
        self.last: dict | None = None

    @property
    def monitor(self) -> str:
        """The headline's epoch-log name: what the best checkpoint and early stopping watch."""
        return self.specs[0].log_name

    def on_epoch_end(self, epoch, logs=None):
        last_epoch = self.total_epochs is not None and epoch + 1 == self.total_epochs
        if (epoch + 1) % self.every and not last_epoch:
            return
        network = self.model.network
        if self._predict is None:  # trace once, reuse every epoch
            self._predict = evaluate.make_predict_function(
                network, keypoint_set=self.keypoint_set, flip_test=self.flip_test,
                sampler=self.model.sampler)
        predictions = evaluate.predict_records(network, self.dataset,
                                               keypoint_set=self.keypoint_set,
                                               predict_function=self._predict)
        report = evaluate.metric_report(predictions, self.keypoint_set,
                                        [spec.name for spec in self.specs])
        self.last = report
        if logs is not None:
            for spec in self.specs:
                # An undefined value (no person scored) logs 0 so monitors always see a number.
                logs[spec.log_name] = report[spec.name] or 0.0
        if self.writer is not None:
            self._write_per_keypoint(report, epoch)

    def _write_per_keypoint(self, report: dict, epoch: int) -> None:
        with self.writer.as_default(step=epoch):
            for spec in self.specs:
                for name, value in report["per_keypoint"][spec.name].items():
                    if value is not None:
                        tf.summary.scalar(f"keypoint_{spec.name}/{name}", value)
        self.writer.flush()


class TrainingPeakMemory(keras.callbacks.Callback):
    """Notes the process's peak resident memory when the first validation pass starts.

    That is the peak of training alone: the validation loss, the callbacks' predictions, the
    final evaluation and the export add theirs afterwards. A run reports both
    (``peak_rss_mib_training`` and ``peak_rss_mib`` in its summary), so that memory added
    around training shows as a difference. Without validation data, the first epoch's end
    counts (place this callback first, before the callbacks that predict).
    """

    def __init__(self):
        super().__init__()
        self.peak_mib: float | None = None

    def _note(self):
        if self.peak_mib is None:
            self.peak_mib = peak_rss_mib()

    def on_test_begin(self, logs=None):
        self._note()

    def on_epoch_end(self, epoch, logs=None):
        self._note()


class NonFiniteLoss(RuntimeError):
    """A training step's loss was NaN or infinite; raised by :class:`StopOnNonFiniteLoss`.

    Attributes:
        step: the global training step (1-based: the optimizer's step count after it).
        epoch: the epoch, 1-based; ``batch`` the step within it, 1-based.
        losses: every non-finite loss of the step logs, ``{log name: value}``.
    """

    def __init__(self, message: str, *, step: int, epoch: int, batch: int, losses: dict):
        super().__init__(message)
        self.step, self.epoch, self.batch, self.losses = step, epoch, batch, losses


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops ``fit`` at the first training step whose loss is NaN or infinite.

    Raises :class:`NonFiniteLoss` naming the global step, the epoch and batch, and each output
    whose loss (``loss_<output>`` in the logs) is not finite. Unlike
    ``keras.callbacks.TerminateOnNaN``, which lets the epoch finish, it stops at once: the
    epoch-end callbacks (best checkpoint, backup, CSV and TensorBoard logs) never see the
    broken weights and keep the last finished epoch.

    Args:
        epochs: the run's planned epochs, for the message.
        steps_per_epoch: steps per epoch, for the message.
    """

    def __init__(self, epochs: int | None = None, steps_per_epoch: int | None = None):
        super().__init__()
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        losses = {}
        for name, value in (logs or {}).items():
            if name == "loss" or name.startswith("loss_"):
                values = np.asarray(value, np.float64).reshape(-1)
                if values.size and not np.isfinite(values).all():
                    losses[name] = float(values[~np.isfinite(values)][0])
        if not losses:
            return
        step = int(np.asarray(self.model.optimizer.iterations))
        epoch, batch = self._epoch + 1, int(batch) + 1
        of_epochs = f"/{self.epochs}" if self.epochs else ""
        of_steps = f"/{self.steps_per_epoch}" if self.steps_per_epoch else ""
        outputs = [f"output {name[5:]!r} loss = {value}" for name, value in losses.items()
                   if name != "loss"]
        total = losses.get("loss")
        what = "NaN" if any(np.isnan(v) for v in losses.values()) else "infinite"
        detail = ", ".join(outputs)
        if total is not None:
            detail = f"{detail} (total loss = {total})" if detail else f"total loss = {total}"
        raise NonFiniteLoss(
            f"the loss became {what} at training step {step} (epoch {epoch}{of_epochs}, "
            f"batch {batch}{of_steps}): {detail}",
            step=step, epoch=epoch, batch=batch, losses=losses)


class Interrupted(RuntimeError):
    """``fit`` stopped on a signal (:class:`StopOnSignal`); ``signum``, ``epoch`` (1-based)."""

    def __init__(self, message: str, *, signum: int, epoch: int):
        super().__init__(message)
        self.signum, self.epoch = signum, epoch


class StopOnSignal(keras.callbacks.Callback):
    """Turns SIGTERM during ``fit`` into a clean stop at the next step.

    Python's default for SIGTERM ends the process at once, without a word. From
    ``on_train_begin`` this callback's handler only notes the signal; the next training or
    validation step, or the next epoch, then raises :class:`Interrupted`. A signal during the
    epoch-end callbacks lets them finish, so that epoch's checkpoint, logs and backup are
    complete; a step begun in an unfinished epoch is dropped (a resume starts that epoch
    again from the backup). The first signal restores the previous handler, so a second one
    ends the process as before. Call :meth:`restore` when ``fit`` ends, also by an exception
    (``fit`` then skips ``on_train_end``). Only the main thread can set handlers; elsewhere
    this does nothing.

    Args:
        signals: the signals to catch.
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGTERM,)):
        super().__init__()
        self.signals = tuple(signals)
        self.received: int | None = None
        self._previous: dict[int, object] = {}
        self._epoch = 0

    def on_train_begin(self, logs=None):
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._note)

    def _note(self, signum, frame):
        self.received = signum
        self.restore()

    def restore(self) -> None:
        """Put back the handlers that were there before ``on_train_begin``."""
        while self._previous:
            signum, handler = self._previous.popitem()
            signal.signal(signum, handler)

    def _stop_if_signalled(self):
        if self.received is None:
            return
        name = signal.Signals(self.received).name
        epochs = (self.params or {}).get("epochs")
        steps = int(np.asarray(self.model.optimizer.iterations))
        raise Interrupted(f"stopped by {name} during epoch {self._epoch + 1}"
                          f"{f'/{epochs}' if epochs else ''} (after training step {steps})",
                          signum=self.received, epoch=self._epoch + 1)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._stop_if_signalled()

    def on_train_batch_begin(self, batch, logs=None):
        self._stop_if_signalled()

    def on_test_batch_begin(self, batch, logs=None):
        self._stop_if_signalled()

    def on_train_end(self, logs=None):
        self.restore()


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that survives a kill at any instant.

    Keras writes ``latest.weights.h5`` in place and the epoch number in a second file, so a
    SIGKILL during a save leaves a truncated HDF5 file or weights one epoch ahead of the
    metadata. Here each save writes a new ``epoch-N.weights.h5`` under a temporary name, then
    atomically replaces ``state.json`` (epoch, batch and the weights file name); only then are
    older weights removed. A resume reads ``state.json`` and the complete file it names.
    """

    def __init__(self, backup_dir: str, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self._state_path = pathlib.Path(backup_dir) / "state.json"

    def _load_model(self):
        if not self.model.built:
            raise ValueError(f"The model must be built before fit() can restore it: {self.model}")
        if not self._state_path.exists():
            return
        state = json.loads(self._state_path.read_text())
        if self.model.optimizer is not None and not self.model.optimizer.built:
            # Optimizer variables must exist before their values can be loaded.
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(str(self._state_path.parent / state["weights"]))
        set_initial_epoch(self.model, state["epoch"])

    def _save_model(self):
        backup = self._state_path.parent
        backup.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{self._current_epoch:05d}-batch-{self._last_batch_seen:06d}.weights.h5"
        temp = backup / f"tmp-{os.getpid()}-{name}"
        _save_then_rename(lambda: self.model.save_weights(str(temp), overwrite=True), temp,
                          backup / name)
        try:
            write_json_atomic(self._state_path, {"epoch": self._current_epoch,
                                                 "batch": self._last_batch_seen,
                                                 "weights": name})
        except OSError as error:
            previous = (json.loads(self._state_path.read_text()).get("weights")
                        if self._state_path.exists() else None)
            if previous != name:  # state.json still names the previous weights
                (backup / name).unlink(missing_ok=True)
            raise CheckpointError(f"saving the backup {self._state_path} failed ({error}); "
                                  "the previous backup is intact") from error
        for old in backup.glob("*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)


class BestNetworkCheckpoint(keras.callbacks.Callback):
    """Keeps ``path`` (a ``.keras`` file of the network) at the best ``monitor`` value so far.

    The best value is stored beside it, so a resumed run does not overwrite a better model; a
    stored value of another monitor (the headline metric was changed) is not compared with.
    """

    def __init__(self, network: keras.Model, path: str | pathlib.Path, monitor: str = "val_pck",
                 mode: str = "max"):
        super().__init__()
        self.network = network
        self.path = pathlib.Path(path)
        self.monitor = monitor
        self.sign = 1.0 if mode == "max" else -1.0
        self.record_path = self.path.with_suffix(".best.json")
        self.best = -np.inf
        if self.record_path.exists():
            record = json.loads(self.record_path.read_text())
            if record.get("monitor", monitor) == monitor:
                self.best = self.sign * record["value"]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or self.sign * float(value) <= self.best:
            return
        self.best = self.sign * float(value)
        atomic_save_network(self.network, self.path)
        write_json_atomic(self.record_path, {"monitor": self.monitor, "value": float(value),
                                             "epoch": epoch + 1})


class TensorBoardImages(keras.callbacks.Callback):
    """Every ``every`` epochs, writes validation crops with predicted (and ground-truth)
    skeletons and, for heatmap models, predicted vs target heatmaps to TensorBoard.

    The prediction runs in a ``tf.function`` traced once, on the drawn crops only. Run
    eagerly, the network's forward pass kept every intermediate activation of the batch alive
    until it returned: measured on the 2-stack hourglass at 256 px, batch 8 on a CPU, 2.9 GiB
    eagerly against 0.27 GiB traced, which raised a run's peak memory 1.27 GiB above its
    training peak at the first epoch that drew pictures (glibc keeps the freed pages).

    Args:
        batch: one validation reader batch (dict of tensors), drawn at every logging epoch.
        log_dir: TensorBoard directory, or a ``tf.summary`` writer (share one with
            :class:`PCKCallback` writing the same directory).
        keypoint_set: skeleton to draw.
        every: epochs between image summaries.
        max_images: crops per summary.
    """

    def __init__(self, batch: dict, log_dir: str, keypoint_set: KeypointSet, every: int = 1,
                 max_images: int = 4):
        super().__init__()
        # Only the crops that are drawn are predicted.
        self.batch = {key: value[:max_images] for key, value in batch.items()}
        self.writer = summary_writer(log_dir)
        self.keypoint_set = keypoint_set
        self.every = max(1, int(every))
        self.max_images = max_images
        self._predict = None  # (trainer, its traced prediction): traced once, reused

    def predict_function(self):
        """The trainer's evaluation-mode prepare, forward and decode as one ``tf.function``
        (traced at the first call, kept while the callback's model is the same trainer)."""
        trainer = self.model
        if self._predict is None or self._predict[0] is not trainer:

            def predict(batch):
                prepared = trainer.prepare(batch, training=False)
                outputs = trainer.forward(prepared["images"], prepared["targets"],
                                          training=False)
                points, scores = trainer.codec.decode(outputs[-1])
                return {"images": prepared["images"], "keypoints": prepared["keypoints"],
                        "weights": prepared["weights"], "targets": prepared["targets"],
                        "final": outputs[-1], "points": points, "scores": scores}

            self._predict = (trainer, tf.function(predict))
        return self._predict[1]

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return

        trainer = self.model
        predicted = self.predict_function()(self.batch)
        prepared, final = predicted, predicted["final"]
        points, scores = predicted["points"], predicted["scores"]
        images = np.asarray(prepared["images"]).clip(0, 255).astype(np.uint8)
        points = np.asarray(points)
        gt_points = np.asarray(prepared["keypoints"])
        weights = np.asarray(prepared["weights"])
        n = min(self.max_images, len(images))
        skeletons, heatmaps = [], []
        for i in range(n):
            gt = visualize.draw_skeleton(images[i], gt_points[i], weights[i], self.keypoint_set,
                                         color=(0, 255, 0))
            pred = visualize.draw_skeleton(images[i], points[i], np.asarray(scores)[i],
                                           self.keypoint_set)
            skeletons.append(np.concatenate([gt, pred], axis=1))
            if trainer.codec.has_heatmaps:
                target_overlay = visualize.overlay_heatmaps(
                    images[i], np.asarray(prepared["targets"])[i])
                pred_overlay = visualize.overlay_heatmaps(
                    images[i], np.asarray(final, np.float32)[i])
                heatmaps.append(np.concatenate([target_overlay, pred_overlay], axis=1))
        with self.writer.as_default(step=epoch):
            tf.summary.image("skeletons/ground_truth_vs_predicted", np.stack(skeletons),
                             max_outputs=n)
            if heatmaps:
                tf.summary.image("heatmaps/target_vs_predicted", np.stack(heatmaps),
                                 max_outputs=n)
        self.writer.flush()
