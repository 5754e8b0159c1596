"""The codecs (keras_pose.codecs) and the one keypoint-set inference rule (keras_pose.keypoints).
"""

from __future__ import annotations

import ast
import pathlib

import numpy as np
import pytest

import keras_pose
from keras_pose import codecs, evaluate, export, keypoints
from keras_pose.data import coco
from keras_pose.keypoints import COCO17, LSP14, MPII16, KeypointSet, infer_keypoint_set
from keras_pose.outputs import COORDINATES, HEATMAPS, OutputSpec

HEATMAP_SPEC = OutputSpec(HEATMAPS, 4, "mse", ("stack_1",))
SOFTMAX_SPEC = OutputSpec(HEATMAPS, 4, "softmax_cross_entropy", ("heatmaps",))
COORD_SPEC = OutputSpec(COORDINATES, None, "coordinate_l2", ("stage_1",))


def _keypoints(rng, batch, count, input_hw, border):
    height, width = input_hw
    xs = rng.uniform(border, width - border, (batch, count))
    ys = rng.uniform(border, height - border, (batch, count))
    return np.stack([xs, ys], -1).astype(np.float32)


def test_codec_for_picks_one_codec_per_kind():
    assert isinstance(codecs.codec_for(HEATMAP_SPEC, 64), codecs.HeatmapCodec)
    assert isinstance(codecs.codec_for(COORD_SPEC, 64), codecs.CoordinateCodec)
    assert codecs.codec_for(SOFTMAX_SPEC, 64).logits
    assert not codecs.codec_for(HEATMAP_SPEC, 64).logits
    with pytest.raises(ValueError, match="kind must be"):
        codecs.codec_for(OutputSpec("offsets", None, "mse", ("s",)), 64)
    with pytest.raises(ValueError, match="refine"):
        codecs.codec_for(HEATMAP_SPEC, 64, refine="dark")


@pytest.mark.parametrize("refine, bound", [("quarter", 1.0 + 1e-4), ("gaussian", 1e-3)])
def test_heatmap_encode_decode_round_trip(refine, bound):
    """Quarter step: <= 0.25 heatmap px = 1 input px at stride 4 (measured max 0.998 over five
    seeds); the log-parabola is exact for a Gaussian up to float32 rounding (measured 1e-6)."""
    rng = np.random.default_rng(0)
    codec = codecs.codec_for(HEATMAP_SPEC, (64, 96), sigma=1.5, refine=refine)
    # One heatmap pixel from the border, so the parabola has both neighbours.
    points = _keypoints(rng, 3, 17, (64, 96), border=8.0)
    heatmaps, weights = codec.encode(points, np.full((3, 17), 2))
    assert tuple(heatmaps.shape) == (3, 16, 24, 17)
    np.testing.assert_array_equal(weights, np.ones((3, 17)))
    decoded, scores = codec.decode([heatmaps * 0.0, heatmaps])  # the last output is decoded
    error = np.abs(np.asarray(decoded) - points)
    assert error.max() <= bound
    assert np.all(np.asarray(scores) > 0.6)  # peak of a Gaussian within half a pixel


def test_coordinate_encode_decode_round_trip():
    rng = np.random.default_rng(1)
    codec = codecs.codec_for(COORD_SPEC, (64, 96))
    points = _keypoints(rng, 2, 14, (64, 96), border=0.0)
    coordinates, _ = codec.encode(points, np.full((2, 14), 2))
    decoded, scores = codec.decode(coordinates)
    np.testing.assert_allclose(decoded, points, atol=1e-4)
    np.testing.assert_array_equal(scores, np.ones((2, 14)))


def test_hand_computed_encodings():
    # Input 16 x 16, stride 4: input (6, 10) is heatmap (1.5, 2.5), the centre of pixel
    # column 1, row 2, where the Gaussian is exactly 1.
    codec = codecs.codec_for(HEATMAP_SPEC, 16, sigma=1.0)
    heatmaps, weights = codec.encode(np.array([[[6.0, 10.0], [20.0, 1.0]]], np.float32),
                                     np.array([[2, 2]]))
    heatmaps = np.asarray(heatmaps)
    assert heatmaps[0, 2, 1, 0] == pytest.approx(1.0)
    assert heatmaps[0, 2, 2, 0] == pytest.approx(np.exp(-0.5))  # one pixel right
    np.testing.assert_array_equal(weights, [[1.0, 0.0]])  # x = 20 is outside the input
    assert np.count_nonzero(heatmaps[..., 1]) == 0
    # Coordinates, input 64 high and 128 wide: (32, 16) -> (32/128 - 0.5, 16/64 - 0.5).
    codec = codecs.codec_for(COORD_SPEC, (64, 128))
    coordinates, _ = codec.encode(np.array([[[32.0, 16.0]]], np.float32), np.array([[1]]))
    np.testing.assert_allclose(coordinates, [[[-0.25, -0.25]]])


def test_hand_computed_flips_and_involution():
    perm = np.array([1, 0, 2])
    coordinates = np.array([[[-0.25, 0.1], [0.3, 0.2], [0.0, -0.4]]], np.float32)
    codec = codecs.codec_for(COORD_SPEC, 64)
    flipped = np.asarray(codec.flip(coordinates, perm))
    np.testing.assert_allclose(flipped, [[[-0.3, 0.2], [0.25, 0.1], [0.0, -0.4]]])
    np.testing.assert_allclose(codec.flip(flipped, perm), coordinates)
    heatmaps = np.zeros((1, 4, 4, 3), np.float32)
    heatmaps[0, 1, 0, 0] = 1.0  # keypoint 0 in column 0 ...
    heatmaps[0, 2, 3, 1] = 2.0  # ... keypoint 1 in column 3
    codec = codecs.codec_for(HEATMAP_SPEC, 16)
    flipped = np.asarray(codec.flip(heatmaps, perm))
    # Mirrored columns (0 <-> 3) and swapped channels 0 <-> 1.
    assert flipped[0, 1, 3, 1] == 1.0 and flipped[0, 2, 0, 0] == 2.0
    assert np.count_nonzero(flipped) == 2
    np.testing.assert_array_equal(codec.flip(flipped, perm), heatmaps)


def test_flip_of_encoding_is_encoding_of_the_mirrored_keypoints():
    """Both codecs: mirroring keypoints (x -> W - x, swap left/right) commutes with encode."""
    rng = np.random.default_rng(2)
    perm = COCO17.flip_permutation
    points = _keypoints(rng, 2, 17, (64, 64), border=1.0)
    mirrored = np.stack([64.0 - points[..., 0], points[..., 1]], -1)[:, perm]
    visibility = np.full((2, 17), 2)
    for spec in (HEATMAP_SPEC, COORD_SPEC):
        codec = codecs.codec_for(spec, 64)
        encoded, _ = codec.encode(points, visibility)
        expected, _ = codec.encode(mirrored, visibility)
        np.testing.assert_allclose(codec.flip(encoded, perm), expected, atol=1e-5)


def test_heatmap_cells_and_softmax_decode():
    heatmaps = np.zeros((1, 8, 8, 2), np.float32)
    heatmaps[0, 5, 3, 0] = 4.0
    heatmaps[0, 0, 7, 1] = 4.0
    codec = codecs.codec_for(SOFTMAX_SPEC, 32)
    np.testing.assert_allclose(codec.heatmap_cells(heatmaps), [[[3.5, 5.5], [7.5, 0.5]]])
    _, scores = codec.decode(heatmaps)
    # Logits: softmax over 64 positions, one at 4 and 63 at 0.
    expected = np.exp(4.0) / (np.exp(4.0) + 63.0)
    np.testing.assert_allclose(scores, [[expected, expected]], rtol=1e-5)
    assert codecs.codec_for(COORD_SPEC, 32).heatmap_cells(np.zeros((1, 2, 2))) is None
    assert codec.has_heatmaps and not codecs.codec_for(COORD_SPEC, 32).has_heatmaps


def test_predict_keypoints_runs_the_flip_test_in_one_batch():
    """A model whose mirror prediction is exactly mirrored gives the plain result back."""
    rng = np.random.default_rng(3)
    perm = COCO17.flip_permutation
    codec = codecs.codec_for(COORD_SPEC, 64)
    images = rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    truth = rng.uniform(-0.4, 0.4, (2, 17, 2)).astype(np.float32)
    calls = []

    def model_fn(batch):
        batch = np.asarray(batch)
        calls.append(len(batch))
        out = []
        for image in batch:
            plain = [n for n in range(2) if np.array_equal(image, images[n])]
            out.append(truth[plain[0]] if plain else
                       np.asarray(codec.flip(truth, perm))[
                           [n for n in range(2) if np.array_equal(image, images[n, :, ::-1])][0]])
        return [np.zeros((len(batch), 17, 2), np.float32), np.stack(out)]

    plain = codecs.predict_keypoints(codec, model_fn, images)
    flipped = codecs.predict_keypoints(codec, model_fn, images, perm)
    assert calls == [2, 4]
    np.testing.assert_allclose(plain["keypoints"], (truth + 0.5) * 64.0, atol=1e-4)
    np.testing.assert_allclose(flipped["keypoints"], plain["keypoints"], atol=1e-4)
    np.testing.assert_allclose(flipped["output"], truth, atol=1e-6)


# -- no output-kind branches outside the codecs ------------------------------------------------

KIND_VALUES = {HEATMAPS, COORDINATES}
KIND_NAMES = {"HEATMAPS", "COORDINATES"}


def _mentions_kind(node: ast.AST) -> bool:
    for part in ast.walk(node):
        if isinstance(part, ast.Constant) and part.value in KIND_VALUES:
            return True
        if isinstance(part, ast.Name) and part.id in KIND_NAMES:
            return True
        if isinstance(part, ast.Attribute) and part.attr in KIND_NAMES:
            return True
        # A model's spec: ``output_spec.kind``, ``trainer.spec.kind`` (a bare ``spec`` is also
        # the metrics' MetricSpec, whose kinds are metric names).
        if isinstance(part, ast.Attribute) and part.attr == "kind":
            owner = ast.unparse(part.value)
            if owner.endswith(("output_spec", ".spec")):
                return True
    return False


def kind_branches(source: str) -> list[int]:
    """Line numbers of comparisons (``==``, ``in``, ``match``) on an output kind."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and _mentions_kind(node):
            lines.append(node.lineno)
        elif isinstance(node, ast.Match) and _mentions_kind(node.subject):
            lines.append(node.lineno)
    return lines


def test_the_kind_branch_check_finds_branches():
    assert kind_branches("if spec.kind == HEATMAPS:\n    pass\n") == [1]
    assert kind_branches("x = 1\nif trainer.spec.kind == 'heatmaps':\n    pass\n") == [2]
    assert kind_branches("ok = kind in (base.HEATMAPS, base.COORDINATES)\n") == [1]
    assert kind_branches("match output_spec.kind:\n    case _:\n        pass\n") == [1]
    assert kind_branches("if self.spec.kind != kind:\n    pass\n") == [1]
    assert kind_branches("if spec.kind == 'pck_torso':\n    pass\n") == []


def test_only_the_codecs_branch_on_the_output_kind():
    package = pathlib.Path(keras_pose.__file__).parent
    found = {}
    for path in sorted(package.rglob("*.py")):
        if path.name == "codecs.py" and path.parent == package:
            continue
        lines = kind_branches(path.read_text())
        if lines:
            found[str(path.relative_to(package))] = lines
    assert found == {}, f"output-kind branches outside keras_pose/codecs.py: {found}"


# -- keypoint-set inference --------------------------------------------------------------------


def test_infer_keypoint_set_by_names_else_by_count():
    for keypoint_set in (COCO17, MPII16, LSP14):
        assert infer_keypoint_set(names=keypoint_set.names) is keypoint_set
        assert infer_keypoint_set(num_keypoints=keypoint_set.num_keypoints) is keypoint_set
    # Names win over the count, and wrong names are an error even when the count matches.
    assert infer_keypoint_set(names=list(MPII16.names), num_keypoints=17) is MPII16
    with pytest.raises(ValueError, match="unknown keypoint set"):
        infer_keypoint_set(names=("head",) * 17, num_keypoints=17)
    with pytest.raises(ValueError, match="no known set"):
        infer_keypoint_set(num_keypoints=5)
    with pytest.raises(ValueError, match="without keypoint names or a count"):
        infer_keypoint_set()


def test_an_ambiguous_count_is_an_error(monkeypatch):
    other = KeypointSet("other17", tuple(f"k{i}" for i in range(17)), (), ())
    monkeypatch.setitem(keypoints.KEYPOINT_SETS, "other17", other)
    with pytest.raises(ValueError, match=r"several known sets \(\['coco17', 'other17'\]\)"):
        infer_keypoint_set(num_keypoints=17)
    assert infer_keypoint_set(names=other.names) is other
    assert export.guess_keypoint_set(17) is None  # export tolerates an unknown set


def test_coco_evaluate_and_export_use_the_one_rule():
    categories = [{"id": 1, "name": "person", "keypoints": list(MPII16.names)}]
    assert coco.detect_keypoint_set(categories) == (MPII16, 1)
    with pytest.raises(coco.CocoFormatError, match="unknown keypoint set"):
        coco.detect_keypoint_set([{"id": 1, "name": "person", "keypoints": ["a", "b"]}])
    assert export.guess_keypoint_set(14) is LSP14

    class FakeCoco:
        def __init__(self, names):
            self.names = names

        def loadCats(self, ids):  # noqa: N802 (pycocotools' name)
            return [{"id": 1, "keypoints": self.names}]

    assert evaluate.keypoint_set_for(FakeCoco(list(COCO17.names))) is COCO17
    with pytest.raises(ValueError, match="COCO category 1: unknown keypoint set"):
        evaluate.keypoint_set_for(FakeCoco([f"k{i}" for i in range(17)]))
    with pytest.raises(ValueError, match="COCO category 1: 0 keypoints match no known set"):
        evaluate.keypoint_set_for(FakeCoco([]))
