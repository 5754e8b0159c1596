"""Serving client round trips (REST and gRPC) against the in-process stand-in, and live TF Serving
when ``tensorflow_model_server`` is installed."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from google.protobuf import text_format

from keras_pose import export, serving
from keras_pose.cli import serve_client_main

TESTS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from fake_model_server import FakeModelServer  # noqa: E402
from tiny_pose import TinyHeatmapPose  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Two versions of model "pose" (different weights) under one base, and their config."""
    base = tmp_path_factory.mktemp("saved_models")
    for seed in (1, 2):
        export.export_saved_model(TinyHeatmapPose(input_size=64, seed=seed), name="pose",
                                  base=base, keypoint_set="coco17", update_config=False)
    path = export.write_models_config(base, serving_root=str(base))
    # Serve both versions (TF Serving serves only the latest unless told).
    config = export.read_models_config(path)
    config.model_config_list.config[0].model_version_policy.all.SetInParent()
    path.write_text(text_format.MessageToString(config))
    return base


@pytest.fixture(scope="module")
def server(served):
    with FakeModelServer(served / "models.config") as fake:
        yield fake


@pytest.fixture(scope="module")
def reference(served):
    return {v: export.load_predictor(served / "pose" / str(v)) for v in (1, 2)}


@pytest.fixture(scope="module")
def photos(coco_sample):
    paths = sorted((coco_sample / "images").glob("*.jpg"))[:2]
    return [p.read_bytes() for p in paths], [serving.read_image(p) for p in paths]


def test_rest_round_trip_row_and_columnar(server, reference, photos):
    jpegs, images = photos
    client = serving.RestClient("127.0.0.1", server.rest_port, model="pose")
    whole = client.predict(jpegs)
    expected = reference[2].predict_encoded(jpegs)
    assert whole["keypoints"].shape == (2, 17, 2) and whole["scores"].shape == (2, 17)
    np.testing.assert_allclose(whole["keypoints"], expected["keypoints"], atol=1e-4)
    np.testing.assert_allclose(whole["scores"], expected["scores"], atol=1e-6)
    # Person boxes, on images of two different sizes, in both JSON layouts.
    boxes = np.array([[270.0, 40.0, 230.0, 350.0], [100.0, 50.0, 120.0, 200.0]], np.float32)
    expected = reference[2].predict_encoded(jpegs, boxes)
    for columnar in (False, True):
        got = client.predict(jpegs, boxes, columnar=columnar)
        np.testing.assert_allclose(got["keypoints"], expected["keypoints"], atol=1e-4)
    # The keypoints lie in image pixels around the box (the model is untrained, the box is not).
    side = 1.25 * boxes[:, 2:].max(axis=1)
    centre = boxes[:, :2] + boxes[:, 2:] / 2
    assert np.all(np.abs(got["keypoints"] - centre[:, None]) <= side[:, None, None] / 2 + 1)
    # A numpy image is sent as PNG: the same pixels as the in-process uint8 signature.
    np.testing.assert_allclose(client.predict(images[0])["keypoints"],
                               reference[2].predict(images[0])["keypoints"], atol=1e-4)


def test_rest_versions_and_status(server, reference, photos):
    jpegs, _ = photos
    v1 = serving.RestClient("127.0.0.1", server.rest_port, model="pose", version=1)
    got = v1.predict(jpegs[0])
    np.testing.assert_allclose(got["keypoints"], reference[1].predict_encoded(jpegs[0])
                               ["keypoints"], atol=1e-4)
    assert not np.allclose(got["scores"], reference[2].predict_encoded(jpegs[0])["scores"])
    status = serving.RestClient("127.0.0.1", server.rest_port, model="pose").status()
    assert [s["version"] for s in status["model_version_status"]] == ["1", "2"]


def test_grpc_round_trip(server, reference, photos):
    jpegs, images = photos
    boxes = np.array([[270.0, 40.0, 230.0, 350.0], [100.0, 50.0, 120.0, 200.0]], np.float32)
    with serving.GrpcClient("127.0.0.1", server.grpc_port, model="pose") as client:
        got = client.predict(jpegs, boxes)
        plain = client.predict(images[1])
    expected = reference[2].predict_encoded(jpegs, boxes)
    np.testing.assert_allclose(got["keypoints"], expected["keypoints"], atol=1e-5)
    np.testing.assert_allclose(got["scores"], expected["scores"], atol=1e-6)
    np.testing.assert_allclose(plain["keypoints"], reference[2].predict(images[1])["keypoints"],
                               atol=1e-5)
    with serving.GrpcClient("127.0.0.1", server.grpc_port, model="pose", version=1) as client:
        np.testing.assert_allclose(client.predict(jpegs[0])["scores"],
                                   reference[1].predict_encoded(jpegs[0])["scores"], atol=1e-6)


def test_errors_are_clear(server, photos):
    jpegs, _ = photos
    rest = serving.RestClient("127.0.0.1", server.rest_port, model="nope")
    with pytest.raises(serving.ServingError, match="HTTP 404.*nope"):
        rest.predict(jpegs[0])
    rest = serving.RestClient("127.0.0.1", server.rest_port, model="pose")
    with pytest.raises(serving.ServingError, match="HTTP 400"):
        rest.predict([b"these bytes are not an image"])
    with pytest.raises(ValueError, match=r"boxes must be float32 \[N, 4\]"):
        rest.predict(jpegs, [[0, 0, 10, 10]])
    # The serving graph's own box rule, checked before sending: finite and within bounds.
    for bad in (np.nan, np.inf, 1e30):
        with pytest.raises(ValueError, match=r"boxes need finite values \(\|v\| <= 1e\+07"):
            rest.predict(jpegs[0], [[bad, 0.0, 10.0, 10.0]])
    with serving.GrpcClient("127.0.0.1", server.grpc_port, model="pose", version=7) as client:
        with pytest.raises(serving.ServingError, match="NOT_FOUND"):
            client.predict(jpegs[0])
    # Nothing listens on a port we just closed.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(serving.ServingError, match="cannot reach TF Serving"):
        serving.RestClient("127.0.0.1", port, model="pose", timeout=5).predict(jpegs[0])


def test_serve_client_cli_draws_and_writes_json(server, coco_sample, tmp_path, capsys):
    image = sorted((coco_sample / "images").glob("*.jpg"))[0]
    for protocol, port in (("rest", server.rest_port), ("grpc", server.grpc_port)):
        out = tmp_path / protocol
        status = serve_client_main(["--model", "pose", "--host", "127.0.0.1", "--port", str(port),
                                    "--protocol", protocol, "--image", str(image),
                                    "--box", "280,44,219,347", "--output", str(out)])
        assert status == 0
        result = json.loads((out / "keypoints.json").read_text())
        assert result[0]["image"] == str(image) and len(result[0]["keypoints"]) == 17
        overlay = cv2.imread(str(out / f"{image.stem}.png"))
        source = cv2.imread(str(image))
        assert overlay.shape == source.shape and np.any(overlay != source)
    assert "left_shoulder" in capsys.readouterr().out
    status = serve_client_main(["--model", "pose", "--port", str(server.rest_port), "--host",
                                "127.0.0.1", "--image", str(tmp_path / "missing.jpg")])
    assert status == 2 and "not found" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None,
                    reason="tensorflow_model_server is not on PATH (install it or use Docker "
                           "to run this live test)")
def test_live_tensorflow_model_server(served, reference, photos, tmp_path):
    jpegs, _ = photos
    rest_port, grpc_port = _free_port(), _free_port()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 (closed in finally)
    process = subprocess.Popen(
        ["tensorflow_model_server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
         f"--model_config_file={served / 'models.config'}"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ},
    )
    try:
        client = serving.RestClient("127.0.0.1", rest_port, model="pose", timeout=10)
        deadline = time.time() + 90
        while True:
            try:
                states = [s["state"] for s in client.status()["model_version_status"]]
                if "AVAILABLE" in states:
                    break
            except serving.ServingError:
                pass
            if time.time() > deadline or process.poll() is not None:
                pytest.fail("tensorflow_model_server did not serve the model: "
                            + (tmp_path / "server.log").read_text()[-2000:])
            time.sleep(1)
        expected = reference[2].predict_encoded(jpegs)
        np.testing.assert_allclose(client.predict(jpegs)["keypoints"], expected["keypoints"],
                                   atol=1e-3)
        with serving.GrpcClient("127.0.0.1", grpc_port, model="pose") as grpc_client:
            np.testing.assert_allclose(grpc_client.predict(jpegs)["keypoints"],
                                       expected["keypoints"], atol=1e-3)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
