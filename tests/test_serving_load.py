"""Load: 8 threads x 50 requests against the in-process Predictor and against the REST/gRPC test
double. Every answer equals the single-thread answer for the same input, and resident memory
after the run is within 10 % of what it was after the first 50 requests. Prints requests/s and
p50/p99 latency (run with ``-s`` to see them).
"""

from __future__ import annotations

import os
import threading
import time

import cv2
import numpy as np

from keras_pose import export, serving

THREADS = 8
PER_THREAD = 50
WARM = 50  # memory is compared with its value after this many requests


def rss_bytes() -> int:
    """Resident set size of this process now (/proc/self/statm)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _requests():
    """8 different requests: images of several sizes, with and without boxes."""
    rng = np.random.default_rng(5)
    requests = []
    for i, (height, width) in enumerate([(120, 90), (64, 64), (200, 150), (97, 131)] * 2):
        small = rng.integers(0, 256, size=(height // 6 + 1, width // 6 + 1, 3)).astype(np.uint8)
        image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        box = None
        if i >= 4:
            box = np.array([[width * 0.1, height * 0.15, width * 0.6, height * 0.7]], np.float32)
        requests.append((image, box))
    return requests


def run_load(predict, requests, label):
    """Call ``predict(image, box)`` from 8 threads, 50 times each; check and report."""
    expected = [predict(image, box) for image, box in requests]  # single thread
    latencies = [[] for _ in range(THREADS)]
    mismatches, errors = [], []
    done = [0]
    rss_after_warm = [None]
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def worker(t):
        barrier.wait()
        for j in range(PER_THREAD):
            k = (t + j) % len(requests)
            image, box = requests[k]
            start = time.perf_counter()
            try:
                got = predict(image, box)
            except Exception as error:  # counted and reported below
                errors.append(f"thread {t} request {j}: {error!r}")
                continue
            latencies[t].append(time.perf_counter() - start)
            for key in export.OUTPUTS:
                if not np.array_equal(got[key], expected[k][key]):
                    mismatches.append((t, j, k, key))
            with lock:
                done[0] += 1
                if done[0] == WARM:
                    rss_after_warm[0] = rss_bytes()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    wall = time.perf_counter() - start
    assert not any(thread.is_alive() for thread in threads), f"{label}: a thread hung"
    rss_end = rss_bytes()
    assert not errors, f"{label}: {len(errors)} failed requests, e.g. {errors[:3]}"
    assert not mismatches, f"{label}: {len(mismatches)} answers differ, e.g. {mismatches[:5]}"
    flat = np.array([v for per in latencies for v in per]) * 1e3
    count = THREADS * PER_THREAD
    assert len(flat) == count
    growth = rss_end / rss_after_warm[0] - 1
    print(f"\n{label}: {count} requests ({THREADS} threads) in {wall:.2f} s = "
          f"{count / wall:.1f} requests/s; latency p50 {np.percentile(flat, 50):.1f} ms, "
          f"p99 {np.percentile(flat, 99):.1f} ms; RSS after {WARM} requests "
          f"{rss_after_warm[0] / 2**20:.0f} MiB, after the run {rss_end / 2**20:.0f} MiB "
          f"({growth:+.1%})")
    assert abs(growth) <= 0.10, f"{label}: resident memory changed by {growth:+.1%}"


def test_load_in_process_predictor(base):
    predictor = export.load_predictor(base / "pose")
    run_load(predictor.predict, _requests(), "in-process Predictor")


def test_load_rest_test_double(server):
    client = serving.RestClient("127.0.0.1", server.rest_port, model="pose")
    run_load(client.predict, _requests(), "REST test double")


def test_load_grpc_test_double(server):
    with serving.GrpcClient("127.0.0.1", server.grpc_port, model="pose") as client:
        run_load(client.predict, _requests(), "gRPC test double")
