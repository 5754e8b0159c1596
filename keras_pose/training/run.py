"""One training run from a pipeline: data, model, ``model.fit``, evaluation, export, summary."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import shlex
import shutil
import sys
import time
import traceback

import keras
import tensorflow as tf

from keras_pose import augment, evaluate, export, metrics
from keras_pose.io import write_json_atomic, write_text_atomic
from keras_pose.keypoints import get_keypoint_set
from keras_pose.models import build_model
from keras_pose.pipeline import (
    Pipeline,
    PipelineError,
    to_toml,
)
from keras_pose.resources import peak_rss_mib
from keras_pose.runs import RunLayout
from keras_pose.training import callbacks as cbs
from keras_pose.training import cascade, inputs
from keras_pose.training.errors import (
    RunIncomplete,
    RunInterrupted,
    TrainingFailed,
)
from keras_pose.training.optimizers import RMSprop
from keras_pose.training.schedules import PoseSchedule
from keras_pose.training.strategy import (
    make_strategy,
    num_workers,
    resolve_jit_compile,
    worker_role,
)
from keras_pose.training.trainer import PoseTrainer


def make_optimizer(pipeline: Pipeline) -> keras.optimizers.Optimizer:
    opt, sched, train = pipeline.optimizer, pipeline.schedule, pipeline.train
    learning_rate = PoseSchedule(sched.kind, opt.learning_rate, train.steps_per_epoch,
                                 train.epochs, sched.step_epochs, sched.factor,
                                 sched.decay_fraction, sched.final_scale)
    common = {"learning_rate": learning_rate}
    if opt.clipnorm:
        common["clipnorm"] = opt.clipnorm
    if opt.weight_decay:
        common["weight_decay"] = opt.weight_decay
    if opt.name == "rmsprop":
        return RMSprop(rho=opt.rho, momentum=opt.momentum, epsilon=opt.epsilon,
                       epsilon_outside_sqrt=opt.epsilon_outside_sqrt, **common)
    if opt.name == "adam":
        return keras.optimizers.Adam(epsilon=opt.epsilon, **common)
    return keras.optimizers.SGD(momentum=opt.momentum, **common)


def augment_config(pipeline: Pipeline) -> augment.AugmentConfig | None:
    if not pipeline.augment.enabled:
        return None
    fields = (f.name for f in dataclasses.fields(augment.AugmentConfig))
    return augment.AugmentConfig(**{name: getattr(pipeline.augment, name) for name in fields})


def resolve_sampler(pipeline: Pipeline) -> str:
    sampler = pipeline.augment.sampler
    if sampler == "auto":
        return "gather" if resolve_jit_compile(pipeline.train.jit_compile) else "affine_transform"
    return sampler


def model_options(pipeline: Pipeline) -> dict:
    """``[model] options`` for ``build_model``; a stage-wise cascade ([cascade] stages >= 2)
    first trains a one-stage DeepPose whose crop scale is [cascade] sigma."""
    options = dict(pipeline.model.options)
    if pipeline.cascade.stages > 1:
        options.update(num_stages=1, crop_scale=pipeline.cascade.sigma)
    return options


def build_trainer(pipeline: Pipeline, num_keypoints: int) -> PoseTrainer:
    """The network and its trainer for a pipeline (inside the strategy scope)."""
    size = pipeline.model.input_size
    try:
        network = build_model(pipeline.model.name, num_keypoints=num_keypoints,
                              input_shape=(size, size, 3), **model_options(pipeline))
    except (TypeError, ValueError) as error:
        raise PipelineError(f"[model] options are not valid for {pipeline.model.name!r}: "
                            f"{error}") from error
    return trainer_for(pipeline, network)


def trainer_for(pipeline: Pipeline, network) -> PoseTrainer:
    """The :class:`PoseTrainer` of a pipeline around a built network."""
    return PoseTrainer(
        network,
        keypoint_set=get_keypoint_set(pipeline.data.keypoint_set),
        augment_config=augment_config(pipeline),
        sigma=pipeline.targets.sigma or None,
        output_weights=pipeline.loss.output_weights or None,
        seed=pipeline.train.seed,
        sampler=resolve_sampler(pipeline),
        crop_size=pipeline.data.crop_size,
    )


def train(pipeline: Pipeline, output_dir: str | pathlib.Path, verbose: int | str = "auto"
          ) -> dict:
    """Run a whole pipeline; return the closing summary (also written to ``summary.json``).

    Re-running the same command after an interruption resumes from the last finished epoch
    (``BackupAndRestore`` in ``OUTPUT/backup``).

    Under ``strategy = "multiworker"`` every worker runs this with the same arguments; only
    the chief writes the run's files (resolved pipeline, best checkpoint, logs, summary,
    export). The other workers keep their own backups and scratch files in
    ``OUTPUT/workers/worker-<index>`` and remove the scratch files when training ends.

    Raises (each a :class:`RunError` whose message says what happened and what was kept):
        RunError: the run cannot start (records or their manifest missing, wrong keypoints).
        TrainingFailed: a loss became NaN or infinite, or a checkpoint, backup or log could
            not be written (a full disk); training stopped at that step.
        DamagedRecords: a shard failed its checksum or was truncated; the message names it.
        RunInterrupted: SIGTERM during ``fit``; stopped at the next step, resumable.
        RunIncomplete: training finished but the final evaluation or the export failed; the
            other still ran and ``summary.json`` holds what succeeded.
    """
    started = time.time()
    output_dir = pathlib.Path(output_dir)
    # First: MultiWorkerMirroredStrategy must configure collectives before TF initializes.
    strategy = make_strategy(pipeline.train.strategy)
    chief, task_id = worker_role(strategy)
    run = RunLayout.for_worker(output_dir, chief, task_id)
    run.work_dir.mkdir(parents=True, exist_ok=True)
    pipeline = inputs.resolve_data(pipeline)
    if chief:
        write_text_atomic(run.pipeline, to_toml(pipeline))
    keypoint_set = get_keypoint_set(pipeline.data.keypoint_set)

    try:
        return _train(pipeline, output_dir, started, strategy, chief, run, keypoint_set,
                      verbose)
    except tf.errors.DataLossError as error:
        # tf.data names no file: find the damaged shard(s) by reading each one.
        raise inputs.damaged_records_error(pipeline, error, run) from None


@dataclasses.dataclass
class _Datasets:
    train: tf.data.Dataset
    val: tf.data.Dataset  # every validation record (PCK, final evaluation)
    fit_val: tf.data.Dataset  # the validation loss during fit


def _train(pipeline: Pipeline, output_dir: pathlib.Path, started: float,
           strategy: tf.distribute.Strategy, chief: bool, run: RunLayout,
           keypoint_set, verbose) -> dict:
    """The rest of :func:`train`, in named steps: datasets, trainer, fit (and the cascade's
    later stages), then publish (final evaluation, export, summary)."""
    keras.utils.set_random_seed(pipeline.train.seed)
    keras.mixed_precision.set_global_policy(pipeline.train.mixed_precision)
    data = _datasets(pipeline, strategy, keypoint_set.num_keypoints)
    with strategy.scope():
        trainer = build_trainer(pipeline, keypoint_set.num_keypoints)
        trainer.compile(optimizer=make_optimizer(pipeline),
                        jit_compile=resolve_jit_compile(pipeline.train.jit_compile))
    metric_names = _checked_metrics(pipeline, keypoint_set, trainer.network)
    cascading = pipeline.cascade.stages > 1
    # A stage-wise cascade keeps stage 1's best network apart: model.keras is the cascade.
    best_path = run.stage_model(1) if cascading else run.model
    training_peak = _fit(pipeline, trainer, data, run, best_path, keypoint_set, metric_names,
                         verbose)
    cascade_report = None
    if cascading:
        trainer, cascade_report = _train_cascade(pipeline, trainer, strategy, chief, run,
                                                 best_path, keypoint_set, metric_names,
                                                 verbose)
        best_path = run.model
    summary = {
        "pipeline": pipeline.name,
        "model": pipeline.model.name,
        "train_seconds": round(time.time() - started, 1),
        "run_dir": str(output_dir),
        "tensorboard": f"tensorboard --logdir {output_dir.parent}",
        "best_checkpoint": str(best_path),
    }
    if training_peak is not None:
        # Before the first validation; peak_rss_mib (the whole run's) is added at the end.
        summary["peak_rss_mib_training"] = round(training_peak)
    if cascade_report is not None:
        summary["cascade"] = cascade_report
    return _publish(pipeline, trainer, data.val, run, best_path, chief, keypoint_set,
                    metric_names, summary, started)


def _datasets(pipeline: Pipeline, strategy: tf.distribute.Strategy, k: int) -> _Datasets:
    workers = num_workers(strategy)
    train_ds = inputs.make_dataset(pipeline, pipeline.data.train_records, True, k, workers=workers)
    val_ds = inputs.make_dataset(pipeline, pipeline.data.val_records, False, k,
                      pipeline.train.validation_records, workers=workers)
    # The loss on the validation records during fit: with several replicas, whole global
    # batches only, since a replica given an empty last batch fails on CPU (TF's Conv2D
    # returns its empty input unchanged). PCK and the final scores still see every record.
    fit_val_ds = val_ds
    if strategy.num_replicas_in_sync > 1:
        fit_val_ds = inputs.make_dataset(pipeline, pipeline.data.val_records, False, k,
                              pipeline.train.validation_records, workers=workers,
                              drop_remainder=True)
    return _Datasets(train_ds, val_ds, fit_val_ds)


def _callbacks(pipeline: Pipeline, trainer: PoseTrainer, val_ds, run: RunLayout,
               best_path: pathlib.Path, keypoint_set, metric_names: list[str], pose_writer,
               stop_on_signal: cbs.StopOnSignal,
               training_memory: cbs.TrainingPeakMemory) -> list:
    """The callbacks of the run's ``fit``, in the order they must run."""
    pck = cbs.PCKCallback(val_ds, keypoint_set, every=pipeline.callbacks.pck_every,
                          log_dir=pose_writer, total_epochs=pipeline.train.epochs,
                          flip_test=pipeline.callbacks.flip_test, metric_names=metric_names)
    # First: a non-finite loss stops the step before any other callback sees it, and SIGTERM
    # stops at the next step (not in the middle of an epoch's checkpoint, logs and backup).
    # The training peak is noted before any callback predicts.
    callback_list = [
        cbs.StopOnNonFiniteLoss(pipeline.train.epochs, pipeline.train.steps_per_epoch),
        stop_on_signal,
        training_memory,
        pck,
    ]
    if pipeline.callbacks.images_every:
        sample = next(iter(val_ds.take(1)))
        callback_list.append(cbs.TensorBoardImages(
            sample, pose_writer, keypoint_set, every=pipeline.callbacks.images_every,
            max_images=pipeline.callbacks.num_images))
    callback_list += [
        cbs.BestNetworkCheckpoint(trainer.network, best_path, monitor=pck.monitor),
        keras.callbacks.TensorBoard(str(run.logs),
                                    profile_batch=pipeline.callbacks.profile_batch),
        keras.callbacks.CSVLogger(str(run.history), append=True),
    ]
    if pipeline.callbacks.early_stopping_patience:
        callback_list.append(keras.callbacks.EarlyStopping(
            pck.monitor, mode="max", patience=pipeline.callbacks.early_stopping_patience))
    # Last, so an epoch counts as done (and is not re-run on resume) only after its PCK,
    # checkpoint and logs are written. Kept after fit (delete_checkpoint=False) until the
    # final evaluation and export have succeeded: a run killed or failing after training
    # resumes with no epoch left to train.
    callback_list.append(cbs.AtomicBackupAndRestore(str(run.backup), delete_checkpoint=False))
    return callback_list


def _fit(pipeline: Pipeline, trainer: PoseTrainer, data: _Datasets, run: RunLayout,
         best_path: pathlib.Path, keypoint_set, metric_names: list[str], verbose
         ) -> float | None:
    """``fit`` with the run's callbacks; a stop (NaN loss, full disk, SIGTERM) becomes a
    :class:`RunError` saying what was kept and how to resume. Returns the peak resident
    memory (MiB) of training before its first validation (``None``: no epoch was left)."""
    # One writer for everything under logs/pose: TensorBoard follows only the newest event
    # file of a directory, so a second writer there would hide the first one's updates.
    pose_writer = cbs.summary_writer(run.logs / "pose")
    stop_on_signal = cbs.StopOnSignal()
    training_memory = cbs.TrainingPeakMemory()
    callback_list = _callbacks(pipeline, trainer, data.val, run, best_path, keypoint_set,
                               metric_names, pose_writer, stop_on_signal, training_memory)
    try:
        trainer.fit(data.train, epochs=pipeline.train.epochs,
                    steps_per_epoch=pipeline.train.steps_per_epoch,
                    validation_data=data.fit_val, callbacks=callback_list, verbose=verbose,
                    shuffle=False)
    except cbs.NonFiniteLoss as error:
        _close_logs(callback_list)
        raise TrainingFailed(f"{error}. {_kept(run, best_path)} Lower [optimizer] "
                             "learning_rate (or set [optimizer] clipnorm) and run the command "
                             "again: it resumes from the backup (remove "
                             f"{run.backup} to start over).") from None
    except OSError as error:  # a checkpoint, backup or log that could not be written
        _close_logs(callback_list)
        raise TrainingFailed(f"training stopped: {error}. {_kept(run, best_path)} Free "
                             "space (or fix the cause) and run the same command again: it "
                             "resumes from the backup.") from None
    except cbs.Interrupted as error:
        _close_logs(callback_list)
        state = run.backup_state
        finished = json.loads(state.read_text())["epoch"] if state.exists() else 0
        raise RunInterrupted(f"{error}. {_kept(run, best_path)} Run the same command to "
                             f"resume from epoch {finished + 1}.", error.signum) from None
    finally:
        stop_on_signal.restore()
        pose_writer.close()
    return training_memory.peak_mib


def _publish(pipeline: Pipeline, trainer: PoseTrainer, val_ds, run: RunLayout,
             best_path: pathlib.Path, chief: bool, keypoint_set, metric_names: list[str],
             summary: dict, started: float) -> dict:
    """After training: the best checkpoint's final evaluation and export, then summary.json.

    Nothing here may lose the run: the checkpoint, the final evaluation and the export each
    report their own failure, the others still run, and summary.json says what succeeded
    (and what failed, with how to finish by hand).
    """
    failures: dict[str, dict] = {}
    evaluate_by_hand = _evaluate_command(pipeline, run.root, metric_names)
    export_by_hand = _export_command(pipeline, run.root)
    exporting = chief and pipeline.export.enabled
    # Score and export the best checkpoint, not the last epoch (neither runs without it).
    if _attempt(failures, "checkpoint", "loading the best checkpoint", run,
                lambda: _use_best_checkpoint(trainer.network, best_path, chief),
                f"fix the cause; then {evaluate_by_hand}"
                + (f" and {export_by_hand}" if exporting else "")):
        report = _attempt(failures, "evaluation", "the final evaluation", run,
                          lambda: _final_evaluation(pipeline, trainer, val_ds, keypoint_set,
                                                    metric_names, run),
                          evaluate_by_hand)
        if report is not None:
            summary.update(_metric_summary(report))
            summary["evaluation"] = str(run.evaluation)
        if exporting:
            exported = _attempt(failures, "export", "the export", run,
                                lambda: _export(pipeline, trainer, run.root), export_by_hand)
            if exported is not None:
                summary["export"] = str(exported)
    if not failures:
        shutil.rmtree(run.backup, ignore_errors=True)  # the run is complete
    if not chief:
        shutil.rmtree(run.work_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            run.work_dir.parent.rmdir()  # "workers/", once the last worker has left it
    if failures:
        summary["failed"] = failures
    summary["wall_seconds"] = round(time.time() - started, 1)
    summary["peak_rss_mib"] = round(peak_rss_mib())
    if chief:
        write_text_atomic(run.summary, json.dumps(summary, indent=2) + "\n")
    if failures:
        raise RunIncomplete(
            "training finished, but not everything after it (summary.json has what "
            "succeeded):\n" + "\n".join(_failure_lines(failure) for failure in failures.values())
            + "\n  or fix the cause and run the same command again: training is done (its backup "
            f"in {run.backup} is kept), so it only evaluates and exports.",
            summary)
    return summary


def _cascade_pipeline(pipeline: Pipeline) -> Pipeline:
    """The pipeline a later cascade stage trains with: [train] length from [cascade], so the
    learning-rate schedule spans the stage."""
    train = dataclasses.replace(pipeline.train, epochs=pipeline.cascade.epochs,
                                steps_per_epoch=pipeline.cascade.steps_per_epoch)
    return dataclasses.replace(pipeline, train=train)


def _train_cascade(pipeline: Pipeline, trainer: PoseTrainer, strategy, chief: bool,
                   run: RunLayout, stage_one_path: pathlib.Path, keypoint_set,
                   metric_names: list[str], verbose) -> tuple[PoseTrainer, list[dict]]:
    """Stages 2..S of a stage-wise DeepPose cascade after stage 1's ``fit``
    (``keras_pose.training.cascade``); the assembled cascade is saved as ``model.keras`` and
    returned in a trainer for the final evaluation and the export."""
    _use_best_checkpoint(trainer.network, stage_one_path, chief)
    k = keypoint_set.num_keypoints
    workers = num_workers(strategy)
    train_ds = inputs.make_dataset(pipeline, pipeline.data.train_records, True, k, workers=workers)
    measure_ds = inputs.make_dataset(pipeline, pipeline.data.train_records, False, k,
                          pipeline.cascade.error_records, workers=workers)
    val_ds = inputs.make_dataset(pipeline, pipeline.data.val_records, False, k,
                      pipeline.train.validation_records, workers=workers)
    settings = cascade.StageSettings(
        stages=pipeline.cascade.stages, draws=pipeline.cascade.draws,
        epochs=pipeline.cascade.epochs, steps_per_epoch=pipeline.cascade.steps_per_epoch,
        error_batches=None, keypoint_set=keypoint_set,
        augment_config=augment_config(pipeline), seed=pipeline.train.seed,
        sampler=trainer.sampler, jit_compile=resolve_jit_compile(pipeline.train.jit_compile),
        metric_names=metric_names, records_crop_size=pipeline.data.crop_size)
    stage_pipeline = _cascade_pipeline(pipeline)

    def stage_callbacks(stage: int) -> list:
        return [cbs.StopOnNonFiniteLoss(pipeline.cascade.epochs,
                                        pipeline.cascade.steps_per_epoch)]

    try:
        with strategy.scope():
            network, report = cascade.train_cascade(
                trainer.network, settings, train_ds=train_ds, measure_ds=measure_ds,
                val_ds=val_ds, make_optimizer=lambda: make_optimizer(stage_pipeline),
                run=run, callbacks=stage_callbacks, chief=chief, verbose=verbose)
            cascade_trainer = trainer_for(pipeline, network)
    except cbs.NonFiniteLoss as error:
        raise TrainingFailed(f"cascade: {error}. Stage 1 ({stage_one_path}) and the stages "
                             "finished before are kept (stage_<s>.keras); lower [optimizer] "
                             "learning_rate and run the same command again: it resumes after "
                             "the last finished stage.") from None
    except OSError as error:
        raise TrainingFailed(f"cascade training stopped: {error}. Free space (or fix the "
                             "cause) and run the same command again: it resumes after the "
                             "last finished stage.") from None
    if chief:
        cbs.atomic_save_network(network, run.model)
    return cascade_trainer, report


def _attempt(failures: dict, step: str, what: str, run: RunLayout, action,
             by_hand: str):
    """Run one step after training; a failure gives ``None`` and ``failures[step]``:
    ``error`` (what failed and why), ``finish_by_hand`` (the command) and ``traceback`` (the
    file holding it)."""
    traceback_path = run.traceback(step)
    traceback_path.unlink(missing_ok=True)  # an earlier attempt's
    try:
        return action()
    except Exception as error:  # noqa: BLE001 - any failure here must not lose the run
        failures[step] = {"error": f"{what} failed: {type(error).__name__}: {error}",
                          "finish_by_hand": by_hand}
        with contextlib.suppress(OSError):
            write_text_atomic(traceback_path, traceback.format_exc())
            failures[step]["traceback"] = str(traceback_path)
        print(f"{what} failed ({type(error).__name__}); the run goes on and says at its end "
              "how to finish by hand", file=sys.stderr, flush=True)
        return None


def _failure_lines(failure: dict) -> str:
    where = f" (traceback in {failure['traceback']})" if "traceback" in failure else ""
    return f"  {failure['error']}{where}\n    finish by hand: {failure['finish_by_hand']}"


def _use_best_checkpoint(network: keras.Model, best_path: pathlib.Path, chief: bool) -> bool:
    """Load the best checkpoint's weights into ``network``; without one (no epoch improved on
    the stored best), the chief saves the network as it is."""
    if best_path.exists():
        best = keras.saving.load_model(best_path, compile=False)
        network.set_weights(best.get_weights())
    elif chief:
        cbs.atomic_save_network(network, best_path)
    return True


def flip_test_skipped(pipeline: Pipeline) -> str | None:
    """Why the final evaluation has no flip test, or ``None`` when it has one.

    The flip test averages a prediction with that of the mirrored input, left and right
    swapped: it assumes the network learned mirrored people. One trained with ``flip_prob = 0``
    (the quickstart's figures colour-code their sides) never did, and the average is wrong by
    construction (measured on the quickstart: PCK@0.2 0.935 plain, 0.636 flip-tested).
    """
    if pipeline.augment.enabled and pipeline.augment.flip_prob > 0:
        return None
    return ("the network was trained without mirrored inputs ([augment] flip_prob = 0 or "
            "augmentation off), so averaging with a mirrored prediction would not measure it")


def _final_evaluation(pipeline: Pipeline, trainer: PoseTrainer, val_ds, keypoint_set,
                      metric_names: list[str], run: RunLayout) -> dict:
    """Score the network on the validation records (and COCO AP) without and with the flip
    test (the papers report with it); write ``evaluation.json``: the plain scores at the top
    level, the flip-tested ones under ``flip_test`` (``evaluate.score_with_and_without_flip``).
    ``[callbacks] flip_test`` only concerns the validation during training. A network trained
    without mirrored inputs gets no flip test (:func:`flip_test_skipped`)."""
    note = flip_test_skipped(pipeline)
    predictions, flipped = (
        evaluate.predict_records(
            trainer.network, val_ds, keypoint_set=keypoint_set,
            predict_function=evaluate.make_predict_function(
                trainer.network, keypoint_set=keypoint_set, flip_test=flip,
                sampler=trainer.sampler)) if flip is not None else None
        for flip in (False, None if note else True))
    annotations = pipeline.data.val_annotations or None
    if annotations and not pathlib.Path(annotations).exists():
        print(f"warning: [data] val_annotations {annotations!r} not found; no COCO AP",
              flush=True)
        annotations = None
    report = evaluate.score_with_and_without_flip(predictions, flipped, annotations,
                                                  keypoint_set=keypoint_set,
                                                  metric_names=metric_names, note=note)
    if note:
        print(f"flip test skipped: {note}", flush=True)
    if report.get("coco_skipped"):
        print(f"COCO AP skipped: {report['coco_skipped']}", flush=True)
    write_json_atomic(run.evaluation, report)
    return report


def _evaluate_command(pipeline: Pipeline, output_dir: pathlib.Path, metric_names) -> str:
    """``tools/evaluate.py`` doing what the final evaluation does, into the run directory."""
    words = ["python", "tools/evaluate.py", "--model", str(output_dir),
             "--records", pipeline.data.val_records]
    annotations = pipeline.data.val_annotations
    if annotations and pathlib.Path(annotations).exists():
        words += ["--annotations", annotations]
    # tools/evaluate.py scores a Keras model without and with the flip test, as the run does.
    words += ["--metrics", ",".join(metric_names)]
    words += ["--output", str(output_dir)]
    return shlex.join(words)


def _export_command(pipeline: Pipeline, output_dir: pathlib.Path) -> str:
    """``tools/export.py`` doing what the run's export does."""
    return shlex.join(["python", "tools/export.py", "--model", str(output_dir), "--name",
                       pipeline.export.name or pipeline.name, "--base", pipeline.export.base])


def _close_logs(callback_list: list) -> None:
    """Flush and close the TensorBoard and CSV logs of a ``fit`` that raised (``fit`` only
    closes them at its end). The backup callback is left alone: ending it would remove the
    backup that a re-run resumes from."""
    for callback in callback_list:
        if isinstance(callback, (keras.callbacks.TensorBoard, keras.callbacks.CSVLogger)):
            with contextlib.suppress(Exception):
                callback.on_train_end()


def _kept(run: RunLayout, best_path: pathlib.Path) -> str:
    """What a stopped run keeps: its best checkpoint, backup and logs, for the message."""
    record = best_path.with_suffix(".best.json")
    if best_path.exists() and record.exists():
        best = json.loads(record.read_text())
        checkpoint = (f"The best checkpoint {best_path} (epoch {best.get('epoch')}, "
                      f"{best.get('monitor')} = {best.get('value', float('nan')):.4f})")
    elif best_path.exists():
        checkpoint = f"The best checkpoint {best_path}"
    else:
        checkpoint = "No checkpoint yet (no epoch finished);"
    backup = run.backup_state
    finished = json.loads(backup.read_text())["epoch"] if backup.exists() else 0
    kept = (f"{checkpoint}, the backup of epoch {finished} in {backup.parent}"
            if finished else checkpoint)
    return f"{kept.rstrip(';')} and the logs so far ({run.logs}, {run.history}) are kept."


def _checked_metrics(pipeline: Pipeline, keypoint_set, network) -> list[str]:
    """The configured metric names, checked against the built network: the poster's accuracy
    needs heatmaps, which only now are known (the keypoint set was checked at load)."""
    names = list(pipeline.callbacks.metrics)
    try:
        metrics.check_metrics(metrics.parse_metrics(names), keypoint_set,
                              no_heatmaps=evaluate.no_heatmaps_reason(network))
    except ValueError as error:
        raise PipelineError(f"[callbacks] metrics = {names!r}: {error}") from None
    return names


def _metric_summary(report: dict) -> dict:
    """The summary's scores: ``val_<name>`` for every metric, per keypoint for the headline.

    Keys: ``metrics`` (names, headline first), ``headline``, ``val_<name>`` each,
    ``per_keypoint_<headline>``, ``val_persons``, ``coco_ap`` (``None`` when not computed) and
    ``coco_skipped`` (why, when the keypoint set has no OKS sigmas), all without the flip
    test; with it (when the report has it): ``val_<headline>_flip_test`` and
    ``coco_ap_flip_test``.
    """
    scores = report["metrics"]
    headline = scores["metrics"][0]
    summary = {"metrics": scores["metrics"], "headline": headline}
    summary.update({f"val_{name}": scores[name] for name in scores["metrics"]})
    summary[f"per_keypoint_{headline}"] = scores["per_keypoint"][headline]
    summary["val_persons"] = scores["num_persons"]
    summary["coco_ap"] = report["coco"]["AP"] if report["coco"] else None
    if report.get("coco_skipped"):
        summary["coco_skipped"] = report["coco_skipped"]
    flipped = report.get("flip_test")
    if flipped:
        summary[f"val_{headline}_flip_test"] = flipped["metrics"][headline]
        summary["coco_ap_flip_test"] = flipped["coco"]["AP"] if flipped["coco"] else None
    return summary


def _export(pipeline: Pipeline, trainer: PoseTrainer, output_dir: pathlib.Path):

    return export.export_saved_model(
        trainer.network, name=pipeline.export.name or pipeline.name,
        base=pipeline.export.base, margin=pipeline.data.margin,
        keypoint_set=pipeline.data.keypoint_set,
    )


