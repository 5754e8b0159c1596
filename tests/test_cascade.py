"""DeepPose's stage-wise cascade: error distributions, simulated crops, assembly, learning."""

from __future__ import annotations

import json
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_pose.data import synthetic
from keras_pose.keypoints import get_keypoint_set
from keras_pose.models.deeppose import DeepPose
from keras_pose.models.layers import CascadeUpdate, PatchCrop, crop_sides, crop_square_patches
from keras_pose.pipeline import PipelineError, load_pipeline
from keras_pose.training import cascade
from keras_pose.training.run import model_options
from keras_pose.training.trainer import PoseTrainer

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(num_keypoints=4, input_shape=(64, 64, 3), fc_units=16, dropout_rate=0.0,
            torso=(0, 1), conv_filters=(8, 8, 8, 8, 8), crop_scale=0.5)


def test_error_distribution_hand_computed():
    # Joint 0: (0, 0), (2, 0), (1, 3): mean (1, 1); deviations (-1, -1), (1, -1), (0, 2);
    # unbiased covariance [[2, 0], [0, 6]] / 2. Joint 1: one unlabeled value (weight 0).
    displacements = np.array([[[0, 0], [9, 9]], [[2, 0], [1, 1]], [[1, 3], [3, 1]]], float)
    weights = np.array([[1, 0], [1, 1], [1, 1]], float)
    errors = cascade.error_distribution(displacements, weights, cascade.FRAME)
    np.testing.assert_allclose(errors.mean[0], [1, 1])
    np.testing.assert_allclose(errors.covariance[0], [[1, 0], [0, 3]])
    # Joint 1 keeps (1, 1) and (3, 1): mean (2, 1), covariance [[2, 0], [0, 0]].
    np.testing.assert_allclose(errors.mean[1], [2, 1])
    np.testing.assert_allclose(errors.covariance[1], [[2, 0], [0, 0]])
    np.testing.assert_array_equal(errors.counts, [3, 2])
    np.testing.assert_allclose(errors.mean_distance,
                               [(0 + 2 + np.sqrt(10)) / 3, (np.sqrt(2) + np.sqrt(10)) / 2])
    tril = errors.scale_tril()
    np.testing.assert_allclose(tril[0] @ tril[0].T, [[1, 0], [0, 3]], atol=1e-6)
    assert errors.unit == "frame" and not errors.pooled.any()


def test_error_distribution_pools_joints_measured_once():
    displacements = np.array([[[0, 0], [5, 5]], [[2, 2], [0, 0]]], float)
    weights = np.array([[1, 1], [1, 0]], float)
    errors = cascade.error_distribution(displacements, weights, cascade.CROP)
    # Joint 1 measured once: mean 0, covariance of all three values (0,0), (2,2), (5,5).
    np.testing.assert_array_equal(errors.pooled, [False, True])
    np.testing.assert_allclose(errors.mean[1], [0, 0])
    np.testing.assert_allclose(errors.covariance[1], np.cov([[0, 0], [2, 2], [5, 5]],
                                                            rowvar=False))
    with pytest.raises(ValueError, match="at least 2"):
        cascade.error_distribution(displacements, np.zeros((2, 2)), cascade.CROP)


def test_stage_displacements_in_each_stage_units():
    # 100 x 100 input, torso (0, 1), sigma 0.5. Truth (35, 45), (70, 50) px.
    truth = np.array([[[35.0, 45.0], [70.0, 50.0]]])
    stage_1 = np.array([[[-0.2, 0.0], [0.2, 0.0]]])  # (30, 50), (70, 50): torso 40 px
    stage_2 = np.array([[[-0.1, 0.0], [0.2, 0.0]]])
    kwargs = dict(torso=(0, 1), sigma=0.5, min_crop_fraction=0.1)
    first = cascade.stage_displacements([stage_1, stage_2], truth, 100, 1, **kwargs)
    np.testing.assert_allclose(first, [[[-0.05, 0.05], [0.0, 0.0]]], atol=1e-6)
    # Stage 2's crop: side 0.5 x 40 = 20 px. Joint 0 is off by (5, 5) px = (0.25, 0.25).
    second = cascade.stage_displacements([stage_1, stage_2], truth, 100, 2, **kwargs)
    np.testing.assert_allclose(second, [[[0.25, 0.25], [0.0, 0.0]]], atol=1e-6)


def test_simulated_crops_hand_computed():
    truth = np.array([[[10.0, 20.0]]])  # B = 1, K = 1
    side = np.array([40.0])
    # A crop-unit offset (0.25, -0.5) moves 40 px x that: centre (20, 0); target back to the
    # truth: (-0.25, 0.5) crop sides.
    centres, target = cascade.simulated_crops(truth, side, np.array([[[[0.25, -0.5]]]]),
                                              cascade.CROP, 100)
    np.testing.assert_allclose(centres, [[[[20.0, 0.0]]]])
    np.testing.assert_allclose(target, [[[[-0.25, 0.5]]]])
    # A frame-unit offset (0.1, 0.05) on a 100 x 200 (h x w) input moves (20, 5) px.
    centres, target = cascade.simulated_crops(truth, side, np.array([[[[0.1, 0.05]]]]),
                                              cascade.FRAME, (100, 200))
    np.testing.assert_allclose(centres, [[[[30.0, 25.0]]]])
    np.testing.assert_allclose(target, [[[[-0.5, -0.125]]]])
    with pytest.raises(ValueError, match="unit"):
        cascade.simulated_crops(truth, side, np.zeros((1, 1, 1, 2)), "pixels", 100)


def test_a_perfect_regression_through_the_cascade_update_gives_the_truth():
    """The training target, fed to the network's CascadeUpdate with the crop the network
    cuts around the displaced estimate, lands on the ground truth."""
    truth = np.array([[[20.0, 30.0], [44.0, 36.0]]], np.float32)  # 64 x 64 input
    side = np.array([0.5 * np.hypot(24.0, 6.0)], np.float32)
    offsets = np.array([[[[0.1, -0.2], [0.3, 0.05]]]], np.float32)
    centres, target = cascade.simulated_crops(truth, side, offsets, cascade.CROP, 64)
    previous = np.asarray(centres)[:, 0] / 64.0 - 0.5
    boxes = np.concatenate([previous, np.broadcast_to(side[:, None, None] / 64.0, (1, 2, 2))],
                           axis=-1)
    regressed = np.zeros((2, 4), np.float32)
    regressed[0, :2] = np.asarray(target)[0, 0, 0]
    regressed[1, 2:] = np.asarray(target)[0, 0, 1]
    updated = keras.ops.convert_to_numpy(CascadeUpdate()([previous, regressed, boxes]))
    np.testing.assert_allclose(updated, truth / 64.0 - 0.5, atol=1e-6)


def test_own_displacements_reads_joint_i_from_crop_i():
    # B = 1, D = 2, K = 2: crops (d0, j0), (d0, j1), (d1, j0), (d1, j1), each 2K = 4 values.
    regressed = np.arange(16, dtype=np.float32).reshape(4, 4)
    own = keras.ops.convert_to_numpy(cascade.own_displacements(regressed, 2, 2))
    np.testing.assert_array_equal(own, [[[[0, 1], [6, 7]], [[8, 9], [14, 15]]]])


def test_draw_offsets_follow_the_distribution():
    mean = np.array([[0.1, -0.2], [0.0, 0.3]], np.float32)
    covariance = np.array([[[0.04, 0.01], [0.01, 0.09]], [[0.01, 0.0], [0.0, 0.0025]]])
    tril = np.linalg.cholesky(covariance).astype(np.float32)
    offsets = keras.ops.convert_to_numpy(
        cascade.draw_offsets(mean, tril, 500, 20, keras.random.SeedGenerator(3)))
    assert offsets.shape == (500, 20, 2, 2)
    flat = offsets.reshape(-1, 2, 2)
    for joint in range(2):
        np.testing.assert_allclose(flat[:, joint].mean(0), mean[joint], atol=0.01)
        np.testing.assert_allclose(np.cov(flat[:, joint], rowvar=False), covariance[joint],
                                   atol=0.004)


def test_simulated_crops_match_the_network_patch_crop():
    """The training crops are the pixels the network's own PatchCrop cuts at that centre."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    truth = np.array([[[20.0, 30.0], [44.0, 36.0]]], np.float32)
    estimate = truth / 64.0 - 0.5
    patches, _ = PatchCrop(16, torso=(0, 1), crop_scale=0.5)([images, estimate])
    centres, side = crop_sides(estimate, 64, 64, (0, 1), 0.5, 0.1)
    ours = crop_square_patches(images, centres, side, 16)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours),
                               keras.ops.convert_to_numpy(patches), atol=1e-4)


def test_assembled_cascade_carries_each_stage_weights():
    stage_one = DeepPose(num_stages=1, **TINY)
    second = cascade.build_stage_network(stage_one, 2)
    second.set_weights([w + 1.0 for w in second.get_weights()])
    assembled = cascade.assemble_cascade(stage_one, [second])
    assert assembled.num_stages == 2 and assembled.crop_scale == 0.5
    np.testing.assert_array_equal(assembled.get_layer("stage_2_regression").get_weights()[0],
                                  second.get_layer("stage_2_regression").get_weights()[0])
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(assembled(images)[0]),
                               keras.ops.convert_to_numpy(stage_one(images)), atol=1e-5)
    with pytest.raises(ValueError, match="no trained weights"):
        cascade.assemble_cascade(stage_one, [cascade.build_stage_network(stage_one, 3)])


def _tiny_overrides(tmp_path) -> list[str]:
    """The shipped cascade pipeline shrunk to a few steps of a narrow network on figures."""
    options = ('{ backbone = "alexnet", fc_units = 16, dropout_rate = 0.0, '
               'conv_filters = [8, 8, 8, 8, 8] }')
    values = {
        "data.synthetic.enabled": "true", "data.synthetic.directory": f'"{tmp_path / "syn"}"',
        "data.synthetic.num_train_images": "16", "data.synthetic.num_val_images": "4",
        "data.synthetic.image_size": "128", "data.crop_size": "64", "data.shuffle_buffer": "16",
        "model.input_size": "64", "model.options": options, "train.batch_size": "4",
        "train.epochs": "1", "train.steps_per_epoch": "2", "cascade.epochs": "1",
        "cascade.steps_per_epoch": "2", "cascade.error_records": "8", "cascade.sigma": "1.5",
        "callbacks.images_every": "0", "export.base": f'"{tmp_path / "saved_models"}"',
    }
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


@pytest.mark.slow
def test_shipped_cascade_pipeline_trains_every_stage(tmp_path):
    """tools/train.py on deeppose_cascade_coco.toml (tiny override): stage 1, then stages 2
    and 3 on simulated predictions; the assembled cascade is evaluated and exported."""
    from test_training import event_tags, run_train

    from keras_pose.models.deeppose import DeepPose as Loaded

    run_dir = tmp_path / "run"
    result = run_train(["--pipeline", str(REPO / "pipelines" / "deeppose_cascade_coco.toml"),
                        "--output", str(run_dir), *_tiny_overrides(tmp_path)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    stages = summary["cascade"]
    assert [s["stage"] for s in stages] == [1, 2, 3]
    assert [s["train_errors"]["unit"] for s in stages[:2]] == ["frame", "crop"]
    for report in stages:
        assert report["held_out"]["mean_error_px"] > 0
        assert report["held_out"]["persons"] == summary["val_persons"]
    assert stages[0]["train_errors"]["counts"][0] > 0
    network = keras.saving.load_model(run_dir / "model.keras", compile=False)
    assert isinstance(network, Loaded) and network.num_stages == 3
    assert network.crop_scale == 1.5 and network.conv_filters == (8, 8, 8, 8, 8)
    # The assembled cascade carries stage 3's own trained weights.
    stage_3 = keras.saving.load_model(run_dir / "stage_3.keras", compile=False)
    np.testing.assert_array_equal(network.get_layer("stage_3_regression").get_weights()[0],
                                  stage_3.get_layer("stage_3_regression").get_weights()[0])
    assert "cascade/cascade/val_mean_error_px" in event_tags(run_dir / "logs")["scalars"]
    assert "stage 3:" in result.stdout and pathlib.Path(summary["export"]).is_dir()


def _figures(count: int, stream: int) -> dict:
    """Single synthetic figures filling 64 x 64 images, as reader batches hold them."""
    config = synthetic.SyntheticConfig(image_size=(64, 64), max_figures=1, occluder_prob=0.0,
                                       cut_prob=0.0, back_facing_prob=0.0,
                                       height_range=(0.8, 0.95))
    samples = [synthetic.render_sample([stream, 0, i], config) for i in range(count)]
    keypoints = np.stack([s.people[0].keypoints for s in samples])
    return {"image": np.stack([s.image[..., ::-1] for s in samples]),
            "keypoints": keypoints[..., :2].astype(np.float32),
            "visibility": keypoints[..., 2].astype(np.int32)}


def _mean_error_px(outputs, figures: dict) -> list[float]:
    labeled = figures["visibility"] > 0
    truth = figures["keypoints"] / 64.0 - 0.5
    return [float(np.linalg.norm((np.asarray(o) - truth) * 64.0, axis=-1)[labeled].mean())
            for o in outputs]


@pytest.mark.slow
def test_stage_two_reduces_stage_one_error_on_held_out_figures():
    """Stage 1 briefly trained; stage 2 trained on its simulated predictions; the assembled
    cascade's second output is closer to the held-out ground truth than its first."""
    keras.utils.set_random_seed(0)
    train, held_out = _figures(512, 0), _figures(64, 1)
    keypoint_set = get_keypoint_set("coco17")

    def batches(size):
        return tf.data.Dataset.from_tensor_slices(train).shuffle(512, seed=0).repeat().batch(
            size, drop_remainder=True)

    stage_one = DeepPose(num_keypoints=17, input_shape=(64, 64, 3), num_stages=1, fc_units=64,
                         dropout_rate=0.0, conv_filters=(16, 32, 32, 32, 32), crop_scale=1.5)
    trainer = PoseTrainer(stage_one, keypoint_set=keypoint_set, augment_config=None)
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    trainer.fit(batches(16), epochs=1, steps_per_epoch=300, verbose=0, shuffle=False)

    errors = cascade.measure_errors(stage_one,
                                    tf.data.Dataset.from_tensor_slices(train).batch(64))
    assert errors.unit == "frame" and errors.counts.min() > 400
    stage_two = cascade.build_stage_network(stage_one, 2)
    stage_trainer = cascade.CascadeStageTrainer(stage_two, template=stage_one, errors=errors,
                                                draws=1, keypoint_set=keypoint_set,
                                                augment_config=None)
    stage_trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
    stage_trainer.fit(batches(8), epochs=1, steps_per_epoch=200, verbose=0, shuffle=False)

    network = cascade.assemble_cascade(stage_one, [stage_two])
    first, second = _mean_error_px(network(held_out["image"].astype(np.float32)), held_out)
    # Measured on a 2-core CPU: 5.86 px -> 5.11 px (about 60 s for the whole test).
    assert second < 0.95 * first, (first, second)


@pytest.mark.parametrize("overrides, message", [
    (["cascade.stages=2"], "name = 'stacked_hourglass'"),
    (["cascade.stages=2", "model.name=deeppose", "model.options={num_stages = 3}"],
     "options set num_stages, which \\[cascade\\] stages sets"),
    (["cascade.stages=2", "model.name=deeppose", "model.options={crop_scale = 2.0}"],
     "options set crop_scale, which \\[cascade\\] sigma sets"),
    (["cascade.sigma=0"], "sigma must be > 0"),
    (["cascade.draws=0"], "draws must be >= 1"),
    (["cascade.error_records=-1"], "error_records must be >= 0"),
])
def test_cascade_section_is_validated(overrides, message):
    with pytest.raises(PipelineError, match=message):
        load_pipeline(None, overrides)


def test_cascade_pipeline_trains_a_one_stage_network_first():
    pipeline = load_pipeline(REPO / "pipelines" / "deeppose_cascade_coco.toml")
    assert pipeline.cascade.stages == 3
    assert model_options(pipeline) == {"backbone": "alexnet", "num_stages": 1,
                                       "crop_scale": pipeline.cascade.sigma}
