"""Drawing helpers (keras_pose.visualize) and tools/show_batch.py on tiny records."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from keras_pose import visualize
from keras_pose.cli import show_batch_main
from keras_pose.keypoints import COCO17


def test_draw_skeleton_colours_sides_at_the_right_pixels():
    canvas = np.zeros((64, 64, 3), np.uint8)
    points = np.zeros((17, 2))
    visibility = np.zeros(17)
    # Left wrist-elbow limb on the left of the picture, right on the right (indices 7/9, 8/10).
    points[[7, 9]] = [[10.5, 10.5], [10.5, 40.5]]
    points[[8, 10]] = [[50.5, 10.5], [50.5, 40.5]]
    visibility[[7, 8, 9, 10]] = 2
    drawn = visualize.draw_skeleton(canvas, points, visibility, COCO17, radius=2, thickness=3)
    assert canvas.max() == 0  # the input is not modified
    np.testing.assert_array_equal(drawn[25, 10], visualize.LEFT_COLOR)  # limb pixel (10, 25)
    np.testing.assert_array_equal(drawn[25, 50], visualize.RIGHT_COLOR)
    assert drawn[:, 20:40].max() == 0  # nothing drawn between the limbs
    # Hidden keypoints (value <= threshold) are not drawn, nor their limbs.
    hidden = visualize.draw_skeleton(canvas, points, visibility * [k != 9 for k in range(17)],
                                     COCO17, radius=2, thickness=3)
    assert hidden[25, 10].max() == 0 and hidden[25, 50].max() > 0
    green = visualize.draw_skeleton(canvas, points, visibility, COCO17, color=(0, 255, 0),
                                    radius=2, thickness=3)
    np.testing.assert_array_equal(green[25, 10], [0, 255, 0])
    with pytest.raises(ValueError, match="17 keypoints"):
        visualize.draw_skeleton(canvas, points[:5], visibility[:5], COCO17)


def test_overlay_heatmaps_puts_colour_where_the_heat_is():
    image = np.full((32, 32, 3), 128, np.uint8)
    heatmaps = np.zeros((8, 8, 2), np.float32)
    heatmaps[2, 6, 0] = 1.0  # heatmap pixel (row 2, col 6) covers image rows 8-11, cols 24-27
    out = visualize.overlay_heatmaps(image, heatmaps)
    changed = np.abs(out.astype(int) - 128).sum(-1)
    row, col = np.unravel_index(np.argmax(changed), changed.shape)
    assert 8 <= row <= 11 and 24 <= col <= 27
    assert changed[28, 2] == 0
    with pytest.raises(ValueError, match="reduce"):
        visualize.overlay_heatmaps(image, heatmaps, reduce="mean")


def test_image_grid_and_png(tmp_path):
    tiles = [np.full((10, 12, 3), v, np.uint8) for v in (10, 20, 30)]
    grid = visualize.image_grid(tiles, columns=2, pad=2)
    assert grid.shape == (2 * 12 + 2, 2 * 14 + 2, 3)
    assert grid[2, 2, 0] == 10 and grid[2, 16, 0] == 20 and grid[14, 2, 0] == 30
    path = tmp_path / "grid.png"
    visualize.write_png(str(path), grid)
    read = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(read, grid)
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def _write_records(directory, count=3, crop_size=96):
    import tensorflow as tf

    from keras_pose.data import tfrecord

    rng = np.random.default_rng(0)
    path = directory / "train-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(count):
            image = rng.integers(0, 256, (crop_size, crop_size, 3), dtype=np.uint8)
            keypoints = rng.uniform(20, crop_size - 20, (17, 2)).astype(np.float32)
            ok, jpeg = cv2.imencode(".jpg", image)
            assert ok
            writer.write(tfrecord.serialize_person(tfrecord.PersonRecord(
                image_jpeg=jpeg.tobytes(), crop_size=crop_size, image_id=i, filename=f"{i}.jpg",
                image_height=200, image_width=200,
                crop_box=np.array([10, 10, 2 * crop_size, 2 * crop_size], np.float32),
                keypoints_crop=keypoints, keypoints_image=10 + 2 * keypoints,
                visibility=np.full(17, 2), bbox=np.array([20, 20, 100, 100], np.float32),
                area=5000.0, annotation_id=100 + i)))
    return path


def test_show_batch_writes_a_grid(tmp_path):
    _write_records(tmp_path)
    output = tmp_path / "out" / "grid.png"
    status = show_batch_main(["--records", str(tmp_path / "train-*.tfrecord"), "--output",
                              str(output), "--input-size", "64", "--heatmap-size", "16",
                              "--batch", "3", "--columns", "3", "--keypoint-set", "coco17"])
    assert status == 0
    grid = cv2.imread(str(output))
    # 3 samples x 3 tiles of 64 px in one row, 4 px padding.
    assert grid.shape == (64 + 8, 9 * 68 + 4, 3)
    missing = show_batch_main(["--records", str(tmp_path / "none-*.tfrecord"), "--output",
                               str(tmp_path / "x.png")])
    assert missing == 1 and not (tmp_path / "x.png").exists()
