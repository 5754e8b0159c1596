"""Batch augmentation: geometry, samplers, randomness, flips (keras_pose.augment)."""

from __future__ import annotations

import math
import statistics

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_pose import augment
from keras_pose.augment import AugmentConfig, augment_batch
from keras_pose.keypoints import COCO17

# Three keypoints, 1 and 2 a left/right pair: enough to see a swap.
PERM3 = np.array([0, 2, 1])


def _ramp_images(batch, size):
    """Images whose red channel equals the column index and green the row index."""
    cols = np.broadcast_to(np.arange(size, dtype=np.float32)[None, :], (size, size))
    image = np.stack([cols, cols.T, np.zeros_like(cols)], axis=-1)
    return np.repeat(image[None], batch, axis=0)


def _dot_images(keypoints, size, sigma=2.0):
    """One Gaussian dot per keypoint, keypoint k in channel k (values 0-255, uint8)."""
    batch, num = keypoints.shape[:2]
    centres = np.arange(size, dtype=np.float32) + 0.5
    images = np.zeros((batch, size, size, 3), np.float32)
    for b in range(batch):
        for k in range(num):
            gx = np.exp(-((centres - keypoints[b, k, 0]) ** 2) / (2 * sigma**2))
            gy = np.exp(-((centres - keypoints[b, k, 1]) ** 2) / (2 * sigma**2))
            images[b, :, :, k] = 255.0 * gy[:, None] * gx[None, :]
    return np.round(images).astype(np.uint8)


def test_config_defaults_and_validation():
    config = AugmentConfig()
    assert (config.rotation, config.scale, config.translation) == (40.0, 0.3, 0.02)
    assert config.flip_prob == 0.5 and not config.photometric
    with pytest.raises(ValueError, match="rotation"):
        AugmentConfig(rotation=-5)
    with pytest.raises(ValueError, match="scale"):
        AugmentConfig(scale=1.0)
    with pytest.raises(ValueError, match="flip_prob"):
        AugmentConfig(flip_prob=1.5)
    with pytest.raises(ValueError, match="brightness"):
        AugmentConfig(brightness="0.2")
    with pytest.raises(ValueError, match="rotaton"):
        AugmentConfig.from_dict({"rotaton": 10})
    assert AugmentConfig.from_dict({"scale": 0.25}).scale == 0.25
    assert AugmentConfig.from_dict(config.to_dict()) == config


def test_new_options_validate_and_default_to_the_old_behaviour():
    config = AugmentConfig()
    assert (config.distribution, config.scale_mode, config.channel_scale) == (
        "uniform", "linear", 0.0)
    with pytest.raises(ValueError, match=r"distribution must be one of \['uniform', "):
        AugmentConfig(distribution="gaussian")
    with pytest.raises(ValueError, match="scale_mode"):
        AugmentConfig(scale_mode="log")
    with pytest.raises(ValueError, match="channel_scale"):
        AugmentConfig(channel_scale=1.5)
    # A clipped normal reaches twice its range: rotation <= 90 degrees, linear scale < 0.5.
    with pytest.raises(ValueError, match=r"rotation must be in \[0.0, 90.0\] \(clipped"):
        AugmentConfig(distribution="clipped_normal", rotation=100.0)
    with pytest.raises(ValueError, match=r"scale must be in \[0.0, 0.5\)"):
        AugmentConfig(distribution="clipped_normal", scale=0.5)
    assert AugmentConfig(distribution="clipped_normal", scale=0.6, scale_mode="log2").scale == 0.6
    reference = AugmentConfig(distribution="clipped_normal", rotation=30.0, scale=0.25,
                              scale_mode="log2", translation=0.0, channel_scale=0.4)
    assert AugmentConfig.from_dict(reference.to_dict()) == reference


def test_default_draws_are_unchanged():
    """The default configuration maps the same uniform draw through the same formulas as before
    the distribution options existed: runs and tests seeded before draw the same numbers."""
    batch, seed = 64, 11
    params = augment.sample_parameters(batch, AugmentConfig(), (256, 192), seed)
    u = np.asarray(keras.random.uniform((batch, 9), seed=seed))
    angle, rotate, scale, tx, ty, flip = (u[:, i] for i in range(6))
    np.testing.assert_array_equal(
        params["angles"], (2 * angle - 1) * np.float32(math.radians(40.0)) * (rotate < 0.4))
    np.testing.assert_array_equal(params["scales"], 1 + (2 * scale - 1) * np.float32(0.3))
    np.testing.assert_allclose(params["translations"],
                               np.stack([(2 * tx - 1) * 0.02 * 192, (2 * ty - 1) * 0.02 * 256], -1),
                               rtol=1e-6)
    np.testing.assert_array_equal(params["flips"], flip < 0.5)
    np.testing.assert_array_equal(params["channel_scales"], np.ones((batch, 3)))


def _draw(config, batch=40_000, seed=5, size=256):
    return {k: np.asarray(v, np.float64)
            for k, v in augment.sample_parameters(batch, config, size, seed).items()}


def _clipped_normal_quantile(p, sigma):
    """Quantile of clip(N(0, sigma^2), -2 sigma, 2 sigma) (the hourglass code's rnd)."""
    z = statistics.NormalDist().inv_cdf(p)
    return float(np.clip(z, -2.0, 2.0)) * sigma


def test_uniform_draws_fraction_rotated_and_ranges():
    p = _draw(AugmentConfig(rotation=40.0, rotation_prob=0.4, scale=0.3, translation=0.02))
    degrees = np.degrees(p["angles"])
    rotated = degrees != 0
    assert abs(rotated.mean() - 0.4) < 0.015
    assert np.abs(degrees).max() <= 40.0 + 1e-4
    # Uniform: the rotated angles' quantiles are linear in p and hit the ends.
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert abs(np.quantile(degrees[rotated], q) - (-40 + 80 * q)) < 1.5, q
    assert np.abs(degrees).max() > 39.9
    assert p["scales"].min() >= 0.7 - 1e-6 and p["scales"].max() <= 1.3 + 1e-6
    assert abs(np.quantile(p["scales"], 0.25) - 0.85) < 0.01
    assert np.abs(p["translations"]).max() <= 0.02 * 256 + 1e-4
    assert abs(p["flips"].mean() - 0.5) < 0.015
    # log2 mode: the zoom's base-2 logarithm is uniform in [-scale, scale].
    log_zoom = np.log2(_draw(AugmentConfig(scale=0.25, scale_mode="log2"))["scales"])
    assert log_zoom.min() >= -0.25 - 1e-6 and log_zoom.max() <= 0.25 + 1e-6
    assert abs(np.quantile(log_zoom, 0.75) - 0.125) < 0.005


def test_clipped_normal_draws_match_the_hourglass_code():
    """pose-hg-train: r = rnd(30), zeroed with probability 0.6; s = s * 2 ^ rnd(0.25), where
    rnd(x) = max(-2x, min(2x, randn() * x))."""
    config = AugmentConfig(distribution="clipped_normal", rotation=30.0, rotation_prob=0.4,
                           scale=0.25, scale_mode="log2", translation=0.05, flip_prob=0.5)
    p = _draw(config)
    degrees = np.degrees(p["angles"])
    rotated = degrees != 0
    assert abs(rotated.mean() - 0.4) < 0.015
    angles = degrees[rotated]
    assert np.abs(angles).max() <= 60.0 + 1e-3
    # 2 (1 - Phi(2)) = 4.55 % of the draws sit on a clip bound.
    assert abs((np.abs(angles) > 60.0 - 1e-3).mean() - 0.0455) < 0.01
    for q in (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95):
        assert abs(np.quantile(angles, q) - _clipped_normal_quantile(q, 30.0)) < 1.5, q
    # Standard deviation of N(0, 1) clipped at +-2: 0.9595.
    assert abs(angles.std() / 30.0 - 0.9595) < 0.02
    log_zoom = np.log2(p["scales"])
    assert log_zoom.min() >= -0.5 - 1e-5 and log_zoom.max() <= 0.5 + 1e-5
    assert abs((np.abs(log_zoom) > 0.5 - 1e-5).mean() - 0.0455) < 0.006
    for q in (0.1, 0.5, 0.9):
        assert abs(np.quantile(log_zoom, q) - _clipped_normal_quantile(q, 0.25)) < 0.01, q
    shifts = p["translations"] / (0.05 * 256)
    assert np.abs(shifts).max() <= 2.0 + 1e-5
    assert abs(shifts.std() - 0.9595) < 0.02
    assert abs(p["flips"].mean() - 0.5) < 0.015
    # Linear mode: the zoom is 1 + rnd(scale), within [1 - 2 scale, 1 + 2 scale].
    linear = _draw(AugmentConfig(distribution="clipped_normal", scale=0.2))["scales"]
    assert linear.min() >= 0.6 - 1e-6 and linear.max() <= 1.4 + 1e-6
    assert abs(np.quantile(linear, 0.9) - 1 - _clipped_normal_quantile(0.9, 0.2)) < 0.01


def test_clipped_normal_draws_compile_with_xla():
    config = AugmentConfig(distribution="clipped_normal", rotation=30.0, rotation_prob=1.0,
                           scale=0.25, scale_mode="log2", channel_scale=0.4)
    generator = keras.random.SeedGenerator(3)

    @tf.function(jit_compile=True)
    def draw():
        return augment.sample_parameters(256, config, 64, generator)

    first, second = draw(), draw()
    angles = np.degrees(np.asarray(first["angles"]))
    assert np.all(np.isfinite(angles)) and np.abs(angles).max() <= 60.0 + 1e-3
    assert not np.array_equal(first["angles"], second["angles"])  # fresh draws per call


def test_channel_scale_multiplies_each_colour_channel():
    config = AugmentConfig(rotation_prob=0.0, scale=0.0, translation=0.0, flip_prob=0.0,
                           channel_scale=0.4)
    scales = _draw(config, batch=20_000)["channel_scales"]
    assert scales.min() >= 0.6 - 1e-6 and scales.max() <= 1.4 + 1e-6
    assert abs(np.quantile(scales, 0.25) - 0.8) < 0.01
    # Independent per channel, and not a copy of another column of the main draw.
    assert abs(np.corrcoef(scales[:, 0], scales[:, 1])[0, 1]) < 0.03
    u = np.asarray(keras.random.uniform((20_000, 9), seed=5))
    assert abs(np.corrcoef(scales[:, 0], u[:, 0])[0, 1]) < 0.03
    # On a flat grey crop every output pixel of channel c is clip(128 * factor_c, 0, 255).
    images = np.full((8, 32, 32, 3), 128, np.uint8)
    out = augment_batch(images, np.full((8, 3, 2), 16.0, np.float32), np.ones((8, 3)),
                        input_size=32, config=config, flip_permutation=PERM3, seed=9,
                        training=True)
    factors = np.asarray(augment.sample_parameters(8, config, 32, 9)["channel_scales"])
    np.testing.assert_allclose(np.asarray(out["images"])[:, 16, 16, :],
                               np.clip(128.0 * factors, 0, 255), rtol=1e-5)
    assert np.ptp(factors, axis=1).min() > 0  # channels differ
    bright = augment.photometric_jitter(np.full((1, 2, 2, 3), 200.0, np.float32), np.zeros(1),
                                        np.ones(1), np.ones(1), np.array([[1.4, 1.0, 0.5]]))
    np.testing.assert_allclose(np.asarray(bright)[0, 0, 0], [255.0, 200.0, 100.0], rtol=1e-6)


def test_resize_without_augmentation_follows_pixel_centres():
    # 80 -> 64: output pixel centre j + 0.5 reads source coordinate (j + 0.5) * 1.25, i.e.
    # array index (j + 0.5) * 1.25 - 0.5; on a ramp bilinear sampling returns that index.
    images = _ramp_images(2, 80)
    keypoints = np.array([[[40.0, 20.0], [0.0, 80.0]]] * 2, np.float32)
    out = augment_batch(images, keypoints, np.ones((2, 2), np.int32), input_size=64,
                        config=None, flip_permutation=[0, 1], training=False)
    warped = np.asarray(out["images"])
    expected = (np.arange(64) + 0.5) * 1.25 - 0.5
    np.testing.assert_allclose(warped[0, 10, 1:-1, 0], expected[1:-1], atol=1e-3)
    np.testing.assert_allclose(warped[1, 1:-1, 7, 1], expected[1:-1], atol=1e-3)
    np.testing.assert_allclose(np.asarray(out["keypoints"])[0], [[32.0, 16.0], [0.0, 64.0]])
    np.testing.assert_allclose(np.asarray(out["matrices"])[0], np.diag([0.8, 0.8, 1.0]))


def test_compose_matrices_by_hand():
    # Crop 64 == input 64, centre (32, 32). A 90-degree turn sends (42, 32) to (32, 42)
    # (clockwise on screen, y down); zoom 2 doubles the offset; the flip mirrors x -> 64 - x.
    m = augment.compose_matrices(
        np.array([math.pi / 2, 0.0, 0.0]), np.array([1.0, 2.0, 1.0]),
        np.array([[0.0, 0.0], [3.0, -1.0], [0.0, 0.0]]), np.array([False, False, True]),
        crop_size=64, input_size=64,
    )
    points = np.array([[[42.0, 32.0]], [[42.0, 32.0]], [[10.5, 5.0]]], np.float32)
    moved = np.asarray(augment.apply_affine(points, m))
    np.testing.assert_allclose(moved[:, 0], [[32.0, 42.0], [55.0, 31.0], [53.5, 5.0]], atol=1e-5)
    back = np.asarray(augment.apply_affine(moved, augment.invert_affine(m)))
    np.testing.assert_allclose(back, points, atol=1e-4)


def test_augmented_dots_land_on_transformed_keypoints():
    """Image and keypoints move together: each dot's peak is at its transformed keypoint."""
    rng = np.random.default_rng(7)
    crop, size = 96, 64
    config = AugmentConfig(rotation_prob=1.0)
    batch = 16
    checked, flips, angles = 0, [], []
    for seed in range(3):
        keypoints = rng.uniform(34.0, 62.0, (batch, 3, 2)).astype(np.float32)
        out = augment_batch(_dot_images(keypoints, crop), keypoints,
                            np.full((batch, 3), 2, np.int32), input_size=size, config=config,
                            flip_permutation=PERM3, seed=seed, training=True)
        images = np.asarray(out["images"])
        moved = np.asarray(out["keypoints"])
        flipped = np.asarray(out["flipped"])
        matrices = np.asarray(out["matrices"])
        flips += flipped.tolist()
        angles += np.degrees(np.arctan2(matrices[:, 1, 0], matrices[:, 1, 1])).tolist()
        np.testing.assert_array_equal(np.linalg.det(matrices[:, :2, :2]) < 0, flipped)
        for b in range(batch):
            for k in range(3):
                channel = PERM3[k] if flipped[b] else k  # output keypoint k came from here
                row, col = np.unravel_index(np.argmax(images[b, :, :, channel]), (size, size))
                peak = np.array([col + 0.5, row + 0.5])
                assert np.linalg.norm(peak - moved[b, k]) <= 1.0, (seed, b, k, peak, moved[b, k])
                checked += 1
    assert checked == 144
    # The draws really varied: both flip outcomes, rotations well away from 0.
    assert any(flips) and not all(flips)
    assert max(abs(a) for a in angles) > 20.0


def test_flip_twice_is_identity_and_swaps_left_right():
    rng = np.random.default_rng(1)
    size = 32
    images = rng.integers(0, 256, (2, size, size, 3)).astype(np.uint8)
    keypoints = rng.uniform(0, size, (2, 17, 2)).astype(np.float32)
    visibility = rng.integers(0, 3, (2, 17)).astype(np.int32)
    flip_only = AugmentConfig(rotation=0, scale=0, translation=0, flip_prob=1.0)
    perm = COCO17.flip_permutation
    once = augment_batch(images, keypoints, visibility, input_size=size, config=flip_only,
                         flip_permutation=perm, seed=0, training=True)
    np.testing.assert_allclose(np.asarray(once["images"]), images[:, :, ::-1], atol=1e-3)
    mirrored = np.stack([size - keypoints[..., 0], keypoints[..., 1]], axis=-1)
    np.testing.assert_allclose(np.asarray(once["keypoints"]), mirrored[:, perm], atol=1e-4)
    np.testing.assert_array_equal(np.asarray(once["visibility"]), visibility[:, perm])
    twice = augment_batch(once["images"], once["keypoints"], once["visibility"],
                          input_size=size, config=flip_only, flip_permutation=perm, seed=1,
                          training=True)
    np.testing.assert_allclose(np.asarray(twice["images"]), images, atol=1e-3)
    np.testing.assert_allclose(np.asarray(twice["keypoints"]), keypoints, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(twice["visibility"]), visibility)


def _random_matrices(batch, crop, size, seed=3):
    params = augment.sample_parameters(batch, AugmentConfig(rotation_prob=1.0),
                                       size, seed)
    return augment.compose_matrices(params["angles"], params["scales"],
                                    params["translations"], params["flips"],
                                    crop_size=crop, input_size=size)


def test_gather_and_affine_transform_samplers_agree():
    rng = np.random.default_rng(2)
    crop, size = 80, 64
    images = rng.integers(0, 256, (4, crop, crop, 3)).astype(np.uint8)
    matrices = _random_matrices(4, crop, size)
    gather = np.asarray(augment.warp_images(images, matrices, size, "gather"))
    affine = np.asarray(augment.warp_images(images, matrices, size, "affine_transform"))
    # Away from the crop border: output pixels whose source point is 1 px inside the crop.
    centres = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5), -1)
    source = np.asarray(augment.apply_affine(
        np.broadcast_to(centres.reshape(1, -1, 2), (4, size * size, 2)),
        augment.invert_affine(matrices)))
    inner = np.all((source >= 1.5) & (source <= crop - 1.5), axis=-1).reshape(4, size, size)
    assert inner.mean() > 0.3
    assert np.abs(gather - affine)[inner].max() <= 1.0
    # Both read 0 outside the crop, so they agree closely everywhere.
    assert np.abs(gather - affine).mean() < 0.05


def test_gather_sampler_compiles_with_xla_and_matches_eager():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (3, 48, 48, 3)).astype(np.uint8)
    matrices = _random_matrices(3, 48, 40)
    eager = np.asarray(augment.warp_images(images, matrices, 40))
    compiled = tf.function(lambda i, m: augment.warp_images(i, m, 40), jit_compile=True)
    np.testing.assert_allclose(compiled(images, matrices).numpy(), eager, atol=1e-2)


def test_batch_equals_samples_one_by_one():
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (3, 48, 48, 3)).astype(np.uint8)
    keypoints = rng.uniform(0, 48, (3, 5, 2)).astype(np.float32)
    matrices = np.asarray(_random_matrices(3, 48, 32))
    batch = np.asarray(augment.warp_images(images, matrices, 32))
    points = np.asarray(augment.apply_affine(keypoints, matrices))
    for i in range(3):
        single = np.asarray(augment.warp_images(images[i:i + 1], matrices[i:i + 1], 32))
        np.testing.assert_allclose(batch[i:i + 1], single, atol=1e-4)
        np.testing.assert_allclose(
            points[i:i + 1], augment.apply_affine(keypoints[i:i + 1], matrices[i:i + 1]),
            atol=1e-5)
    plain = augment_batch(images, keypoints, np.ones((3, 5), np.int32), input_size=32,
                          config=None, flip_permutation=np.arange(5), training=False)
    single = augment_batch(images[1:2], keypoints[1:2], np.ones((1, 5), np.int32),
                           input_size=32, config=None, flip_permutation=np.arange(5),
                           training=False)
    np.testing.assert_allclose(np.asarray(plain["images"])[1:2], single["images"], atol=1e-4)


def test_seed_generator_reproducible_in_compiled_steps():
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, (4, 40, 40, 3)).astype(np.uint8)
    keypoints = rng.uniform(0, 40, (4, 17, 2)).astype(np.float32)
    visibility = np.full((4, 17), 2, np.int32)

    def make_step(jit):
        # Two generators with the same seed in one compiled step: they must draw alike.
        generators = [keras.random.SeedGenerator(123), keras.random.SeedGenerator(123)]

        @tf.function(jit_compile=jit)
        def step(i, k, v):
            return [augment_batch(i, k, v, input_size=32, config=AugmentConfig(),
                                  flip_permutation=COCO17.flip_permutation, seed=generator,
                                  training=True)["matrices"] for generator in generators]

        return step

    for jit in (True, False):
        step = make_step(jit)
        first, twin = (m.numpy() for m in step(images, keypoints, visibility))
        second, _ = (m.numpy() for m in step(images, keypoints, visibility))
        np.testing.assert_array_equal(first, twin)  # same seed, same draws
        assert not np.allclose(first, second)  # the generator advances between steps
    # XLA and plain TF draw different numbers from the same seed (TF's stateless RNG selects
    # another algorithm under XLA), so reproducibility holds within one compile mode.
    # An int seed is stateless: the same draw on every call.
    a = augment_batch(images, keypoints, visibility, input_size=32, config=AugmentConfig(),
                      flip_permutation=COCO17.flip_permutation, seed=9, training=True)
    b = augment_batch(images, keypoints, visibility, input_size=32, config=AugmentConfig(),
                      flip_permutation=COCO17.flip_permutation, seed=9, training=True)
    np.testing.assert_array_equal(np.asarray(a["matrices"]), np.asarray(b["matrices"]))
    with pytest.raises(ValueError, match="seed"):
        augment_batch(images, keypoints, visibility, input_size=32, config=AugmentConfig(),
                      flip_permutation=COCO17.flip_permutation, training=True)


def test_photometric_jitter():
    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    keypoints = np.full((4, 3, 2), 16.0, np.float32)
    kwargs = dict(input_size=32, flip_permutation=PERM3, seed=4, training=True)
    geometric = AugmentConfig(rotation_prob=0.0, scale=0, translation=0)
    jittered = AugmentConfig(rotation_prob=0.0, scale=0, translation=0,
                             brightness=0.2, contrast=0.3, saturation=0.3)
    plain = np.asarray(augment_batch(images, keypoints, np.ones((4, 3)), config=geometric,
                                     **kwargs)["images"])
    out = augment_batch(images, keypoints, np.ones((4, 3)), config=jittered, **kwargs)
    pixels = np.asarray(out["images"])
    assert pixels.min() >= 0.0 and pixels.max() <= 255.0
    assert np.abs(pixels - plain).mean() > 1.0
    # Photometric jitter never moves keypoints.
    np.testing.assert_allclose(out["keypoints"], augment_batch(
        images, keypoints, np.ones((4, 3)), config=geometric, **kwargs)["keypoints"])
    # Saturation leaves grey pixels grey; with zero range the jitter is the identity.
    grey = np.full((1, 8, 8, 3), 100.0, np.float32)
    same = augment.photometric_jitter(grey, np.zeros(1), np.ones(1), np.array([1.7]))
    np.testing.assert_allclose(same, grey, atol=1e-4)


def test_bad_inputs_raise_clear_errors():
    images = np.zeros((1, 16, 16, 3), np.uint8)
    keypoints = np.zeros((1, 3, 2), np.float32)
    with pytest.raises(ValueError, match="sampler"):
        augment.warp_images(images, augment.resize_matrices(16, 8, 1), 8, sampler="cubic")
    with pytest.raises(ValueError, match="flip_permutation"):
        augment_batch(images, keypoints, np.ones((1, 3)), input_size=8, config=None,
                      flip_permutation=[0, 1], training=False)
    with pytest.raises(ValueError, match="input_size"):
        augment_batch(images, keypoints, np.ones((1, 3)), input_size=(0, 8), config=None,
                      flip_permutation=PERM3, training=False)
