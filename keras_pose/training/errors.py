"""What stops a training run, each with the exit status ``tools/train.py`` returns."""

from __future__ import annotations


class RunError(RuntimeError):
    """A run that cannot start (missing records, inconsistent data); the message says why.

    ``exit_status`` is what ``tools/train.py`` exits with: 2 here, other values in subclasses.
    """

    exit_status = 2


class TrainingFailed(RunError):
    """Training started and stopped before its end (a NaN loss); what was kept is named."""

    exit_status = 1


class RunInterrupted(RunError):
    """A signal (SIGTERM) stopped training; the same command resumes. Exit 128 + signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_status = 128 + int(signum)


class DamagedRecords(RunError):
    """A TFRecord shard failed its checksum or ended mid-record (``DataLossError``); the
    message names the shard(s) and how to convert the split again."""


class RunIncomplete(RunError):
    """Training finished but the final evaluation or the export failed.

    ``summary`` holds what succeeded (it is also in ``summary.json``); the message names each
    failure, why, and the command that finishes it by hand.
    """

    exit_status = 1

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary
