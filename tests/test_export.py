"""SavedModel export: signatures, outputs vs Keras + decoding, stock ops, atomic versions."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from keras_pose import codecs, export
from keras_pose.cli import export_main
from keras_pose.keypoints import COCO17
from keras_pose.outputs import HEATMAPS

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from tiny_pose import TinyCoordinatePose, TinyHeatmapPose  # noqa: E402

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
# The module behind the ``saved_model_cli`` script, run by this interpreter: a venv's python
# finds it without the venv's bin/ on PATH.
SAVED_MODEL_CLI = (sys.executable, "-m", "tensorflow.python.tools.saved_model_cli")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """One base with: tiny (heatmaps) v1, tiny v2 (flip test in the graph), tinycoord v1."""
    base = tmp_path_factory.mktemp("saved_models")
    heatmap_model = TinyHeatmapPose(num_keypoints=17, input_size=64, seed=1)
    coordinate_model = TinyCoordinatePose(num_keypoints=17, input_size=(64, 48), seed=2)
    v1 = export.export_saved_model(heatmap_model, name="tiny", base=base, keypoint_set="coco17")
    v2 = export.export_saved_model(heatmap_model, name="tiny", base=base, keypoint_set=COCO17,
                                   flip_test=True, margin=1.5)
    coord = export.export_saved_model(coordinate_model, name="tinycoord", base=base)
    return {"base": base, "v1": v1, "v2": v2, "coord": coord, "heatmap_model": heatmap_model,
            "coordinate_model": coordinate_model}


def _image(height=120, width=90, seed=0):
    rng = np.random.default_rng(seed)
    # Smooth content (a blurred random field) so that bilinear sampling differences stay small.
    small = rng.integers(0, 256, size=(height // 6 + 1, width // 6 + 1, 3)).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def reference_crop(image, box, margin, out_h, out_w):
    """The project's crop in float64 numpy: blocks of f x f pixels averaged when shrinking by
    f >= 2 (as the converter does), then output pixel centre (i + 0.5) reads the image at
    continuous x0 + (i + 0.5) * side / n, bilinear; for boxes well inside the image."""
    x, y, w, h = box
    side = margin * max(w, h)
    x0, y0 = x + w / 2 - side / 2, y + h / 2 - side / 2
    img = image.astype(np.float64)
    f = max(int(np.floor(side / max(out_h, out_w))), 1)
    if f > 1:
        rows, cols = -(-img.shape[0] // f) * f, -(-img.shape[1] // f) * f
        padded = np.zeros((rows, cols, 3))
        padded[:img.shape[0], :img.shape[1]] = img
        img = padded.reshape(rows // f, f, cols // f, f, 3).mean(axis=(1, 3))
    sx0, sy0, s_side = x0 / f, y0 / f, side / f
    cols = sx0 + (np.arange(out_w) + 0.5) * s_side / out_w - 0.5
    rows = sy0 + (np.arange(out_h) + 0.5) * s_side / out_h - 0.5
    assert cols.min() >= 0 and rows.min() >= 0
    assert cols.max() <= img.shape[1] - 1 and rows.max() <= img.shape[0] - 1
    c0, r0 = np.floor(cols).astype(int), np.floor(rows).astype(int)
    c1 = np.minimum(c0 + 1, img.shape[1] - 1)
    r1 = np.minimum(r0 + 1, img.shape[0] - 1)
    fx, fy = (cols - c0)[None, :, None], (rows - r0)[:, None, None]
    top = img[r0][:, c0] * (1 - fx) + img[r0][:, c1] * fx
    bottom = img[r1][:, c0] * (1 - fx) + img[r1][:, c1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32), (x0, y0, side)


def reference_keypoints(model, image, box, margin, flip_test=False):
    """Keras model + decode on the reference crop, mapped back to image pixels."""
    in_h, in_w = model.input_size
    crop, (x0, y0, side) = reference_crop(image, box, margin, in_h, in_w)

    def final(images):
        out = model(images, training=False)
        return out[-1] if isinstance(out, (list, tuple)) else out

    codec = codecs.codec_for(model.output_spec, (in_h, in_w))
    if flip_test:
        output = codecs.flip_test(codec, final, crop[None], COCO17.flip_permutation)
    else:
        output = final(crop[None])
    points, scores = codec.decode(output)
    points = np.asarray(points)[0].astype(np.float64)
    points = np.array([x0, y0]) + points * np.array([side / in_w, side / in_h])
    return points, np.asarray(scores)[0]


def test_crop_boxes_follow_the_pixel_centre_convention():
    # A ramp image holds its own column / row index: bilinear sampling returns the sampled
    # index coordinate, which must be x0 + (j + 0.5) * side / n - 0.5.
    height, width = 50, 70
    cols, rows = np.meshgrid(np.arange(width), np.arange(height))
    image = np.stack([cols, rows, np.zeros_like(cols)], -1).astype(np.float32)[None]
    crop_box = np.array([[10.3, 7.9, 24.0, 30.0]], np.float32)  # x, y, side_x, side_y
    out = (6, 5)
    boxes = export.crop_and_resize_boxes(crop_box, (height, width), out)
    crop = tf.image.crop_and_resize(image, boxes, [0], out).numpy()[0]
    expect_x = 10.3 + (np.arange(5) + 0.5) * 24.0 / 5 - 0.5
    expect_y = 7.9 + (np.arange(6) + 0.5) * 30.0 / 6 - 0.5
    np.testing.assert_allclose(crop[0, :, 0], expect_x, atol=1e-4)
    np.testing.assert_allclose(crop[:, 0, 1], expect_y, atol=1e-4)
    square = export.square_crop_boxes(np.array([[10.0, 20.0, 30.0, 60.0]]), 1.25).numpy()
    np.testing.assert_allclose(square, [[-12.5, 12.5, 75.0, 75.0]])


def test_saved_model_cli_shows_signatures(exports):
    completed = subprocess.run(
        [*SAVED_MODEL_CLI, "show", "--dir", str(exports["v1"]), "--all"],
        capture_output=True, text=True, timeout=120, env=ENV,
    )
    assert completed.returncode == 0, completed.stderr
    text = completed.stdout
    blocks = dict(re.findall(r"signature_def\['(\w+)'\]:(.*?)Method name is", text, re.S))
    assert set(export.SIGNATURES) <= set(blocks)

    def tensors(block, kind):
        part = block.split("output(s):")[0 if kind == "inputs" else 1]
        return {name: (dtype, shape.replace(" ", "")) for name, dtype, shape in re.findall(
            r"\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: ([^\n]+)", part)}

    assert tensors(blocks["serving_default"], "inputs") == {"images": ("DT_UINT8",
                                                                       "(-1,-1,-1,3)")}
    assert tensors(blocks["serving_boxes"], "inputs") == {
        "images": ("DT_UINT8", "(-1,-1,-1,3)"), "boxes": ("DT_FLOAT", "(-1,4)")}
    assert tensors(blocks["serving_bytes"], "inputs") == {"image_bytes": ("DT_STRING", "(-1)")}
    assert tensors(blocks["serving_bytes_boxes"], "inputs") == {
        "image_bytes": ("DT_STRING", "(-1)"), "boxes": ("DT_FLOAT", "(-1,4)")}
    for name in export.SIGNATURES:
        assert tensors(blocks[name], "outputs") == {
            "keypoints": ("DT_FLOAT", "(-1,17,2)"), "scores": ("DT_FLOAT", "(-1,17)")}


@pytest.mark.slow
def test_saved_model_cli_run_matches_keras(exports, tmp_path):
    image = _image()
    box = np.array([[20.0, 25.0, 40.0, 50.0]], np.float32)
    np.save(tmp_path / "images.npy", image[None])
    np.save(tmp_path / "boxes.npy", box)
    completed = subprocess.run(
        [*SAVED_MODEL_CLI, "run", "--dir", str(exports["v1"]), "--tag_set", "serve",
         "--signature_def", "serving_boxes", "--outdir", str(tmp_path / "out"),
         "--inputs", f"images={tmp_path / 'images.npy'};boxes={tmp_path / 'boxes.npy'}"],
        capture_output=True, text=True, timeout=120, env=ENV,
    )
    assert completed.returncode == 0, completed.stderr
    keypoints = np.load(tmp_path / "out" / "keypoints.npy")
    scores = np.load(tmp_path / "out" / "scores.npy")
    expected, expected_scores = reference_keypoints(exports["heatmap_model"], image, box[0], 1.25)
    assert keypoints.shape == (1, 17, 2)
    np.testing.assert_allclose(keypoints[0], expected, atol=1e-4)
    np.testing.assert_allclose(scores[0], expected_scores, atol=1e-4)


def test_saved_model_equals_keras_plus_decoding(exports):
    image = _image(140, 110, seed=3)
    boxes = np.array([[30.0, 30.0, 40.0, 60.0], [45.0, 50.0, 30.0, 20.0]], np.float32)
    cases = [("v1", "heatmap_model", 1.25, False), ("v2", "heatmap_model", 1.5, True),
             ("coord", "coordinate_model", 1.25, False)]
    # A large person: the crop shrinks the image 3x (4x at margin 1.5): blocks are averaged.
    large = _image(360, 320, seed=4)
    large_box = np.array([90.0, 80.0, 140.0, 180.0], np.float32)
    for version, model_key, margin, flip in cases:
        predictor = export.load_predictor(exports[version])
        assert predictor.metadata["margin"] == margin and predictor.metadata["flip_test"] == flip
        out = predictor.predict(np.stack([image, image]), boxes)
        for i, box in enumerate(boxes):
            expected, scores = reference_keypoints(exports[model_key], image, box, margin, flip)
            np.testing.assert_allclose(out["keypoints"][i], expected, atol=1e-4,
                                       err_msg=f"{version} box {i}")
            np.testing.assert_allclose(out["scores"][i], scores, atol=1e-4)
        if model_key == "coordinate_model":
            # An untrained dense head turns float32 rounding of the averaged crop (~1e-5 grey
            # levels) into ~5e-4 px here; its crop is compared directly below instead.
            continue
        out = predictor.predict(large, large_box)
        expected, scores = reference_keypoints(exports[model_key], large, large_box, margin, flip)
        np.testing.assert_allclose(out["keypoints"][0], expected, atol=1e-4,
                                   err_msg=f"{version} large box")
        np.testing.assert_allclose(out["scores"][0], scores, atol=1e-4)
    serving = export.ServingFunctions(exports["coordinate_model"], margin=1.25)
    crop, crop_box = serving.crop_person(tf.constant(large), tf.constant(large_box))
    expected_crop, (x0, y0, side) = reference_crop(large, large_box, 1.25, 64, 48)
    # float32 sample positions (normalized by the image size) move samples by ~1e-5 px.
    np.testing.assert_allclose(crop.numpy(), expected_crop, atol=5e-3)
    np.testing.assert_allclose(crop_box.numpy(), [x0, y0, side, side], rtol=1e-6)
    assert exports["coordinate_model"].output_spec.kind != HEATMAPS


def test_default_box_is_the_whole_image_and_bytes_equal_pixels(exports):
    predictor = export.load_predictor(exports["base"] / "tiny")  # newest version: v2
    assert predictor.metadata["path"].endswith(os.sep + "2")
    image = _image(96, 128, seed=5)
    whole = predictor.predict(image)
    boxed = predictor.predict(image, [0.0, 0.0, 128.0, 96.0])
    np.testing.assert_allclose(whole["keypoints"], boxed["keypoints"], atol=1e-5)
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    encoded = predictor.predict_encoded([png.tobytes()])
    np.testing.assert_allclose(encoded["keypoints"], whole["keypoints"], atol=1e-5)
    np.testing.assert_allclose(encoded["scores"], whole["scores"], atol=1e-6)
    # Images of different sizes in one bytes request, with boxes.
    other = _image(60, 50, seed=6)
    ok, png2 = cv2.imencode(".png", cv2.cvtColor(other, cv2.COLOR_RGB2BGR))
    boxes = np.array([[10, 10, 60, 50], [5, 5, 30, 40]], np.float32)
    mixed = predictor.predict_encoded([png.tobytes(), png2.tobytes()], boxes)
    separate = predictor.predict([image, other], boxes)
    np.testing.assert_allclose(mixed["keypoints"], separate["keypoints"], atol=1e-5)


def op_types_not_in_tensorflow(saved_model_dir: pathlib.Path) -> tuple[set[str], list[str]]:
    """Every op type in a SavedModel (graph, function library, stripped op list), and those
    that TensorFlow's own op registry does not know (ops a custom op library would add)."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    op_types: set[str] = set()
    function_names: set[str] = set()
    for meta_graph in saved.meta_graphs:
        op_types.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            function_names.add(function.signature.name)
            op_types.update(node.op for node in function.node_def)
        op_types.update(op.name for op in meta_graph.meta_info_def.stripped_op_list.op)
    # A node may call a library function by name; everything else must be a TF op.
    ops = op_types - function_names
    unknown = sorted(op for op in ops if op_def_registry.get(op) is None
                     or not hasattr(tf.raw_ops, op))
    return ops, unknown


def test_graph_has_only_stock_tensorflow_ops(exports):
    for key in ("v1", "v2", "coord"):
        ops, unknown = op_types_not_in_tensorflow(exports[key])
        assert {"CropAndResize", "DecodeImage", "ResizeArea"} <= ops
        assert key == "coord" or {"Conv2D", "ArgMax"} <= ops
        assert not unknown, f"{key}: ops not in TensorFlow's registry: {unknown}"


def test_versions_are_numbered_and_listed_in_models_config(exports):
    base = exports["base"]
    assert export.list_versions(base / "tiny") == [1, 2]
    assert export.list_versions(base / "tinycoord") == [1]
    # Nothing but version directories in the model directories: no temporary leftovers.
    assert sorted(p.name for p in (base / "tiny").iterdir()) == ["1", "2"]
    config = export.read_models_config(base / "models.config")
    entries = {c.name: c for c in config.model_config_list.config}
    assert set(entries) == {"tiny", "tinycoord"}
    assert entries["tiny"].base_path == "/models/tiny"
    assert entries["tinycoord"].model_platform == "tensorflow"


def test_models_config_root_is_kept_and_settings_preserved(tmp_path):
    base = tmp_path / "base"
    (base / "a" / "3").mkdir(parents=True)
    (base / "a" / "3" / "saved_model.pb").write_bytes(b"")
    (base / "empty").mkdir()  # no version: must not be listed (the server would wait for it)
    export.write_models_config(base, serving_root=str(tmp_path / "served"))
    text = (base / "models.config").read_text()
    text = text.replace('model_platform: "tensorflow"',
                        'model_platform: "tensorflow"\n    model_version_policy { all { } }')
    (base / "models.config").write_text(text)
    (base / "b" / "1").mkdir(parents=True)
    (base / "b" / "1" / "saved_model.pb").write_bytes(b"")
    export.write_models_config(base)
    entries = {c.name: c for c in
               export.read_models_config(base / "models.config").model_config_list.config}
    assert set(entries) == {"a", "b"}
    assert entries["b"].base_path == str(tmp_path / "served" / "b")
    assert entries["a"].model_version_policy.HasField("all")
    with pytest.raises(export.ExportError, match="absolute"):
        export.write_models_config(base, serving_root="relative/path")


def test_failed_export_leaves_no_version(tmp_path, monkeypatch, exports):
    seen = []

    def broken_save(model, path, **kwargs):
        seen.append(pathlib.Path(path))
        pathlib.Path(path).mkdir(parents=True)
        (pathlib.Path(path) / "saved_model.pb").write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(export.versions, "save_saved_model", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_saved_model(exports["heatmap_model"], name="m", base=tmp_path)
    # It was written under a name TF Serving ignores, next to where the version goes.
    assert seen[0].parent == tmp_path / "m" and not seen[0].name.isdigit()
    assert list((tmp_path / "m").iterdir()) == []
    assert export.list_versions(tmp_path / "m") == []


def test_stale_temporaries_of_dead_exporters_are_removed(tmp_path, monkeypatch, exports):
    stale = tmp_path / "m" / f"{export.TEMP_PREFIX}999999999_deadbeef"
    live = tmp_path / "m" / f"{export.TEMP_PREFIX}{os.getppid()}_cafecafe"
    for folder in (stale, live):
        folder.mkdir(parents=True)
    monkeypatch.setattr(export.versions, "save_saved_model", lambda model, path, **kw: (
        pathlib.Path(path).mkdir(), (pathlib.Path(path) / "saved_model.pb").write_bytes(b"x")))
    export.export_saved_model(exports["heatmap_model"], name="m", base=tmp_path)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", live.name]


def test_explicit_version_clash_and_bad_names(tmp_path, exports):
    (tmp_path / "m" / "4").mkdir(parents=True)
    (tmp_path / "m" / "4" / "saved_model.pb").write_bytes(b"")
    with pytest.raises(export.ExportError, match="version 4 of 'm' already exists"):
        export.export_saved_model(exports["heatmap_model"], name="m", base=tmp_path, version=4)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["4"]
    for name in ("", "12", "a/b", ".hidden"):
        with pytest.raises(export.ExportError, match="model name"):
            export.export_saved_model(exports["heatmap_model"], name=name, base=tmp_path)


def test_wrong_inputs_give_clear_errors(exports):
    predictor = export.load_predictor(exports["v1"])
    image = _image()
    with pytest.raises(ValueError, match=r"uint8 \[N, H, W, 3\].*float32"):
        predictor.predict(image.astype(np.float32))
    with pytest.raises(ValueError, match=r"uint8 \[N, H, W, 3\]"):
        predictor.predict(image[..., :2])
    with pytest.raises(ValueError, match=r"boxes must be float32 \[N, 4\]"):
        predictor.predict(image, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="positive width"):
        predictor.predict(image, [1.0, 1.0, 0.0, 5.0])
    # The graph itself (what TF Serving runs) checks what its signature cannot say.
    loaded = tf.saved_model.load(str(exports["v1"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="one per image"):
        loaded.signatures["serving_boxes"](images=tf.constant(image[None]),
                                           boxes=tf.ones((2, 4)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"RGB"):
        loaded.signatures["serving_default"](images=tf.zeros((1, 8, 8, 4), tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="uint8"):
        loaded.signatures["serving_default"](images=tf.zeros((1, 8, 8, 3), tf.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image"):
        loaded.signatures["serving_bytes"](image_bytes=tf.constant([b"not an image"]))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, exports):
    from keras_pose.pipeline import Pipeline, to_toml

    run = tmp_path_factory.mktemp("runs") / "tiny_run"
    run.mkdir()
    small_hourglass().save(run / "model.keras")
    pipeline = Pipeline(name="tiny_run")
    pipeline.data.margin = 1.4
    pipeline.data.keypoint_set = "coco17"
    (run / "pipeline.resolved.toml").write_text(to_toml(pipeline))
    return run


def small_hourglass():
    """A real network, kept tiny: 1 stack, 16 features, depth 2, 64x64 input."""
    from keras_pose.models import build_model

    return build_model("stacked_hourglass", num_keypoints=17, input_shape=(64, 64, 3),
                       num_stacks=1, num_features=16, depth=2)


def test_run_dir_and_keras_file_load_with_the_run_margin(run_dir):
    loaded = export.load_pose_model(run_dir)
    assert loaded.margin == 1.4 and loaded.keypoint_set is COCO17
    assert loaded.model.output_spec.output_names == ("stack_1",)
    bare = export.load_pose_model(run_dir / "model.keras")
    assert bare.margin == 1.4  # the pipeline beside the file is used
    predictor = export.load_predictor(run_dir)
    image = _image(130, 100, seed=8)
    box = np.array([30.0, 35.0, 40.0, 50.0], np.float32)
    out = predictor.predict(image, box)
    expected, _ = reference_keypoints(loaded.model, image, box, 1.4)
    np.testing.assert_allclose(out["keypoints"][0], expected, atol=1e-4)
    with pytest.raises(export.ExportError, match="without model.keras"):
        export.load_pose_model(run_dir.parent)


@pytest.mark.slow
def test_export_cli_exports_a_real_network(run_dir, tmp_path, capsys):
    """tools/export.py on a run directory of a (1-stack, tiny) stacked hourglass."""
    base = tmp_path / "saved"
    assert export_main(["--model", str(run_dir), "--name", "cli_model", "--base", str(base)]) == 0
    assert export.list_versions(base / "cli_model") == [1]
    version = base / "cli_model" / "1"
    assert str(version) in capsys.readouterr().out
    info = (version / "assets.extra" / "keras_pose.json").read_text()
    assert '"margin": 1.4' in info and '"keypoint_set": "coco17"' in info
    assert '"cli_model"' in (base / "models.config").read_text()
    ops, unknown = op_types_not_in_tensorflow(version)
    assert "FusedBatchNormV3" in ops or "Rsqrt" in ops  # the network's batch norms are in
    assert not unknown, f"ops not in TensorFlow's registry: {unknown}"
    # Same keypoints as the in-process functions of the .keras file.
    image = _image(130, 100, seed=9)
    box = np.array([30.0, 35.0, 40.0, 50.0], np.float32)
    np.testing.assert_allclose(export.load_predictor(version).predict(image, box)["keypoints"],
                               export.load_predictor(run_dir).predict(image, box)["keypoints"],
                               atol=1e-4)
    assert export_main(["--model", str(tmp_path / "missing.keras"), "--name", "x",
                        "--base", str(base)]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.slow
def test_softmax_model_exports_peak_probabilities(tmp_path):
    """A Chained Prediction network trained with the spatial-softmax loss outputs logits; the
    exported ``scores`` are the softmax probabilities at the peaks, in [0, 1], not the logits."""
    from keras_pose.models import build_model
    from keras_pose.outputs import SOFTMAX_CROSS_ENTROPY

    model = build_model("chained_prediction", num_keypoints=3, input_shape=(64, 64, 3),
                        hidden_features=8)
    assert model.output_spec.loss == SOFTMAX_CROSS_ENTROPY
    # Shift every logit map up by 5: the softmax (and the chain, which reads softmax maps)
    # does not change, raw logits would now read as "scores" far above 1.
    for step in range(1, 4):
        layer = model.get_layer(f"step_{step:02d}_deception_out")
        layer.bias.assign(layer.bias.numpy() + 5.0)
    version = export.export_saved_model(model, name="chained", base=tmp_path,
                                        update_config=False)
    predictor = export.load_predictor(version)
    image = _image(120, 100, seed=9)
    box = np.array([20.0, 25.0, 50.0, 60.0], np.float32)
    out = predictor.predict(image, box)

    crop, (x0, y0, side) = reference_crop(image, box, 1.25, 64, 64)
    logits = np.asarray(model(crop[None], training=False), np.float64)[0]  # [8, 8, 3]
    flat = logits.reshape(-1, 3)
    probabilities = np.exp(flat - flat.max(0)) / np.exp(flat - flat.max(0)).sum(0)
    assert flat.max(0).min() > 1.0  # raw logits are no probabilities
    scores = out["scores"][0]
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    np.testing.assert_allclose(scores, probabilities.max(0), rtol=1e-4)
    # The keypoints are the logits' peaks (argmax is the same), mapped back to the image.
    peak = flat.argmax(0)
    centre = np.stack([peak % 8 + 0.5, peak // 8 + 0.5], axis=-1) * 8 * side / 64 + [x0, y0]
    np.testing.assert_allclose(out["keypoints"][0], centre, atol=0.25 * 8 * side / 64 + 1e-3)
