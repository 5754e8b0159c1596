"""tf.distribute: MirroredStrategy on two logical CPUs and MultiWorkerMirroredStrategy with two
worker processes on 127.0.0.1.

Logical devices must be configured before TensorFlow initializes its devices, and a
multi-worker strategy owns its process's collective runtime, so every case runs in fresh
subprocesses, each bounded by a timeout.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# Shared by the subprocess scripts: a small keypoint set, a reader-like batch, a trainer.
PRELUDE = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    sys.path.insert(0, {repo!r})

    def logical_cpus(count):
        import tensorflow as tf
        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])

    def keypoint_set():
        from keras_pose.keypoints import KeypointSet
        return KeypointSet(name="test4", names=("a_l", "a_r", "b_l", "b_r"),
                           flip_pairs=((0, 1), (2, 3)), skeleton=(), torso=(0, 3))

    def reader_batch(batch_size, crop_size=80, seed=0):
        rng = np.random.default_rng(seed)
        keypoints = rng.uniform(0.25, 0.75, (batch_size, 4, 2)).astype(np.float32) * crop_size
        visibility = np.full((batch_size, 4), 2, np.int32)
        visibility[0, 1] = 0
        return {{"image": rng.integers(0, 256, (batch_size, crop_size, crop_size, 3),
                                       dtype=np.uint8),
                "keypoints": keypoints, "visibility": visibility}}

    def make_trainer(model, augment_on, learning_rate, optimizer="sgd", seed=0):
        import keras
        from keras_pose import augment
        from keras_pose.models import build_model
        from keras_pose.training.trainer import PoseTrainer
        options = {{
            "stacked_hourglass": {{"num_stacks": 2, "num_features": 8, "depth": 1}},
            "deeppose": {{"num_stages": 1, "fc_units": 32, "dropout_rate": 0.0,
                          "torso": (0, 3)}},
        }}[model]
        keras.utils.set_random_seed(seed)
        size = 64 if model == "deeppose" else 32
        network = build_model(model, num_keypoints=4, input_shape=(size, size, 3), **options)
        trainer = PoseTrainer(network, keypoint_set=keypoint_set(),
                              augment_config=augment.AugmentConfig() if augment_on else None,
                              sigma=1.0, seed=seed)
        opt = (keras.optimizers.SGD(learning_rate) if optimizer == "sgd"
               else keras.optimizers.RMSprop(learning_rate))
        trainer.compile(optimizer=opt, jit_compile=False)
        return trainer

    def one_step(trainer, batch):
        import tensorflow as tf
        size = len(batch["image"])
        data = tf.data.Dataset.from_tensor_slices(batch).batch(size)
        history = trainer.fit(data, epochs=1, steps_per_epoch=1, verbose=0)
        return float(history.history["loss"][0])

    def weights(trainer):
        return [np.asarray(v.numpy()) for v in trainer.network.trainable_variables]

    def restore(trainer, values):
        for variable, value in zip(trainer.network.trainable_variables, values):
            variable.assign(value)
""")

# One SGD step (learning rate 1: the weight change is the gradient) on a global batch of 4,
# on one device and with MirroredStrategy over two logical CPUs, from the same weights.
MIRRORED = textwrap.dedent("""
    logical_cpus(2)
    import tensorflow as tf
    model = sys.argv[1]
    batch = reader_batch(4)
    halves = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]

    single = make_trainer(model, augment_on=False, learning_rate=1.0)
    start = weights(single)
    runs = {}
    for name, data in (("global", batch), ("half_0", halves[0]), ("half_1", halves[1])):
        restore(single, start)
        loss = one_step(single, data)
        runs[name] = (loss, [a - b for a, b in zip(start, weights(single))])

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = make_trainer(model, augment_on=False, learning_rate=1.0)
    restore(mirrored, start)
    loss = one_step(mirrored, batch)
    runs["mirrored"] = (loss, [a - b for a, b in zip(start, weights(mirrored))])
    np.savez(sys.argv[2], replicas=strategy.num_replicas_in_sync,
             **{f"{k}_loss": v[0] for k, v in runs.items()},
             **{f"{k}_grad_{i}": g for k, v in runs.items() for i, g in enumerate(v[1])})
""")

# One worker of a two-worker cluster: three training steps with augmentation, then the weights.
WORKER = textwrap.dedent("""
    from keras_pose.training.strategy import make_strategy
    strategy = make_strategy("multiworker")
    import tensorflow as tf
    with strategy.scope():
        trainer = make_trainer("stacked_hourglass", augment_on=True, learning_rate=1e-3,
                               optimizer="rmsprop")
    start = weights(trainer)
    rng_batch = reader_batch(16, seed=1)
    data = tf.data.Dataset.from_tensor_slices(rng_batch).batch(4, drop_remainder=True).repeat()
    history = trainer.fit(data, epochs=1, steps_per_epoch=3, verbose=0)
    end = weights(trainer)
    np.savez(sys.argv[1], replicas=strategy.num_replicas_in_sync,
             loss=history.history["loss"][0],
             **{f"start_{i}": w for i, w in enumerate(start)},
             **{f"end_{i}": w for i, w in enumerate(end)})
""")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
                "CUDA_VISIBLE_DEVICES": ""}, **extra)
    return env


def _script(tmp_path: pathlib.Path, name: str, body: str) -> pathlib.Path:
    path = tmp_path / f"{name}.py"
    path.write_text(PRELUDE.format(repo=str(REPO)) + body)
    return path


def _run(args, timeout, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=_env(**env), cwd=str(REPO))


def _grads(result, name: str) -> list[np.ndarray]:
    keys = sorted((k for k in result.files if k.startswith(f"{name}_grad_")),
                  key=lambda k: int(k.rsplit("_", 1)[1]))
    return [result[k] for k in keys]


def _assert_close(actual: list[np.ndarray], expected: list[np.ndarray], rtol: float) -> None:
    """Per variable, within ``rtol`` of its largest gradient entry, plus 1e-6 absolute: the
    gradients are read back as (weights before - weights after) of an SGD step with learning
    rate 1, exact only to float32 rounding of the weights (about 1e-7 for weights near 1)."""
    assert len(actual) == len(expected) > 0
    for a, e in zip(actual, expected):
        limit = rtol * float(np.abs(e).max()) + 1e-6
        assert float(np.abs(a - e).max()) <= limit, (a.shape, np.abs(a - e).max(), limit)


def test_mirrored_two_devices_match_one_device_on_the_global_batch(tmp_path):
    """DeepPose (no batch normalization): the same loss and gradients, replicas or not."""
    out = tmp_path / "deeppose.npz"
    result = _run([_script(tmp_path, "mirrored", MIRRORED), "deeppose", out], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    r = np.load(out)
    assert int(r["replicas"]) == 2
    assert float(r["mirrored_loss"]) == pytest.approx(float(r["global_loss"]), rel=1e-5)
    _assert_close(_grads(r, "mirrored"), _grads(r, "global"), rtol=1e-4)
    # Not trivially equal: each half alone gives other gradients.
    assert not np.allclose(_grads(r, "half_0")[0], _grads(r, "global")[0], rtol=1e-3)


@pytest.mark.slow
def test_mirrored_hourglass_is_the_mean_over_replica_batches(tmp_path):
    """With batch normalization each replica normalizes its own half of the batch (Keras's
    default, unsynchronized BN), so the mirrored step equals the mean of the two half-batch
    steps on one device: the loss scaling (1/replicas) and the gradient sum are right."""
    out = tmp_path / "hourglass.npz"
    result = _run([_script(tmp_path, "mirrored", MIRRORED), "stacked_hourglass", out],
                  timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    r = np.load(out)
    assert int(r["replicas"]) == 2
    mean_loss = (float(r["half_0_loss"]) + float(r["half_1_loss"])) / 2
    assert float(r["mirrored_loss"]) == pytest.approx(mean_loss, rel=1e-4)
    mean_grads = [(a + b) / 2 for a, b in zip(_grads(r, "half_0"), _grads(r, "half_1"))]
    _assert_close(_grads(r, "mirrored"), mean_grads, rtol=1e-3)


def _free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_train_together_and_agree_on_the_weights(tmp_path):
    script = _script(tmp_path, "worker", WORKER)
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes, outputs = [], []
    for index in range(2):
        out = tmp_path / f"worker{index}.npz"
        outputs.append(out)
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [sys.executable, str(script), str(out)], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=str(REPO),
            env=_env(TF_CONFIG=json.dumps(config))))
    logs = []
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=420)
            logs.append(stderr)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for process in processes:
        assert process.returncode == 0, "\n".join(
            f"--- worker {i} ---\n{stderr[-2500:]}" for i, stderr in enumerate(logs))
    w0, w1 = np.load(outputs[0]), np.load(outputs[1])
    assert int(w0["replicas"]) == int(w1["replicas"]) == 2
    ends = sorted((k for k in w0.files if k.startswith("end_")), key=lambda k: int(k[4:]))
    assert ends
    for key in ends:
        np.testing.assert_allclose(w0[key], w1[key], rtol=1e-6, atol=1e-7)
    # ... and training moved them.
    moved = [not np.allclose(w0[k], w0["start_" + k[4:]]) for k in ends]
    assert sum(moved) > len(ends) // 2
    assert np.isfinite(float(w0["loss"])) and float(w0["loss"]) == pytest.approx(
        float(w1["loss"]), rel=1e-5)


RUN_PIPELINE = """
name = "mw"
[model]
name = "stacked_hourglass"
input_size = 32
options = {{ num_stacks = 1, num_features = 8, depth = 1 }}
[data]
crop_size = 40
shuffle_buffer = 16
[data.synthetic]
enabled = true
directory = "{data}"
num_train_images = 8
num_val_images = 4
image_size = 64
[augment]
sampler = "gather"
[schedule]
kind = "constant"
[train]
batch_size = 4
epochs = 1
steps_per_epoch = 2
strategy = "multiworker"
[callbacks]
images_every = 0
[export]
enabled = true
base = "{base}"
"""

PREPARE = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from keras_pose.pipeline import load_pipeline
    from keras_pose.training.inputs import prepare_synthetic_data
    prepare_synthetic_data(load_pipeline(sys.argv[1], ["train.strategy='default'"]))
""")


@pytest.mark.slow
def test_multiworker_run_writes_only_from_the_chief(tmp_path):
    """``tools/train.py`` on two workers: one run directory, one checkpoint, one export."""
    pipeline = tmp_path / "mw.toml"
    pipeline.write_text(RUN_PIPELINE.format(data=tmp_path / "synthetic",
                                            base=tmp_path / "saved_models"))
    # The records are made once, before the workers start (as a user would).
    prepare = tmp_path / "prepare.py"
    prepare.write_text(PREPARE.format(repo=str(REPO)))
    made = _run([prepare, pipeline], timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]

    out = tmp_path / "run"
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    processes = []
    for index in range(2):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [sys.executable, str(REPO / "tools" / "train.py"), "--pipeline", str(pipeline),
             "--output", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=str(tmp_path), env=_env(TF_CONFIG=json.dumps(config))))
    results = []
    try:
        for process in processes:
            results.append(process.communicate(timeout=480))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    logs = "\n".join(f"--- worker {i} ---\n{stderr[-2500:]}"
                     for i, (_, stderr) in enumerate(results))
    for process, (stdout, _) in zip(processes, results):
        assert process.returncode == 0, logs
        assert "val PCK@0.2 torso" in stdout

    assert (out / "model.keras").exists()
    assert json.loads((out / "summary.json").read_text())["model"] == "stacked_hourglass"
    assert (out / "pipeline.resolved.toml").exists()
    assert not (out / "workers").exists()  # the other worker cleaned up after itself
    versions = sorted(p.name for p in (tmp_path / "saved_models" / "mw").iterdir()
                      if p.name.isdigit())
    assert versions == ["1"]  # exported once, by the chief


JIT_RULES = textwrap.dedent("""
    logical_cpus(2)
    import tensorflow as tf
    from keras_pose.pipeline import PipelineError
    from keras_pose.training.strategy import resolve_jit_compile
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {"auto": resolve_jit_compile("auto", strategy),
               "false": resolve_jit_compile("false", strategy),
               "default_true": resolve_jit_compile("true", tf.distribute.get_strategy())}
    try:
        resolve_jit_compile("true", strategy)
        results["true"] = "no error"
    except PipelineError as error:
        results["true"] = str(error)
    print("RESULTS " + json.dumps(results))
""")


@pytest.mark.slow
def test_xla_is_not_used_across_replicas(tmp_path):
    """Keras 3 jit-compiles the whole distributed step, which fails across devices: ``auto``
    turns XLA off with several replicas and ``true`` is a clear pipeline error."""
    result = _run([_script(tmp_path, "jit_rules", JIT_RULES)], timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("RESULTS "))
    rules = json.loads(line[len("RESULTS "):])
    assert rules["auto"] is False and rules["false"] is False
    assert rules["default_true"] is True
    assert "jit_compile = true" in rules["true"] and "2 replicas" in rules["true"]
