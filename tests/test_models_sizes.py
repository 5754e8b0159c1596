"""Full-size networks: trainable parameter counts of docs/models.md, output names/shapes.

Only graphs are built here (no forward passes); each test takes a few seconds.
"""

from __future__ import annotations

import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_pose.models import build_model  # noqa: E402


def trainable(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def shapes(model) -> dict:
    return {name: tuple(output.shape) for name, output in zip(model.output_names, model.outputs)}


def residual(c_in: int, c_out: int) -> int:
    """Hand count of one pre-activation bottleneck residual (docs/models.md section 3)."""
    m = c_out // 2
    count = 2 * c_in + (c_in * m + m) + 2 * m + (9 * m * m + m) + 2 * m + (m * c_out + c_out)
    return count + (c_in * c_out + c_out if c_in != c_out else 0)


@pytest.fixture(autouse=True)
def _free_memory():
    yield
    gc.collect()


@pytest.mark.slow
@pytest.mark.parametrize("num_stacks, num_keypoints, expected", [
    (2, 16, 6_570_400),
    (2, 17, 6_571_170),
    (4, 16, 12_858_304),
    (8, 16, 25_434_112),
])
def test_stacked_hourglass_newell_counts(num_stacks, num_keypoints, expected):
    model = build_model("stacked_hourglass", num_keypoints=num_keypoints, num_stacks=num_stacks)
    assert trainable(model) == expected
    assert shapes(model) == {f"stack_{i}": (None, 64, 64, num_keypoints)
                             for i in range(1, num_stacks + 1)}
    spec = model.output_spec
    assert (spec.kind, spec.stride, spec.loss) == ("heatmaps", 4, "mse")
    assert spec.output_names == tuple(model.output_names)


def test_stacked_hourglass_poster_count():
    model = build_model("stacked_hourglass", num_keypoints=16, num_stacks=2, num_modules=2,
                        variant="nj")
    # The PyTorch code's 12,647,206 includes the last stack's merge convs (256*256+256 and
    # 16*256+256), which it computes and discards; they are not built here.
    assert trainable(model) == 12_647_206 - (256 * 256 + 256) - (16 * 256 + 256) == 12_577_062
    assert abs(trainable(model) - 12.6e6) / 12.6e6 < 0.005
    assert list(shapes(model).values()) == [(None, 64, 64, 16)] * 2


def test_quickstart_configuration_count():
    model = build_model("stacked_hourglass", num_keypoints=17, input_shape=(128, 128, 3),
                        num_stacks=1, num_features=64, depth=3)
    stem = (7 * 7 * 3 * 16 + 16) + 2 * 16 + residual(16, 32) + residual(32, 32) + residual(32, 64)
    hourglass = (3 * 3 + 1) * residual(64, 64)
    head = residual(64, 64) + (64 * 64 + 64) + 2 * 64 + (64 * 17 + 17)
    assert trainable(model) == stem + hourglass + head == 180_465
    assert shapes(model) == {"stack_1": (None, 32, 32, 17)}


@pytest.mark.slow
def test_residual_stacked_hourglass_count():
    model = build_model("residual_stacked_hourglass", num_keypoints=16)
    assert trainable(model) == 31_089_238 - (256 * 256 + 256) - (16 * 256 + 256) == 31_019_094
    assert abs(trainable(model) - 31.1e6) / 31.1e6 < 0.01
    assert shapes(model) == {f"stack_{i}": (None, 64, 64, 16) for i in range(1, 6)}


@pytest.mark.slow
@pytest.mark.parametrize("backbone, expected, poster", [
    ("resnet34", 24_302_288, 24.4e6),
    ("resnet50", 26_623_952, 26.5e6),
])
def test_chained_prediction_counts(backbone, expected, poster):
    model = build_model("chained_prediction", num_keypoints=16, backbone=backbone)
    j = 16
    trunk = {"resnet34": 21_797_672 - 513_000, "resnet50": 25_557_032 - 2_049_000}[backbone]
    init = {"resnet34": 512 * 64 + 64, "resnet50": 2048 * 64 + 64}[backbone]
    chain = j * 117_249 + (j - 1) * 4_288 + j * (j - 1) // 2 * 8_704
    assert trainable(model) == trunk + init + chain == expected
    assert abs(trainable(model) - poster) / poster < 0.02
    assert shapes(model) == {"heatmaps": (None, 32, 32, 16)}
    spec = model.output_spec
    assert (spec.kind, spec.stride, spec.loss) == ("heatmaps", 8, "softmax_cross_entropy")


@pytest.mark.slow
def test_chained_prediction_resnet50_pipeline_is_the_poster_configuration():
    """pipelines/chained_prediction_resnet50_coco.toml builds the poster's ResNet-50 chain."""
    import pathlib

    from keras_pose.keypoints import get_keypoint_set
    from keras_pose.pipeline import load_pipeline

    path = pathlib.Path(__file__).parents[1] / "pipelines" / "chained_prediction_resnet50_coco.toml"
    pipeline = load_pipeline(path)
    j = get_keypoint_set(pipeline.data.keypoint_set).num_keypoints
    size = pipeline.model.input_size
    model = build_model(pipeline.model.name, num_keypoints=j, input_shape=(size, size, 3),
                        **pipeline.model.options)
    chain = j * 117_249 + (j - 1) * 4_288 + j * (j - 1) // 2 * 8_704
    assert trainable(model) == 25_557_032 - 2_049_000 + 2048 * 64 + 64 + chain == 26_884_753
    assert model.output_spec.loss == "softmax_cross_entropy"
    assert shapes(model) == {"heatmaps": (None, 32, 32, j)}


@pytest.mark.parametrize("num_keypoints", [16, 17])
def test_deeppose_alexnet_stage_count(num_keypoints):
    model = build_model("deeppose", num_keypoints=num_keypoints, num_stages=1)
    features = 9_216 * 4_096 + 4_096 + 4_096 * 4_096 + 4_096 + 4_096 * 2 * num_keypoints
    convs = 34_944 + 614_656 + 885_120 + 1_327_488 + 884_992
    expected = convs + features + 2 * num_keypoints
    assert trainable(model) == expected
    assert expected == {16: 58_412_448, 17: 58_420_642}[num_keypoints]
    assert model.input_size == (220, 220)
    assert shapes(model) == {"stage_1": (None, num_keypoints, 2)}


def test_deeppose_alexnet_cascade_outputs_at_220():
    # Small dense layers: the test is about the cascade's outputs, not the 175M weights.
    model = build_model("deeppose", num_keypoints=17, fc_units=64)
    assert model.input_size == (220, 220)
    assert shapes(model) == {f"stage_{s}": (None, 17, 2) for s in (1, 2, 3)}
    spec = model.output_spec
    assert (spec.kind, spec.stride, spec.loss) == ("coordinates", None, "coordinate_l2")
    assert model.get_layer("stage_2_crop").torso == (5, 12)  # COCO left shoulder, right hip


@pytest.mark.parametrize("num_keypoints, expected", [(16, 21_301_088), (17, 21_302_114)])
def test_deeppose_resnet34_count(num_keypoints, expected):
    model = build_model("deeppose", num_keypoints=num_keypoints, backbone="resnet34")
    assert trainable(model) == 21_797_672 - (512 * 1000 + 1000) + (512 + 1) * 2 * num_keypoints
    assert trainable(model) == expected
    assert shapes(model) == {"stage_1": (None, num_keypoints, 2)}
