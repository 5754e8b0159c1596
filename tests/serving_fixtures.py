"""Fixtures shared by the serving tests: one tiny heatmap network exported as model ``pose``
(version 1), and the TF Serving test double serving it. Loaded by ``tests/conftest.py``."""

from __future__ import annotations

import pytest
from fake_model_server import FakeModelServer
from tiny_pose import TinyHeatmapPose

from keras_pose import export


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("saved_models")
    export.export_saved_model(TinyHeatmapPose(input_size=64, seed=1), name="pose", base=base,
                              keypoint_set="coco17", update_config=False)
    return base


@pytest.fixture(scope="module")
def server(base):
    with FakeModelServer({"pose": base / "pose"}) as fake:
        yield fake
