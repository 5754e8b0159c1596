"""Decoding heatmaps / coordinates and mapping back to crop and image (keras_pose.decode and
the codecs' decode and flip, keras_pose.codecs)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from keras_pose import augment, codecs, decode, targets
from keras_pose.keypoints import COCO17
from keras_pose.outputs import COORDINATES, HEATMAPS, OutputSpec

HEATMAP_SPEC = OutputSpec(HEATMAPS, 4, "mse", ("stack_1", "stack_2"))
COORD_SPEC = OutputSpec(COORDINATES, None, "coordinate_l2", ("stage_1",))


def codec_decode(output, spec, input_size, refine="quarter"):
    return codecs.codec_for(spec, input_size, refine=refine).decode(output)


def decode_to_image(output, spec, input_size, matrices, crop_box, crop_size, refine="quarter"):
    points, scores = codec_decode(output, spec, input_size, refine)
    return decode.crop_to_image(decode.input_to_crop(points, matrices), crop_box, crop_size), scores


def _render(heatmap_points, size=64, sigma=None):
    """Heatmaps for points given in heatmap coordinates (stride 1)."""
    points = np.asarray(heatmap_points, np.float32)
    return targets.render_heatmaps(points, np.ones(points.shape[:2]), size, size, sigma)


def test_quarter_pixel_round_trip_at_heatmap_scale():
    """The quarter step guarantees <= 0.25 heatmap px per axis, and is exact on its grid."""
    rng = np.random.default_rng(0)
    points = rng.uniform(2.0, 62.0, (4, 17, 2)).astype(np.float32)
    coords, scores = decode.decode_heatmaps(_render(points))
    error = np.abs(np.asarray(coords) - points)
    assert error.max() <= 0.25 + 1e-4
    assert error.mean() > 0.05  # sub-pixel positions really were tested, not only centres
    assert np.all(np.asarray(scores) > 0.6) and np.all(np.asarray(scores) <= 1.0)
    # Offsets 0 and +-0.25 from a pixel centre are recovered exactly.
    grid = (rng.integers(2, 62, (4, 17, 2)) + 0.5
            + rng.choice([-0.25, 0.0, 0.25], (4, 17, 2))).astype(np.float32)
    coords, _ = decode.decode_heatmaps(_render(grid))
    np.testing.assert_allclose(coords, grid, atol=1e-5)


def test_gaussian_refinement_recovers_any_sub_pixel_position():
    rng = np.random.default_rng(1)
    points = rng.uniform(2.0, 62.0, (2, 17, 2)).astype(np.float32)
    coords, _ = decode.decode_heatmaps(_render(points, sigma=1.5), refine="gaussian")
    np.testing.assert_allclose(coords, points, atol=0.01)
    coords, _ = decode.decode_heatmaps(_render(points), refine="none")
    assert np.abs(np.asarray(coords) - points).max() <= 0.5 + 1e-4
    # An all-zero heatmap (weight 0) decodes to the first pixel with score 0, no NaN.
    coords, scores = decode.decode_heatmaps(np.zeros((1, 8, 8, 1), np.float32), "gaussian")
    np.testing.assert_allclose(coords, [[[0.5, 0.5]]])
    assert float(scores[0, 0]) == 0.0
    with pytest.raises(ValueError, match="refine"):
        decode.decode_heatmaps(np.zeros((1, 8, 8, 1)), refine="dark")


def test_round_trip_image_crop_heatmap_decode_image():
    """Image px -> crop -> input -> heatmap -> decode -> input -> crop -> image px."""
    rng = np.random.default_rng(2)
    batch, crop_size, input_size = 3, 320, 256
    crop_box = np.array([[100.0, 50.0, 400.0, 400.0], [0.0, 0.0, 160.0, 160.0],
                         [-20.5, 33.25, 333.0, 333.0]], np.float32)
    # Heatmap positions a quarter pixel off a pixel centre, which the quarter step recovers
    # exactly (at a pixel centre itself the neighbours tie, and after a chain of float32 maps
    # rounding may tip the step either way: 0.25 heatmap px = 1.6 image px here) ...
    heat = (rng.integers(1, 63, (batch, 17, 2)) + 0.5
            + rng.choice([-0.25, 0.25], (batch, 17, 2))).astype(np.float32)
    matrices = augment.resize_matrices(crop_size, input_size, batch)
    crop_points = np.asarray(decode.input_to_crop(heat * 4.0, matrices))
    image_points = np.asarray(decode.crop_to_image(crop_points, crop_box, crop_size))
    np.testing.assert_allclose(decode.image_to_crop(image_points, crop_box, crop_size),
                               crop_points, atol=1e-3)
    # ... rendered from the image keypoints as the training step would.
    visibility = np.full((batch, 17), 2)
    plain = augment.augment_batch(np.zeros((batch, crop_size, crop_size, 3), np.uint8),
                                  decode.image_to_crop(image_points, crop_box, crop_size),
                                  visibility, input_size=input_size, config=None,
                                  flip_permutation=COCO17.flip_permutation, training=False)
    weights = targets.keypoint_weights(plain["keypoints"], visibility, input_size)
    heatmaps = targets.render_heatmaps(plain["keypoints"], weights, input_size, 64)
    back, scores = decode_to_image([heatmaps * 0.5, heatmaps], HEATMAP_SPEC, input_size,
                                          plain["matrices"], crop_box, crop_size)
    assert np.abs(np.asarray(back) - image_points).max() <= 0.5
    # Any position with the Gaussian refinement: also within 0.5 image px.
    anywhere = rng.uniform(4.0, 252.0, (batch, 17, 2)).astype(np.float32)
    heatmaps = targets.render_heatmaps(anywhere, np.ones((batch, 17)), input_size, 64)
    back, _ = decode_to_image(heatmaps, HEATMAP_SPEC, input_size, matrices, crop_box,
                                     crop_size, refine="gaussian")
    expected = decode.crop_to_image(decode.input_to_crop(anywhere, matrices), crop_box, crop_size)
    assert np.abs(np.asarray(back) - np.asarray(expected)).max() <= 0.5


def test_codec_decode_for_both_kinds():
    heat = np.array([[[10.5, 20.5], [30.75, 40.25]]], np.float32)
    heatmaps = _render(heat)
    coords, scores = codec_decode(heatmaps, OutputSpec(HEATMAPS, 4, "mse", ("s",)), 256)
    np.testing.assert_allclose(coords, heat * 4.0, atol=1e-4)
    np.testing.assert_allclose(scores[0, 0], 1.0, atol=1e-6)
    normalized = np.array([[[0.0, -0.25], [0.5, 0.1]]], np.float32)
    coords, scores = codec_decode([normalized * 0, normalized], COORD_SPEC, (128, 256))
    np.testing.assert_allclose(coords, [[[128.0, 32.0], [256.0, 76.8]]], atol=1e-4)
    np.testing.assert_array_equal(scores, np.ones((1, 2)))
    with pytest.raises(ValueError, match="do not match"):
        codec_decode(heatmaps, OutputSpec(HEATMAPS, 2, "mse", ("s",)), 256)


def test_softmax_logits_decode_to_peak_probabilities():
    """Spatial-softmax models output logits: scores are softmax probabilities at the peak, the
    positions are the logits' own, and a constant shift of the logits changes neither."""
    spec = OutputSpec(HEATMAPS, 8, "softmax_cross_entropy", ("heatmaps",))
    points = np.array([[[10.3, 20.6], [5.5, 25.2], [16.0, 16.0]]], np.float32)
    yy, xx = np.mgrid[0:32, 0:32] + 0.5
    # log of a Gaussian of sigma 1.5 (x) plus a flat floor, in logit units; map 3 is flat.
    logits = np.stack([-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5 ** 2) * scale
                       for (x, y), scale in zip(points[0], (1.0, 1.0, 0.0))], -1)[None]
    logits = logits.astype(np.float32) + 7.0
    coords, scores = codec_decode(logits, spec, 256, refine="gaussian")
    flat = logits[0].reshape(-1, 3).astype(np.float64)
    expected = (np.exp(flat - flat.max(0)) / np.exp(flat - flat.max(0)).sum(0)).max(0)
    np.testing.assert_allclose(scores[0], expected, rtol=1e-5)
    assert np.all(np.asarray(scores) <= 1.0) and float(scores[0, 0]) > 0.05
    np.testing.assert_allclose(scores[0, 2], 1 / 1024, rtol=1e-5)  # flat map: uniform
    np.testing.assert_allclose(np.asarray(coords)[0, :2], points[0, :2] * 8, atol=0.08)
    shifted, shifted_scores = codec_decode(logits - 30.0, spec, 256, refine="gaussian")
    np.testing.assert_allclose(shifted, coords, atol=1e-3)
    np.testing.assert_allclose(shifted_scores, scores, rtol=1e-4)
    # The same array read as MSE heatmaps keeps the raw peak values.
    _, raw = codec_decode(logits, OutputSpec(HEATMAPS, 8, "mse", ("s",)), 256)
    np.testing.assert_allclose(raw[0], flat.max(0), rtol=1e-6)


HEATMAP_CODEC = codecs.codec_for(HEATMAP_SPEC, 64)
COORD_CODEC = codecs.codec_for(COORD_SPEC, 64)


def test_flip_heatmaps_matches_image_flip():
    """Flipped heatmaps equal heatmaps rendered from the flipped (augmented) keypoints."""
    rng = np.random.default_rng(3)
    size, perm = 64, COCO17.flip_permutation
    keypoints = rng.uniform(0.0, size, (2, 17, 2)).astype(np.float32)
    visibility = np.full((2, 17), 2)
    flip_only = augment.AugmentConfig(rotation=0, scale=0, translation=0,
                                      flip_prob=1.0)
    flipped = augment.augment_batch(np.zeros((2, size, size, 3), np.uint8), keypoints,
                                    visibility, input_size=size, config=flip_only,
                                    flip_permutation=perm, seed=0, training=True)
    original = targets.render_heatmaps(keypoints, np.ones((2, 17)), size, 16)
    expected = targets.render_heatmaps(flipped["keypoints"], np.ones((2, 17)), size, 16)
    np.testing.assert_allclose(HEATMAP_CODEC.flip(original, perm), expected, atol=1e-5)
    np.testing.assert_allclose(HEATMAP_CODEC.flip(HEATMAP_CODEC.flip(original, perm), perm),
                               original, atol=0)
    normalized = targets.coordinate_targets(keypoints, size)
    np.testing.assert_allclose(COORD_CODEC.flip(normalized, perm),
                               targets.coordinate_targets(flipped["keypoints"], size), atol=1e-6)


def test_flip_test_with_an_ideal_model_returns_its_heatmaps():
    """A model that is right on both the image and its mirror gives back the same heatmaps."""
    rng = np.random.default_rng(4)
    size, perm = 64, COCO17.flip_permutation
    images = rng.integers(0, 256, (2, size, size, 3)).astype(np.float32)
    keypoints = rng.uniform(4.0, size - 4.0, (2, 17, 2)).astype(np.float32)
    mirrored = np.stack([size - keypoints[..., 0], keypoints[..., 1]], -1)[:, perm]
    truth = np.asarray(targets.render_heatmaps(keypoints, np.ones((2, 17)), size, 16))
    truth_mirrored = np.asarray(targets.render_heatmaps(mirrored, np.ones((2, 17)), size, 16))
    calls = []

    def ideal_model(batch):
        batch = np.asarray(batch)
        calls.append(len(batch))
        out = []
        for image in batch:
            i = [n for n in range(2) if np.array_equal(image, images[n])]
            j = [n for n in range(2) if np.array_equal(image, images[n, :, ::-1])]
            out.append(truth[i[0]] if i else truth_mirrored[j[0]])
        return [np.zeros_like(np.stack(out)), np.stack(out)]

    averaged = np.asarray(codecs.flip_test(HEATMAP_CODEC, ideal_model, images, perm))
    assert calls == [4]
    np.testing.assert_allclose(averaged, truth, atol=1e-5)
    coords, _ = codec_decode(averaged, HEATMAP_SPEC, size, refine="gaussian")
    np.testing.assert_allclose(coords, keypoints, atol=0.05)


def test_decoding_exports_to_saved_model(tmp_path):
    """A codec's decode traces into a SavedModel of stock TF ops and runs after reloading."""
    module = tf.Module()
    module.decode = tf.function(
        lambda hm: codec_decode(hm, HEATMAP_SPEC, 64),
        input_signature=[tf.TensorSpec([None, 16, 16, 17], tf.float32)],
    )
    tf.saved_model.save(module, str(tmp_path / "decode"))
    loaded = tf.saved_model.load(str(tmp_path / "decode"))
    heat = np.full((1, 17, 2), 8.5, np.float32)
    coords, scores = loaded.decode(tf.constant(_render(heat, size=16)))
    np.testing.assert_allclose(coords.numpy(), heat * 4.0, atol=1e-4)
    ops = {op.type for op in module.decode.get_concrete_function().graph.get_operations()}
    assert "ArgMax" in ops and not any(op.startswith("ImageProjective") for op in ops)
