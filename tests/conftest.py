"""Shared fixtures: paths to the third-party sample data in ../shared (never copied here).

Also puts this checkout first on the ``PYTHONPATH`` of every subprocess the tests start
(``tools/*.py``, ``python -c`` scripts): the tools import the installed ``keras_pose``, which
may be another checkout's (an editable install) or an older release.
"""

from __future__ import annotations

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("KERAS_POSE_SHARED", REPO.parent / "shared"))
COCO_SAMPLE = SHARED / "data" / "coco_sample"
MPII_SAMPLE = SHARED / "data" / "mpii_sample"
LSPET = SHARED / "data" / "lspet"

# Under pytest-xdist each worker gets its share of the cores for TensorFlow's op threads
# (set before anything imports TensorFlow): two workers with a pool of every core each
# oversubscribe them, and measured 26% slower on the compute-heavy tests of a 2-core machine.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(max(
        1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

# The serving tests' exported model and TF Serving test double (`base`, `server`).
pytest_plugins = ["serving_fixtures"]

os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])


@pytest.fixture(scope="session")
def hourglass_file(tmp_path_factory) -> pathlib.Path:
    """An untrained 1-stack hourglass (17 keypoints, 64 px, batch norms to fold), saved as a
    ``.keras`` file, for the tests of tools that load a model file."""
    # Imported here: this module must set the worker's TensorFlow threads before TF loads.
    from keras_pose.models import build_model

    path = tmp_path_factory.mktemp("model") / "hourglass.keras"
    build_model("stacked_hourglass", num_keypoints=17, input_shape=(64, 64, 3), num_stacks=1,
                num_features=16, depth=2).save(path)
    return path


@pytest.fixture(scope="session")
def coco_sample() -> pathlib.Path:
    """The 4 real COCO val2017 images and their annotations, or a skip saying why."""
    if not (COCO_SAMPLE / "person_keypoints_sample.json").exists():
        pytest.skip(f"COCO sample data not found at {COCO_SAMPLE} (../shared is absent)")
    return COCO_SAMPLE


@pytest.fixture(scope="session")
def mpii_sample() -> pathlib.Path:
    """5 real MPII images and their entries in the common JSON layout, or a skip saying why."""
    if not (MPII_SAMPLE / "annotations.json").exists():
        pytest.skip(f"MPII sample data not found at {MPII_SAMPLE} (../shared is absent)")
    return MPII_SAMPLE


@pytest.fixture(scope="session")
def lspet_data() -> pathlib.Path:
    """The LSPET joints.mat and its 9,500 images, or a skip saying why."""
    if not (LSPET / "joints.mat").exists():
        pytest.skip(f"LSPET data not found at {LSPET} (../shared is absent)")
    return LSPET


def pytest_collection_modifyitems(config, items):
    """Files with the most slow tests first (stable otherwise): pytest-xdist hands out whole
    files in this order, so the long ones start early and the two workers finish together
    instead of one running the last long file alone."""
    slow = {}
    for item in items:
        slow[item.path] = slow.get(item.path, 0) + bool(item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])
