"""Pipeline files: every shipped pipeline loads; bad keys and values are named errors."""

from __future__ import annotations

import inspect
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tomllib
from tiny_pose import TinyHeatmapPose

from keras_pose.augment import AugmentConfig
from keras_pose.keypoints import COCO17
from keras_pose.models import MODELS
from keras_pose.pipeline import (
    PipelineError,
    load_pipeline,
    pipeline_from_dict,
    to_toml,
)
from keras_pose.training.run import augment_config
from keras_pose.training.trainer import PoseTrainer

PIPELINES = sorted((pathlib.Path(__file__).parents[1] / "pipelines").glob("*.toml"))


@pytest.mark.parametrize("path", PIPELINES, ids=[p.stem for p in PIPELINES])
def test_shipped_pipelines_load_and_round_trip(path):
    pipeline = load_pipeline(path)
    assert pipeline.name == path.stem
    # The resolved file is a complete pipeline: reading it back gives the same run.
    assert pipeline_from_dict(tomllib.loads(to_toml(pipeline))) == pipeline


def test_shipped_pipelines_include_the_required_recipes():
    names = {p.stem for p in PIPELINES}
    assert {"quickstart", "stacked_hourglass_coco", "stacked_hourglass_poster_coco",
            "residual_stacked_hourglass_coco", "chained_prediction_coco",
            "chained_prediction_resnet50_coco", "deeppose_coco"} <= names


def test_unknown_key_names_key_file_and_valid_keys(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\n[train]\nbatch_sise = 4\n')
    with pytest.raises(PipelineError) as error:
        load_pipeline(path)
    message = str(error.value)
    assert str(path) in message
    assert "'batch_sise'" in message and "[train]" in message
    assert "batch_size" in message  # the valid keys are listed


def test_unknown_section_is_an_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[trian]\nepochs = 1\n")
    with pytest.raises(PipelineError, match="unknown key 'trian' in top level"):
        load_pipeline(path)


@pytest.mark.parametrize("text, match", [
    ("[train]\nepochs = true\n", "train.epochs must be of type int"),
    ("[train]\nepochs = 0\n", r"\[train\] epochs must be > 0"),
    ('[optimizer]\nname = "adamw"\n', "choose one of"),
    ("[augment]\nrotation = \"lots\"\n", "augment.rotation must be of type float"),
    ("[model]\noptions = 3\n", "model.options must be of type dict"),
    ("name = [1\n", "not valid TOML"),
])
def test_bad_values(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PipelineError, match=match):
        load_pipeline(path)


def test_missing_file():
    with pytest.raises(PipelineError, match="pipeline file not found: nowhere.toml"):
        load_pipeline("nowhere.toml")


def test_overrides_take_toml_values_and_bare_words(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\n[train]\nepochs = 5\n')
    pipeline = load_pipeline(path, ["train.epochs=7", "model.name=deeppose",
                                    "augment.scale=0.1", "model.options={num_stacks = 2}"])
    assert pipeline.train.epochs == 7
    assert pipeline.model.name == "deeppose"
    assert pipeline.augment.scale == pytest.approx(0.1)
    assert pipeline.model.options == {"num_stacks": 2}
    with pytest.raises(PipelineError, match="unknown key 'epoch'"):
        load_pipeline(path, ["train.epoch=3"])


@pytest.mark.parametrize("path", PIPELINES, ids=[p.stem for p in PIPELINES])
def test_shipped_pipelines_name_real_model_options(path):
    pipeline = load_pipeline(path)
    parameters = inspect.signature(MODELS[pipeline.model.name]).parameters
    unknown = set(pipeline.model.options) - set(parameters)
    assert not unknown, f"{path.name}: {pipeline.model.name} has no option(s) {unknown}"


def test_metrics_key_defaults_round_trips_and_names_bad_metrics(tmp_path):
    assert load_pipeline(None).callbacks.metrics == ["pck_torso@0.2", "pck_bbox@0.05"]
    path = tmp_path / "mpii.toml"
    path.write_text('name = "mpii"\n[data]\nkeypoint_set = "mpii16"\n[callbacks]\n'
                    'metrics = ["pckh@0.5", "pck_torso@0.1", "poster_acc"]\n')
    pipeline = load_pipeline(path)
    assert pipeline.callbacks.metrics == ["pckh@0.5", "pck_torso@0.1", "poster_acc"]
    assert pipeline_from_dict(tomllib.loads(to_toml(pipeline))) == pipeline
    with pytest.raises(PipelineError) as error:
        load_pipeline(path, ['callbacks.metrics=["pck_torso", "pckh_at_half"]'])
    message = str(error.value)
    assert "[callbacks] metrics" in message and "unknown metric 'pckh_at_half'" in message
    assert "pck_torso@<threshold>" in message and "poster_acc@<threshold>" in message
    # PCKh on COCO's keypoints: no head pair, refused at load rather than at the first PCK.
    with pytest.raises(PipelineError, match="pckh@0.5: keypoint set 'coco17' defines no head "
                       "pair"):
        load_pipeline(path, ['data.keypoint_set="coco17"'])
    with pytest.raises(PipelineError, match="non-empty list"):
        load_pipeline(None, ["callbacks.metrics=[]"])


def test_reference_augmentation_per_pipeline(tmp_path):
    """stacked_hourglass_coco draws what pose-hg-train draws; the poster pipelines the poster's
    uniform ranges. The new [augment] keys survive pipeline.resolved.toml and reach the
    trainer's AugmentConfig."""

    folder = PIPELINES[0].parent
    torch_code = load_pipeline(folder / "stacked_hourglass_coco.toml")
    assert augment_config(torch_code) == AugmentConfig(
        distribution="clipped_normal", rotation=30.0, rotation_prob=0.4, scale=0.25,
        scale_mode="log2", translation=0.0, flip_prob=0.5, channel_scale=0.4)
    for name in ("stacked_hourglass_poster_coco", "residual_stacked_hourglass_coco"):
        assert augment_config(load_pipeline(folder / f"{name}.toml")) == AugmentConfig(
            distribution="uniform", rotation=40.0, rotation_prob=0.4, scale=0.3,
            scale_mode="linear", translation=0.02, flip_prob=0.5, channel_scale=0.0), name
    resolved = tmp_path / "pipeline.resolved.toml"
    resolved.write_text(to_toml(torch_code))
    assert load_pipeline(resolved) == torch_code
    assert 'distribution = "clipped_normal"' in resolved.read_text()
    assert load_pipeline(resolved, ["augment.distribution=uniform"]).augment.distribution == (
        "uniform")
    with pytest.raises(PipelineError, match=r"\[augment\].*distribution must be one of"):
        load_pipeline(resolved, ["augment.distribution=gaussian"])
    with pytest.raises(PipelineError, match=r"\[augment\].*rotation must be in \[0.0, 90.0\]"):
        load_pipeline(resolved, ["augment.rotation=100.0"])


def test_every_shipped_augmentation_trains_in_the_trainer_step():
    """Each shipped pipeline's [augment] section runs in PoseTrainer's compiled step (the
    reference pipelines' distributions and colour jitter included) and the loss is finite."""
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (4, 40, 40, 3), dtype=np.uint8),
        "keypoints": rng.uniform(10, 30, (4, 17, 2)).astype(np.float32),
        "visibility": np.full((4, 17), 2, np.int32),
    }
    configs = {augment_config(load_pipeline(path)) for path in PIPELINES}
    assert len(configs) >= 3  # the Torch code's, the poster's and the quickstart's
    for config in configs:
        trainer = PoseTrainer(TinyHeatmapPose(input_size=32), keypoint_set=COCO17,
                              augment_config=config, sigma=1.0, seed=0)
        trainer.compile(optimizer=keras.optimizers.RMSprop(1e-3), jit_compile=False)
        history = trainer.fit(tf.data.Dataset.from_tensors(batch).repeat(), epochs=2,
                              steps_per_epoch=1, verbose=0, shuffle=False)
        assert np.all(np.isfinite(history.history["loss"])), config


def test_loading_a_pipeline_needs_no_deep_learning_framework():
    """The schema is free of Keras and TensorFlow: tools that only read a pipeline (and the
    export reading a run's pipeline) do not pay for importing them."""
    code = ("import sys; from keras_pose.pipeline import load_pipeline; "
            "load_pipeline(sys.argv[1]); "
            "print(sorted(m for m in ('keras', 'tensorflow', 'torch') if m in sys.modules))")
    completed = subprocess.run([sys.executable, "-c", code, str(PIPELINES[0])],
                               capture_output=True, text=True, timeout=120, check=True)
    assert completed.stdout.strip() == "[]", completed.stdout
