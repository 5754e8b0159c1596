"""The run directory: where a training run writes each file, and where readers find them.

``tools/train.py --output runs/NAME`` fills one directory; the export, evaluation and the
summary tool read it back. Every path of that layout is named here once::

    runs/NAME/
      pipeline.resolved.toml   the pipeline as run (file + overrides), to repeat the run
      model.keras              the best network (by the headline metric), or the assembled
                               DeepPose cascade
      stage_<s>.keras          a stage-wise cascade's stage s (stage_1: the one-stage network)
      stage_<s>.errors.json    the error distribution stage s trained on
      history.csv              per-epoch losses and metrics (history_stage_<s>.csv per stage)
      logs/                    TensorBoard (Keras's train/validation, pose/, cascade/, stage_<s>/)
      backup/                  BackupAndRestore state until the run is complete
      evaluation.json          the final evaluation; cascade.json: each stage's figures
      summary.json             the closing summary
      <step>.error.txt         the traceback of a step that failed after training
      workers/worker-<i>/      another worker's backup and scratch files (multi-worker runs)
"""

from __future__ import annotations

import dataclasses
import pathlib

MODEL = "model.keras"
PIPELINE = "pipeline.resolved.toml"


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """The files of the run directory ``root`` (``runs/NAME``) as written by ``work_dir``'s
    worker: the chief writes into ``root`` itself, another worker into its own folder."""

    root: pathlib.Path
    work_dir: pathlib.Path

    @classmethod
    def for_worker(cls, root: str | pathlib.Path, chief: bool = True,
                   task_id: int = 0) -> RunLayout:
        root = pathlib.Path(root)
        return cls(root, root if chief else root / "workers" / f"worker-{task_id}")

    # -- the run's own files (the chief's) ---------------------------------------------------

    @property
    def pipeline(self) -> pathlib.Path:
        return self.root / PIPELINE

    @property
    def summary(self) -> pathlib.Path:
        return self.root / "summary.json"

    # -- each worker's files -----------------------------------------------------------------

    @property
    def model(self) -> pathlib.Path:
        return self.work_dir / MODEL

    @property
    def evaluation(self) -> pathlib.Path:
        return self.work_dir / "evaluation.json"

    @property
    def history(self) -> pathlib.Path:
        return self.work_dir / "history.csv"

    @property
    def logs(self) -> pathlib.Path:
        return self.work_dir / "logs"

    @property
    def backup(self) -> pathlib.Path:
        return self.work_dir / "backup"

    @property
    def backup_state(self) -> pathlib.Path:
        """The file naming the backup's complete weights (``AtomicBackupAndRestore``)."""
        return self.backup / "state.json"

    @property
    def cascade(self) -> pathlib.Path:
        return self.work_dir / "cascade.json"

    def stage_model(self, stage: int) -> pathlib.Path:
        return self.work_dir / f"stage_{stage}.keras"

    def stage_errors(self, stage: int) -> pathlib.Path:
        return self.work_dir / f"stage_{stage}.errors.json"

    def stage_history(self, stage: int) -> pathlib.Path:
        return self.work_dir / f"history_stage_{stage}.csv"

    def stage_logs(self, stage: int) -> pathlib.Path:
        return self.logs / f"stage_{stage}"

    def traceback(self, step: str) -> pathlib.Path:
        """Where the traceback of ``step`` (``evaluation``, ``export``, ...) is kept."""
        return self.work_dir / f"{step}.error.txt"


def find_model(path: str | pathlib.Path) -> tuple[pathlib.Path, pathlib.Path | None]:
    """``(model.keras, pipeline.resolved.toml or None)`` of a run directory or ``.keras`` file.

    Raises:
        ValueError: no model there; the message says what to pass.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        keras_file = path / MODEL
        if not keras_file.exists():
            raise ValueError(f"{path} is a directory without {MODEL}; pass a run directory "
                             f"(runs/NAME with {MODEL}) or a .keras file")
    elif path.suffix == ".keras":
        keras_file = path
        if not keras_file.exists():
            raise ValueError(f"model file not found: {keras_file}")
    else:
        raise ValueError(f"{path}: expected a run directory or a .keras file")
    pipeline_file = keras_file.parent / PIPELINE
    return keras_file, (pipeline_file if pipeline_file.exists() else None)
