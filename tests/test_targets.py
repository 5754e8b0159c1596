"""Heatmap / coordinate targets and keypoint weights (keras_pose.targets)."""

from __future__ import annotations

import numpy as np
import pytest

from keras_pose import augment, codecs, targets
from keras_pose.outputs import COORDINATES, HEATMAPS, OutputSpec


def test_heatmap_peak_and_values_by_hand():
    # Input 256, heatmap 64 (stride 4), sigma 1: input point (130, 66) -> heatmap (32.5, 16.5),
    # the centre of array pixel [row 16, col 32].
    keypoints = np.array([[[130.0, 66.0], [101.0, 41.0]]], np.float32)
    heatmaps = np.asarray(targets.render_heatmaps(keypoints, np.ones((1, 2)), 256, 64))
    assert heatmaps.shape == (1, 64, 64, 2)
    assert heatmaps[0, 16, 32, 0] == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(heatmaps[0, :, :, 0]), (64, 64)) == (16, 32)
    # One pixel right and one down: exp(-(1 + 1) / 2).
    assert heatmaps[0, 17, 33, 0] == pytest.approx(np.exp(-1.0), rel=1e-5)
    # Sub-pixel: (101, 41) -> heatmap (25.25, 10.25) -> index (24.75, 9.75).
    expected = np.exp(-((24 - 24.75) ** 2 + (10 - 9.75) ** 2) / 2)
    assert heatmaps[0, 10, 24, 1] == pytest.approx(expected, rel=1e-5)


def test_default_sigma_scales_with_heatmap_width():
    assert targets.default_sigma(64) == 1.0
    assert targets.default_sigma((32, 32)) == 0.5
    keypoints = np.array([[[64.5, 64.5]]], np.float32)  # heatmap 128: (64.5, 64.5), index 64
    heatmaps = np.asarray(targets.render_heatmaps(keypoints, np.ones((1, 1)), 128, 128))
    assert heatmaps[0, 64, 66, 0] == pytest.approx(np.exp(-4 / (2 * 2.0**2)), rel=1e-5)
    wide = np.asarray(targets.render_heatmaps(keypoints, np.ones((1, 1)), 128, 128, sigma=3.0))
    assert wide[0, 64, 67, 0] == pytest.approx(np.exp(-9 / 18), rel=1e-5)
    with pytest.raises(ValueError, match="sigma"):
        targets.render_heatmaps(keypoints, np.ones((1, 1)), 128, 128, sigma=0.0)


def test_non_square_sizes():
    # Input (h=128, w=96) -> heatmap (32, 24): stride 4 on both axes.
    keypoints = np.array([[[50.0, 102.0]]], np.float32)  # heatmap (12.5, 25.5)
    heatmaps = np.asarray(targets.render_heatmaps(keypoints, np.ones((1, 1)), (128, 96), (32, 24)))
    assert heatmaps.shape == (1, 32, 24, 1)
    assert np.unravel_index(np.argmax(heatmaps[0, :, :, 0]), (32, 24)) == (25, 12)
    coords = np.asarray(targets.coordinate_targets(keypoints, (128, 96)))
    np.testing.assert_allclose(coords, [[[50 / 96 - 0.5, 102 / 128 - 0.5]]], rtol=1e-6)


def test_weights_unlabeled_and_out_of_frame():
    keypoints = np.array([[[10.0, 10.0], [-0.1, 30.0], [63.9, 63.9], [64.0, 5.0],
                           [30.0, 30.0]]], np.float32)
    visibility = np.array([[2, 2, 1, 2, 0]])
    weights = np.asarray(targets.keypoint_weights(keypoints, visibility, 64))
    np.testing.assert_array_equal(weights, [[1, 0, 1, 0, 0]])
    heatmaps = np.asarray(targets.render_heatmaps(keypoints, weights, 64, 16, sigma=1.0))
    assert np.all(heatmaps[..., [1, 3, 4]] == 0.0)
    assert heatmaps[..., 0].max() > 0.5 and heatmaps[..., 2].max() > 0.5


def test_keypoint_pushed_out_by_augmentation_gets_zero_weight():
    # A keypoint near the crop corner leaves the frame when zoomed 1.3x about the centre.
    keypoints = np.array([[[3.0, 40.0], [40.0, 40.0]]], np.float32)
    matrices = augment.compose_matrices(np.zeros(1), np.array([1.3]), np.zeros((1, 2)),
                                        np.array([False]), crop_size=80, input_size=64)
    moved = np.asarray(augment.apply_affine(keypoints, matrices))
    assert moved[0, 0, 0] < 0.0 <= moved[0, 1, 0]
    weights = np.asarray(targets.keypoint_weights(moved, np.array([[2, 2]]), 64))
    np.testing.assert_array_equal(weights, [[0.0, 1.0]])
    heatmaps = np.asarray(targets.render_heatmaps(moved, weights, 64, 16, sigma=1.0))
    assert np.count_nonzero(heatmaps[..., 0]) == 0
    assert heatmaps[..., 1].max() > 0.5


def test_coordinate_targets_and_codec_encode():
    keypoints = np.array([[[128.0, 64.0], [0.0, 256.0]]], np.float32)
    coords = np.asarray(targets.coordinate_targets(keypoints, 256))
    np.testing.assert_allclose(coords, [[[0.0, -0.25], [-0.5, 0.5]]])
    np.testing.assert_allclose(targets.coordinates_to_input(coords, 256), keypoints)
    visibility = np.array([[2, 2]])
    codec = codecs.codec_for(OutputSpec(COORDINATES, None, "coordinate_l2", ("stage_1",)), 256)
    coordinates, weights = codec.encode(keypoints, visibility)
    np.testing.assert_allclose(coordinates, coords)
    np.testing.assert_array_equal(weights, [[1.0, 0.0]])  # y = 256 is outside
    codec = codecs.codec_for(OutputSpec(HEATMAPS, 4, "mse", ("stack_1",)), 256, sigma=2.0)
    heatmaps, _ = codec.encode(keypoints, visibility)
    assert tuple(heatmaps.shape) == (1, 64, 64, 2)
    with pytest.raises(ValueError, match="stride"):
        codecs.codec_for(OutputSpec(HEATMAPS, 4, "mse", ("s",)), 250)
