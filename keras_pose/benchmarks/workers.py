"""Benchmark worker processes, timed in alternation so that both sides see the same load.

A shared 2-core machine drifts by tens of percent within minutes; timing keras-pose for a while
and then PyTorch for a while would put that drift into the ratio. So every configuration runs in
its own process (no shared thread pools, one peak-memory figure per configuration), the parent
starts them, waits until each has built and warmed up, and then asks them for one timed call at a
time, in turn: keras-pose, PyTorch, keras-pose, PyTorch, ...

Protocol, one line each way: the worker prints ``READY <json>`` after warm-up; the parent sends
``step``, the worker answers ``TIME <seconds>``; the parent sends ``done``, the worker answers
``RESULT <json>`` (final statistics) and exits. ``serve`` is the worker side.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

READY, TIME, RESULT = "READY ", "TIME ", "RESULT "


class WorkerError(RuntimeError):
    """A worker process failed, timed out or answered out of protocol."""


def serve(step: Callable[[], object] | dict[str, Callable[[], object]], warmup: int, meta: dict,
          finish: Callable[[], dict] | None = None) -> None:
    """Worker side: warm up, then time one step per ``step [NAME]`` line until ``done``.

    Args:
        step: the timed function, or several by name (``step NAME`` picks one; every one is
            warmed up).
        warmup: untimed calls of each step function before ``READY``.
        meta: sent with ``READY``.
        finish: returns the statistics sent with ``RESULT``.
    """
    steps = step if isinstance(step, dict) else {"": step}
    for function in steps.values():
        for _ in range(warmup):
            function()
    _send(READY + json.dumps(meta))
    for line in sys.stdin:
        command, _, name = line.strip().partition(" ")
        if command == "step":
            function = steps[name]
            start = time.perf_counter()
            function()
            _send(f"{TIME}{time.perf_counter() - start:.6f}")
        elif command == "done":
            _send(RESULT + json.dumps(finish() if finish else {}))
            return


def worker_main(servers: dict[str, Callable[[dict], None]], argv: list[str] | None = None) -> int:
    """Worker process entry point (``python -m MODULE --serve JSON``): run the ``kind`` server."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", required=True, help="worker configuration (JSON)")
    spec = json.loads(parser.parse_args(argv).serve)
    servers[spec["kind"]](spec)
    return 0


def _send(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Worker:
    """Parent side of one worker process (``python -m MODULE --serve SPEC``).

    Args:
        module: module whose ``main`` understands ``--serve JSON``.
        spec: the configuration, passed as JSON.
        timeout: seconds allowed for start-up plus warm-up, and for each later answer.
    """

    def __init__(self, module: str, spec: dict, timeout: float):
        self.timeout = timeout
        self.times: list[float] = []
        self.named_times: dict[str, list[float]] = {}
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen(
            [sys.executable, "-m", module, "--serve", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
            bufsize=1, env=env)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._process.stdout, selectors.EVENT_READ)
        self.meta: dict = {}

    def wait_ready(self) -> dict:
        self.meta = json.loads(self._expect(READY))
        return self.meta

    def step(self, name: str = "") -> float:
        """One timed call of the worker's step function (``name`` picks one of several)."""
        self._write(f"step {name}".strip())
        seconds = float(self._expect(TIME))
        self.times.append(seconds)
        self.named_times.setdefault(name, []).append(seconds)
        return seconds

    def finish(self) -> dict:
        """Final statistics (``meta`` plus what the worker adds); the process then exits."""
        self._write("done")
        result = {**self.meta, **json.loads(self._expect(RESULT)), "times": self.times,
                  "named_times": self.named_times}
        self._process.wait(timeout=self.timeout)
        self.close()
        return result

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._selector.close()
        self._stderr.close()

    def _write(self, line: str) -> None:
        try:
            self._process.stdin.write(line + "\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(self._failure("exited")) from None

    def _expect(self, prefix: str) -> str:
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError(self._failure(f"no answer within {self.timeout:.0f} s"))
            if not self._selector.select(timeout=left):
                continue
            line = self._process.stdout.readline()
            if not line:
                raise WorkerError(self._failure("exited"))
            if line.startswith(prefix):
                return line[len(prefix):].strip()
            # Anything else on stdout (library chatter) is ignored.

    def _failure(self, what: str) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        lines = [ln for ln in self._stderr.read().splitlines() if ln.strip()]
        tail = " | ".join(lines[-4:]) if lines else "no stderr"
        code = self._process.poll()
        return f"worker {what} (exit {code}): {tail}"


def alternate(workers: list[Worker], rounds: int, name: str = "", pause: float = 0.2) -> None:
    """``rounds`` timed calls of every worker, in turn (a short pause lets thread pools idle)."""
    for _ in range(rounds):
        for worker in workers:
            worker.step(name)
            time.sleep(pause)
