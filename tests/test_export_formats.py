"""TFLite and ONNX exports: the file's network matches Keras, the Predictor on it matches the
SavedModel's, and the CLIs take the files (int8's accuracy on a trained network:
``tests/test_learning.py``)."""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest

from keras_pose import export
from keras_pose.cli import evaluate_main, export_main, predict_main
from keras_pose.export import formats
from keras_pose.keypoints import COCO17

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from tiny_pose import TinyCoordinatePose, TinyHeatmapPose  # noqa: E402

pytest.importorskip("ai_edge_litert", reason="TFLite tests need ai-edge-litert "
                             "(pip install 'keras-pose[export]')")
pytest.importorskip("onnxruntime", reason="ONNX tests need onnxruntime")
pytest.importorskip("tf2onnx", reason="ONNX export tests need tf2onnx")

# (format, quantize) of the float exports.
FLOAT_EXPORTS = [("tflite", None), ("tflite", "float16"), ("onnx", None)]


@pytest.fixture(scope="module")
def heatmap_model():
    return TinyHeatmapPose(num_keypoints=17, input_size=64, seed=1)


@pytest.fixture(scope="module")
def exported(heatmap_model, tmp_path_factory):
    """The tiny heatmap model as a SavedModel and as each float file export, one base."""
    base = tmp_path_factory.mktemp("exports")
    files = {
        (fmt, quantize): export.export_file(
            heatmap_model, export.export_directory(base, "tiny", fmt, quantize),
            file_format=fmt, quantize=quantize, margin=1.25, keypoint_set=COCO17)
        for fmt, quantize in FLOAT_EXPORTS
    }
    saved = export.export_saved_model(heatmap_model, name="tiny", base=base,
                                      keypoint_set=COCO17, update_config=False)
    return {"base": base, "files": files, "saved": saved}


def _crops(count, height, width, seed=0):
    """Smooth random crops in 0-255 (the network's input range)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (count, height // 8, width // 8, 3)).astype(np.float32)
    return np.stack([cv2.resize(c, (width, height), interpolation=cv2.INTER_CUBIC)
                     for c in small]).clip(0, 255)


def _network(path):
    return formats.NETWORKS[formats.FORMAT_OF_SUFFIX[path.suffix]](path)


@pytest.mark.parametrize("fmt, quantize", FLOAT_EXPORTS)
def test_file_network_matches_the_keras_model(exported, heatmap_model, fmt, quantize):
    """The network in the file (batch norms folded) gives the Keras model's heatmaps within
    1e-3 of their maximum, at two batch sizes (the interpreter resizes its input)."""
    network = _network(exported["files"][(fmt, quantize)])
    for count in (1, 5):
        crops = _crops(count, 64, 64, seed=count)
        expected = np.asarray(heatmap_model(crops, training=False))
        got = network(crops)
        assert got.shape == expected.shape == (count, 16, 16, 17)
        assert np.abs(got - expected).max() <= 1e-3 * np.abs(expected).max()


def test_dynamic_quantization_keeps_int8_weights_and_float_activations(heatmap_model, exported,
                                                                     tmp_path):
    """``--quantize dynamic``: the convolution kernels are int8 in the file (TFLite leaves
    those under 1,024 weights float), nothing else is (activations between ops stay float32),
    and the heatmaps stay close to Keras's (int8 arithmetic inside each convolution)."""
    path = export.export_file(heatmap_model, tmp_path / "dynamic", file_format="tflite",
                              quantize="dynamic", margin=1.25, keypoint_set=COCO17)

    def sizes(file, keep):
        details = formats.TFLiteNetwork(file).interpreter.get_tensor_details()
        return sorted(int(np.prod(d["shape"])) for d in details if keep(d))

    int8_sizes = sizes(path, lambda d: d["dtype"] == np.int8)
    # The float file's 4-D float32 tensors with more than one output channel are the kernels;
    # its activations have batch 1.
    kernels = sizes(exported["files"][("tflite", None)],
                    lambda d: d["dtype"] == np.float32 and len(d["shape"]) == 4
                    and d["shape"][0] > 1)
    assert int8_sizes and int8_sizes == [size for size in kernels if size >= 1024]
    crops = _crops(4, 64, 64, seed=4)
    expected = np.asarray(heatmap_model(crops, training=False))
    got = _network(path)(crops)
    assert got.dtype == np.float32 and got.shape == expected.shape
    # Measured: 0.6-0.8 % of the heatmap maximum (untrained weights, smooth random crops).
    assert np.abs(got - expected).max() <= 0.03 * np.abs(expected).max()


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_coordinate_model_file_matches_keras(tmp_path, fmt):
    model = TinyCoordinatePose(num_keypoints=17, input_size=(64, 48), seed=2)
    path = export.export_file(model, tmp_path / fmt, file_format=fmt, margin=1.25)
    crops = _crops(3, 64, 48)
    expected = np.asarray(model(crops, training=False))
    assert np.abs(_network(path)(crops) - expected).max() <= 1e-3 * np.abs(expected).max()
    info = json.loads((tmp_path / fmt / export.METADATA_FILE).read_text())
    assert info["file_format"] == fmt and info["output_kind"] == "coordinates"
    assert info["input_size"] == [64, 48] and info["model_file"] == path.name


def _images_and_boxes():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (3, 120, 90, 3)).astype(np.uint8)
    # Partly outside the image (left, bottom-right) and inside; the crop reads black outside.
    boxes = np.array([[-30, 10, 60, 80], [50, 70, 70, 90], [20, 20, 40, 50]], np.float32)
    return images, boxes


@pytest.mark.parametrize("fmt, quantize", FLOAT_EXPORTS)
def test_predictor_on_the_file_matches_the_saved_model(exported, fmt, quantize):
    """Same boxes, crops, decoding and mapping as the SavedModel: keypoints agree (float16
    weights may move an argmax between near-equal cells: then at most one keypoint in ten)."""
    images, boxes = _images_and_boxes()
    saved = export.load_predictor(exported["saved"])
    path = exported["files"][(fmt, quantize)]
    expected = saved.predict(images, boxes)
    for source in (path, path.parent):  # the file or its export directory
        predictor = export.load_predictor(source)
        assert predictor.metadata["keypoint_set"] == "coco17"
        got = predictor.predict(images, boxes)
        close = np.all(np.abs(got["keypoints"] - expected["keypoints"]) < 1e-3, axis=-1)
        if quantize is None:
            assert close.all()
            np.testing.assert_allclose(got["scores"], expected["scores"], atol=1e-5)
        else:
            assert close.mean() >= 0.9
    whole = predictor.predict(images)  # no boxes: the whole image, as serving_default
    np.testing.assert_allclose(whole["keypoints"], saved.predict(images)["keypoints"],
                               atol=1e-3 if quantize is None else 20)


def test_flip_test_runs_on_the_host(heatmap_model, tmp_path):
    """An export with the flip test: the host runs the network on both crops, as the graph."""
    path = export.export_file(heatmap_model, tmp_path / "onnx", file_format="onnx", margin=1.5,
                              keypoint_set=COCO17, flip_test=True)
    saved = export.export_saved_model(heatmap_model, name="flip", base=tmp_path,
                                      keypoint_set=COCO17, flip_test=True, margin=1.5,
                                      update_config=False)
    images, boxes = _images_and_boxes()
    np.testing.assert_allclose(export.load_predictor(path).predict(images, boxes)["keypoints"],
                               export.load_predictor(saved).predict(images, boxes)["keypoints"],
                               atol=1e-3)


def test_bad_requests_and_files_are_named(exported, tmp_path):
    with pytest.raises(export.ExportError, match="int8 needs --records"):
        formats.export_file(None, tmp_path, file_format="tflite", quantize="int8", margin=1.25)
    with pytest.raises(export.ExportError, match="tflite format only"):
        formats.format_name("onnx", "float16")
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(exported["files"][("onnx", None)].read_bytes())
    with pytest.raises(export.ExportError, match="no keras_pose.json beside it"):
        export.load_predictor(lonely)
    predictor = export.load_predictor(exported["files"][("tflite", None)])
    with pytest.raises(ValueError, match="with N = 3 images"):
        predictor.predict(_images_and_boxes()[0], np.zeros((1, 4), np.float32) + 5)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Synthetic figures (train and held-out val) as 64 px person records."""
    from keras_pose.data import convert, synthetic

    root = tmp_path_factory.mktemp("synthetic")
    splits = synthetic.make_splits(root / "images", 120, 30, 0, image_size=128,
                                   progress=False, workers=1)
    for split, coco_json in splits.items():
        convert.convert_coco(coco_json, coco_json.parent / "images", root / "records",
                             split, workers=0, crop_size=64, progress=False,
                             log=lambda message: None)
    return {"train": str(root / "records" / "train-*.tfrecord"),
            "val": str(root / "records" / "val-*.tfrecord"), "splits": splits}


def _results(directory) -> np.ndarray:
    """The COCO results' keypoints, in record order (the evaluation reads records in order)."""
    results = json.loads((pathlib.Path(directory) / "results.json").read_text())
    return np.array([r["keypoints"] for r in results])


# 9-10 s per format: the slow tier (the fast one exports, predicts and evaluates the files
# through the library calls these commands make).
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_cli_export_then_predict_and_evaluate_the_file(hourglass_file, synthetic, tmp_path, fmt):
    import cv2

    base = tmp_path / "saved_models"
    assert export_main(["--model", str(hourglass_file), "--name", "hg", "--base", str(base),
                        "--format", fmt]) == 0
    path = base / "hg" / fmt / formats.MODEL_FILES[fmt]
    assert path.is_file() and (path.parent / export.METADATA_FILE).is_file()
    assert not (base / export.MODELS_CONFIG).exists()  # TF Serving cannot load these

    image_path = sorted((synthetic["splits"]["val"].parent / "images").iterdir())[0]
    box = [10.0, -5.0, 70.0, 100.0]  # partly above the image
    out = tmp_path / "predict"
    assert predict_main(["--model", str(path), "--input", str(image_path), "--output", str(out),
                         "--box", ",".join(map(str, box))]) == 0
    points = np.asarray(json.loads((out / "keypoints.json").read_text())
                        ["images"][0]["keypoints"])
    image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    expected = export.load_predictor(hourglass_file).predict(image, box)["keypoints"][0]
    np.testing.assert_allclose(points, expected, atol=1e-2)

    common = ["--records", synthetic["val"], "--no-flip-test", "--max-batches", "1"]
    assert evaluate_main(["--model", str(path), *common, "--output", str(tmp_path / "f")]) == 0
    assert evaluate_main(["--model", str(hourglass_file), *common,
                          "--output", str(tmp_path / "k")]) == 0
    np.testing.assert_allclose(_results(tmp_path / "f"), _results(tmp_path / "k"), atol=1e-2)
