"""Synthetic figures: COCO validity, keypoints on the figure, visibility, sides, determinism."""

from __future__ import annotations

import json
import pathlib
import time

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from keras_pose.cli import make_synthetic_main
from keras_pose.data import synthetic
from keras_pose.keypoints import COCO17

SIZE = 160  # smaller than the default 256 to keep the tests fast; geometry is size-relative
CONFIG = synthetic.SyntheticConfig(image_size=(SIZE, SIZE))
LIMB_SIDES = {COCO17.index(f"{side}_{joint}"): side
              for side in ("left", "right") for joint in ("elbow", "wrist", "knee", "ankle")}


def _pixel(image, x, y):
    """The image value of the pixel holding continuous point (x, y)."""
    return image[int(np.floor(y)), int(np.floor(x))]


@pytest.fixture(scope="module")
def black_samples():
    """Samples drawn on a black background (every figure colour has value >= 0.35)."""
    background = np.zeros((SIZE, SIZE, 3), np.uint8)
    config = synthetic.SyntheticConfig(image_size=(SIZE, SIZE), occluder_prob=0.6,
                                       cut_prob=0.3, multi_figure_prob=0.4)
    return [synthetic.render_sample([7, 0, i], config, background=background)
            for i in range(150)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return synthetic.make_synthetic_dataset(root / "a", 12, seed=3, image_size=SIZE,
                                            progress=False)


def test_dataset_loads_in_pycocotools(dataset):
    coco = COCO(str(dataset))
    images = coco.loadImgs(coco.getImgIds())
    assert len(images) == 12
    ann_ids = coco.getAnnIds(catIds=coco.getCatIds(catNms=["person"]), iscrowd=False)
    assert len(ann_ids) == len(coco.dataset["annotations"]) >= 12
    category = coco.loadCats(1)[0]
    assert category["keypoints"] == list(COCO17.names)
    assert category["skeleton"] == [[a + 1, b + 1] for a, b in COCO17.skeleton]
    for image in images:
        pixels = cv2.imread(str(dataset.parent / "images" / image["file_name"]))
        assert pixels.shape == (image["height"], image["width"], 3) == (SIZE, SIZE, 3)
    for ann in coco.loadAnns(ann_ids):
        keypoints = np.array(ann["keypoints"], np.float64).reshape(17, 3)
        labeled = keypoints[:, 2] > 0
        assert ann["num_keypoints"] == labeled.sum()
        assert ann["iscrowd"] == 0 and ann["category_id"] == 1
        np.testing.assert_array_equal(keypoints[~labeled], 0)
        # The file holds COCO pixel indices; +0.5 gives the continuous (drawn) position.
        # Every labeled keypoint lies in the image and in the (pixel-edge) box.
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= SIZE and y + h <= SIZE
        kx, ky = keypoints[labeled, 0] + 0.5, keypoints[labeled, 1] + 0.5
        assert np.all((kx >= x) & (kx <= x + w) & (ky >= y) & (ky <= y + h))
        # Indices sit on cv2's 1/16 px drawing grid exactly.
        np.testing.assert_array_equal((keypoints[labeled, :2] * 16) % 1, 0)
        # area = the segmentation's pixel count; annToMask works on the RLE.
        assert ann["area"] == coco.annToMask(ann).sum() == mask_utils.area(ann["segmentation"])
        assert ann["area"] <= w * h


def test_visible_keypoints_lie_on_their_figure(black_samples):
    checked = 0
    for sample in black_samples:
        for person in sample.people:
            for x, y, _ in person.keypoints[person.keypoints[:, 2] == 2]:
                assert _pixel(sample.image, x, y).max() > 40, (x, y)
                assert _pixel(person.visible_mask, x, y)
                checked += 1
    assert checked > 150 * 12


def test_occluded_keypoints_are_covered(black_samples):
    occluded = 0
    for sample in black_samples:
        for person in sample.people:
            for x, y, _ in person.keypoints[person.keypoints[:, 2] == 1]:
                # Something is drawn there, but not this figure: an occluder or another figure.
                assert _pixel(sample.image, x, y).max() > 40, (x, y)
                assert not _pixel(person.visible_mask, x, y)
                occluded += 1
    assert occluded > 20


def test_keypoints_outside_the_image_are_unlabeled(black_samples):
    outside = 0
    for sample in black_samples:
        for person in sample.people:
            full = person.keypoints_full
            out = np.any((full < 0) | (full >= SIZE), axis=1)
            np.testing.assert_array_equal(person.keypoints[out], 0)
            expected = ~out
            if person.facing == "back":  # faces turned away are not labeled, as in COCO
                expected[[COCO17.index(n) for n in ("nose", "left_eye", "right_eye")]] = False
            np.testing.assert_array_equal(person.keypoints[:, 2] > 0, expected)
            np.testing.assert_array_equal(person.keypoints[expected, :2], full[expected])
            outside += out.sum()
    assert outside > 20


def test_sides_are_colour_coded(black_samples):
    # Visible left-limb joints are warm (red > blue), right-limb joints cool (blue > red).
    # Crossing limbs can put the other side's colour on top of a joint: allow a few.
    agree = {"left": [], "right": []}
    for sample in black_samples:
        for person in sample.people:
            for k, side in LIMB_SIDES.items():
                x, y, v = person.keypoints[k]
                if v == 2:
                    b, _, r = _pixel(sample.image, x, y).astype(int)
                    agree[side].append(r > b if side == "left" else b > r)
    for side, values in agree.items():
        assert len(values) > 300 and np.mean(values) > 0.9, (side, np.mean(values))


def test_head_keypoints_on_the_head_above_the_shoulders(black_samples):
    for sample in black_samples:
        for person in sample.people:
            p = person.keypoints_full
            shoulders = (p[COCO17.index("left_shoulder")] + p[COCO17.index("right_shoulder")]) / 2
            hips = (p[COCO17.index("left_hip")] + p[COCO17.index("right_hip")]) / 2
            torso = np.hypot(*(shoulders - hips))
            ears = (p[COCO17.index("left_ear")] + p[COCO17.index("right_ear")]) / 2
            # The head sits beyond the shoulders, away from the hips, about a third of a torso.
            assert 0.2 * torso < np.hypot(*(ears - shoulders)) < 0.6 * torso
            assert np.hypot(*(ears - hips)) > torso
            # Nose, eyes and ears within one head (radius <= 0.26 torso).
            assert np.all(np.hypot(*(p[:5] - ears).T) < 0.3 * torso)


def test_each_figure_is_the_clear_subject_of_its_crop(black_samples):
    # Torso centres of figures in one image are at least ~1.6 torso lengths apart.
    torso = [COCO17.index(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]
    pairs = 0
    for sample in black_samples:
        centres, lengths = [], []
        for person in sample.people:
            p = person.keypoints_full[torso]
            centres.append(p.mean(0))
            lengths.append(np.hypot(*((p[0] + p[1]) / 2 - (p[2] + p[3]) / 2)))
        for i in range(len(centres)):
            for j in range(i):
                assert np.hypot(*(centres[i] - centres[j])) > 1.5 * max(lengths[i], lengths[j])
                pairs += 1
    assert pairs > 20


def test_variety_of_poses_counts_and_sizes(black_samples):
    poses = {p.pose for s in black_samples for p in s.people}
    assert poses == set(synthetic.POSES)
    counts = {len(s.people) for s in black_samples}
    assert counts == {1, 2, 3}
    facings = {p.facing for s in black_samples for p in s.people}
    assert facings == {"front", "back"}
    extents = [max(p.bbox[2:]) / SIZE for s in black_samples if len(s.people) == 1
               for p in s.people]
    assert min(extents) < 0.45 and max(extents) > 0.85


def test_draw_disc_follows_the_pixel_centre_convention():
    rng = np.random.default_rng(0)
    errors = []
    rows, cols = np.mgrid[0:32, 0:32]
    for center in rng.uniform(8, 24, (40, 2)):
        canvas = np.zeros((32, 32), np.uint8)
        synthetic.draw_disc(canvas, center, 4.0, 255)
        weights = canvas.astype(np.float64)
        # Continuous coordinate = index + 0.5: the disc's centroid is where it was asked for.
        centroid = np.array([(weights * (cols + 0.5)).sum(), (weights * (rows + 0.5)).sum()])
        errors.append(centroid / weights.sum() - center)
    # A half-pixel convention slip would show as a 0.5 px bias; anti-aliasing and the 1/16 px
    # grid leave a few hundredths.
    errors = np.array(errors)
    assert np.all(np.abs(errors.mean(0)) < 0.02), errors.mean(0)
    assert np.abs(errors).max() < 0.1
    points = rng.uniform(-5, 300, (50, 2))
    np.testing.assert_allclose(synthetic.from_fixed(synthetic.to_fixed(points)), points,
                               atol=1 / 32 + 1e-9)


def test_determinism_and_workers(tmp_path, dataset, monkeypatch):
    again = synthetic.make_synthetic_dataset(tmp_path / "b", 12, seed=3, image_size=SIZE,
                                             progress=False)
    assert again.read_bytes() == dataset.read_bytes()
    for name in ("000000000001.jpg", "000000000012.jpg"):
        assert ((again.parent / "images" / name).read_bytes()
                == (dataset.parent / "images" / name).read_bytes())
    other = synthetic.make_synthetic_dataset(tmp_path / "c", 12, seed=4, image_size=SIZE,
                                             progress=False)
    assert other.read_bytes() != dataset.read_bytes()
    # A worker pool writes the same bytes as rendering in-process.
    monkeypatch.setattr(synthetic, "_MIN_IMAGES_PER_WORKER", 4)
    pooled = synthetic.make_synthetic_dataset(tmp_path / "d", 12, seed=3, image_size=SIZE,
                                              workers=2, progress=False)
    assert pooled.read_bytes() == dataset.read_bytes()
    assert ((pooled.parent / "images" / "000000000007.jpg").read_bytes()
            == (dataset.parent / "images" / "000000000007.jpg").read_bytes())


def test_existing_dataset_is_reused_and_a_different_one_replaced(tmp_path):
    path = synthetic.make_synthetic_dataset(tmp_path, 6, seed=1, image_size=SIZE,
                                            progress=False)
    stamp = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert synthetic.make_synthetic_dataset(tmp_path, 6, seed=1, image_size=SIZE,
                                            progress=False) == path
    assert path.stat().st_mtime_ns == stamp
    synthetic.make_synthetic_dataset(tmp_path, 4, seed=1, image_size=SIZE, progress=False)
    assert len(json.loads(path.read_text())["images"]) == 4
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        synthetic.image_file_name(i) for i in range(1, 5)]
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_make_splits_are_disjoint_and_deterministic(tmp_path):
    splits = synthetic.make_splits(tmp_path, 5, 3, seed=2, image_size=SIZE, progress=False)
    train, val = (json.loads(splits[name].read_text()) for name in ("train", "val"))
    assert (len(train["images"]), len(val["images"])) == (5, 3)
    name = synthetic.image_file_name(1)
    assert ((tmp_path / "train" / "images" / name).read_bytes()
            != (tmp_path / "val" / "images" / name).read_bytes())
    # The train split is the plain dataset of the same seed (stream 0).
    plain = synthetic.make_synthetic_dataset(tmp_path / "plain", 5, seed=2, image_size=SIZE,
                                             progress=False)
    assert plain.read_bytes() == splits["train"].read_bytes()


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="side_cue"):
        synthetic.SyntheticConfig(side_cue="stripes")
    with pytest.raises(ValueError, match="image_size"):
        synthetic.SyntheticConfig(image_size=(8, 8))
    with pytest.raises(ValueError, match="num_images"):
        synthetic.make_synthetic_dataset(tmp_path, 0, seed=0)
    with pytest.raises(ValueError, match="seed"):
        synthetic.make_synthetic_dataset(tmp_path, 2, seed=-1)
    with pytest.raises(ValueError, match="background"):
        synthetic.render_sample(0, CONFIG, background=np.zeros((10, 10, 3), np.uint8))


def test_facing_side_cue_draws_both_sides_alike():
    config = synthetic.SyntheticConfig(image_size=(SIZE, SIZE), side_cue="facing",
                                       occluder_prob=0.0, multi_figure_prob=0.0)
    background = np.zeros((SIZE, SIZE, 3), np.uint8)
    same = []
    for i in range(20):
        sample = synthetic.render_sample([1, 0, i], config, background=background)
        kp = sample.people[0].keypoints
        for left, right in ((7, 8), (13, 14)):  # elbows, knees: same limb colour both sides
            if kp[left, 2] == 2 and kp[right, 2] == 2:
                a = _pixel(sample.image, *kp[left, :2]).astype(int)
                b = _pixel(sample.image, *kp[right, :2]).astype(int)
                same.append(np.abs(a - b).max() < 30)
    assert len(same) > 10 and np.mean(same) > 0.8


def test_cli_writes_train_and_val(tmp_path, capsys):
    assert make_synthetic_main(["--output", str(tmp_path), "--num-images", "5", "--seed", "1",
                                "--image-size", str(SIZE), "--split-val", "0.4",
                                "--no-progress"]) == 0
    assert "train:" in capsys.readouterr().out
    for split, count in (("train", 3), ("val", 2)):
        coco = COCO(str(tmp_path / split / "annotations.json"))
        assert len(coco.getImgIds()) == count
    with pytest.raises(SystemExit):
        make_synthetic_main(["--output", str(tmp_path), "--num-images", "5", "--image-size", "3x5"])


def test_generation_speed_is_measured(record_property):
    # Reported, not asserted: the machines are shared. 256 px, render + JPEG encode, 1 process.
    speed = synthetic.generation_speed(40)
    record_property("synthetic_images_per_second", round(speed, 1))
    print(f"\nsynthetic generation: {speed:.0f} images/s (256 px, one process)")
    assert speed > 0


def test_a_dead_worker_fails_fast_with_a_message(tmp_path):
    """A render worker that dies (here: os._exit in the worker) ends the run within seconds
    with a clear error; multiprocessing.Pool would wait forever for the lost chunk."""
    import os
    import signal
    import subprocess
    import sys

    repo = pathlib.Path(__file__).resolve().parents[1]
    script = tmp_path / "die.py"
    script.write_text(
        "import os, sys\n"
        "from keras_pose.data import synthetic\n"
        "def die(job):\n"
        "    os._exit(3)\n"
        "if __name__ == '__main__':\n"
        "    synthetic._render_chunk = die\n"
        "    synthetic._MIN_IMAGES_PER_WORKER = 1\n"
        "    synthetic.make_synthetic_dataset(sys.argv[1], 50, seed=0, image_size=64,\n"
        "                                     workers=2, progress=False)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(repo), *filter(None, [os.environ.get("PYTHONPATH")])])}
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, str(script), str(tmp_path / "out")], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the script, its pool and its workers
        process.communicate()
        pytest.fail("make_synthetic_dataset hung after a worker died")
    elapsed = time.monotonic() - started
    assert process.returncode != 0
    assert "RuntimeError: a synthetic-data worker process died" in stderr, stderr[-2000:]
    assert elapsed < 30, elapsed
    assert not (tmp_path / "out" / synthetic.ANNOTATIONS_NAME).exists()


def test_annotation_file_holds_pixel_indices_of_the_drawn_positions(black_samples):
    """``annotations.json`` is in COCO's pixel-index convention: the drawn (continuous) position
    minus 0.5, exactly (the 1/16 px grid), and ``keypoints_from_coco`` gives it back exactly."""
    from keras_pose.keypoints import keypoints_from_coco

    checked = 0
    for sample in black_samples[:20]:
        for person in sample.people:
            stored = np.asarray(synthetic._annotation(person)["keypoints"]).reshape(17, 3)
            labeled = person.keypoints[:, 2] > 0
            np.testing.assert_array_equal(stored[labeled, :2], person.keypoints[labeled, :2] - 0.5)
            np.testing.assert_array_equal(keypoints_from_coco(stored)[labeled],
                                          person.keypoints[labeled])
            checked += int(labeled.sum())
    assert checked > 100
