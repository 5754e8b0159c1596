"""Bad inputs to the serving signatures (in-process SavedModel, and REST/gRPC through the test
double) and to the Python checks of the Predictor and the clients: each gives a clear
INVALID_ARGUMENT / ValueError or a correct answer, and the same loaded model answers a good
request exactly as before afterwards. Ends with a bounded, seeded fuzz of the bytes signatures.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
import tensorflow as tf

from keras_pose import export, serving

CHANNELS = ("saved_model", "rest", "grpc")
MARGIN = export.DEFAULT_MARGIN


class Rejected(Exception):
    """A request the server (or the loaded signature) refused with INVALID_ARGUMENT."""


def _image(height=120, width=90, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(height // 6 + 1, width // 6 + 1, 3)).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def _png(rgb):
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


GOOD = _image()
GOOD_PNG = _png(GOOD)
def _f32(boxes):
    return np.array(boxes, np.float32)


GOOD_BOX = np.array([[10.0, 20.0, 50.0, 80.0]], np.float32)


@pytest.fixture(scope="module")
def loaded(base):
    return tf.saved_model.load(str(base / "pose" / "1"))


@pytest.fixture(scope="module")
def call(loaded, server):
    """``call(channel, signature, inputs) -> outputs`` or raise :class:`Rejected`."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=[
        ("grpc.max_send_message_length", 64 << 20)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/pose:predict"

    def json_value(value):
        if value.dtype == object or value.dtype.kind == "S":
            return [{"b64": base64.b64encode(v).decode("ascii")} for v in value.tolist()]
        return value.tolist()

    def run(where, signature, inputs):
        inputs = {k: np.asarray(v) for k, v in inputs.items()}
        if where == "saved_model":
            try:
                out = loaded.signatures[signature](**{k: tf.constant(v) for k, v in
                                                      inputs.items()})
            except tf.errors.InvalidArgumentError as error:
                raise Rejected(error.message) from None
            return {k: v.numpy() for k, v in out.items()}
        if where == "rest":
            body = {"signature_name": signature,
                    "inputs": {k: json_value(v) for k, v in inputs.items()}}
            request = urllib.request.Request(url, json.dumps(body).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    outputs = json.loads(response.read())["outputs"]
            except urllib.error.HTTPError as error:
                assert error.code == 400, error.code
                raise Rejected(json.loads(error.read())["error"]) from None
            return {k: np.asarray(v, np.float32) for k, v in outputs.items()}
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "pose"
        request.model_spec.signature_name = signature
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        try:
            response = stub.Predict(request, timeout=60)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
            raise Rejected(error.details()) from None
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    yield run
    channel.close()


@pytest.fixture(scope="module")
def reference(call):
    """The good requests and their answers (in-process SavedModel), one per signature."""
    requests = {
        "serving_default": {"images": GOOD[None]},
        "serving_boxes": {"images": GOOD[None], "boxes": GOOD_BOX},
        "serving_bytes": {"image_bytes": np.array([GOOD_PNG], object)},
        "serving_bytes_boxes": {"image_bytes": np.array([GOOD_PNG], object), "boxes": GOOD_BOX},
    }
    return {name: (inputs, call("saved_model", name, inputs)) for name, inputs in
            requests.items()}


def assert_still_good(call, reference, where):
    for signature, (inputs, expected) in reference.items():
        got = call(where, signature, inputs)
        for key in export.OUTPUTS:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{where} {signature}")


def in_crop_square(keypoints, boxes):
    boxes = np.asarray(boxes, np.float64)
    side = MARGIN * boxes[:, 2:].max(axis=1)
    centre = boxes[:, :2] + boxes[:, 2:] / 2
    return np.all(np.abs(keypoints - centre[:, None]) <= side[:, None, None] / 2 + 1e-3)


# (name, signature, inputs, regex of the error message); every one is INVALID_ARGUMENT.
IMAGE = GOOD[None]
REJECTED = [
    ("float images", "serving_default", {"images": IMAGE.astype(np.float32)}, r"uint8"),
    ("int32 images", "serving_boxes", {"images": IMAGE.astype(np.int32), "boxes": GOOD_BOX},
     r"uint8"),
    ("rank-3 images", "serving_default", {"images": GOOD}, r"\[\?,\?,\?,\?\]"),
    ("rank-5 images", "serving_default", {"images": IMAGE[None]}, r"\[\?,\?,\?,\?\]"),
    ("4-channel images", "serving_default",
     {"images": np.zeros((1, 8, 8, 4), np.uint8)}, r"\(RGB\)"),
    ("empty batch", "serving_default", {"images": np.zeros((0, 8, 8, 3), np.uint8)},
     r"batch is empty|\[\?,\?,\?,\?\]"),  # JSON [] has no shape: rank 1
    ("empty bytes batch", "serving_bytes", {"image_bytes": np.array([], object)},
     r"batch is empty"),
    ("0x0 image", "serving_default", {"images": np.zeros((1, 0, 0, 3), np.uint8)},
     r"H, W > 0|\[\?,\?,\?,\?\]"),
    ("rank-2 bytes", "serving_bytes", {"image_bytes": np.array([[GOOD_PNG]], object)},
     r"\[\?\]"),
    ("not an image", "serving_bytes", {"image_bytes": np.array([b"not an image"], object)},
     r"Unknown image file format"),
    ("empty bytes", "serving_bytes", {"image_bytes": np.array([b""], object)},
     r"Unknown image file format|[Ee]mpty"),
    ("truncated PNG", "serving_bytes", {"image_bytes": np.array([GOOD_PNG[:60]], object)},
     r"PNG"),
    ("NaN box", "serving_boxes", {"images": IMAGE, "boxes": _f32([[np.nan, 0, 10, 10]])},
     r"finite"),
    ("NaN box size", "serving_bytes_boxes",
     {"image_bytes": np.array([GOOD_PNG], object), "boxes": _f32([[0, 0, np.nan, 10]])}, r"finite"),
    ("infinite box", "serving_boxes", {"images": IMAGE, "boxes": _f32([[0, 0, np.inf, 10]])},
     r"finite"),
    ("huge box", "serving_boxes", {"images": IMAGE, "boxes": _f32([[0, 0, 1e9, 1e9]])}, r"finite"),
    ("negative box size", "serving_boxes", {"images": IMAGE, "boxes": _f32([[10, 10, -30, 30]])},
     r"positive width and height"),
    ("zero box size", "serving_bytes_boxes",
     {"image_bytes": np.array([GOOD_PNG], object), "boxes": _f32([[10, 10, 0, 30]])},
     r"positive width and height"),
    ("two boxes for one image", "serving_boxes",
     {"images": IMAGE, "boxes": np.zeros((2, 4), np.float32) + 5}, r"one per image"),
    ("no box for one image", "serving_bytes_boxes",
     {"image_bytes": np.array([GOOD_PNG], object), "boxes": np.zeros((0, 4), np.float32)},
     r"one per image|\[\?,4\]"),
    ("5 numbers per box", "serving_boxes",
     {"images": IMAGE, "boxes": np.ones((1, 5), np.float32)}, r"\[\?,4\]"),
    ("flat boxes", "serving_boxes", {"images": IMAGE, "boxes": np.ones(4, np.float32)},
     r"\[\?,4\]"),
]


@pytest.mark.parametrize("where", CHANNELS)
@pytest.mark.parametrize("name, signature, inputs, pattern", REJECTED,
                         ids=[case[0] for case in REJECTED])
def test_bad_input_is_invalid_argument(call, reference, where, name, signature, inputs,
                                       pattern):
    if where == "rest" and name in ("rank-2 bytes", "int32 images"):
        pytest.skip("JSON has no dtypes and {b64} values are a flat list of strings")
    with pytest.raises(Rejected, match=pattern) as info:
        call(where, signature, inputs)
    message = str(info.value)
    print(f"{where:12s} {name:24s} -> INVALID_ARGUMENT: {message[:150]}")
    # A message a client can show: one line of text, not a graph dump.
    if where != "saved_model":
        assert "\n" not in message and "Graph execution error" not in message
    assert_still_good(call, reference, where)


def _outputs_equal(a, b):
    for key in export.OUTPUTS:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("where", CHANNELS)
def test_odd_but_valid_inputs_answer_correctly(call, reference, where):
    # A 1x1 image: keypoints inside the crop square of the whole image.
    tiny = call(where, "serving_default", {"images": np.full((1, 1, 1, 3), 200, np.uint8)})
    assert tiny["keypoints"].shape == (1, 17, 2) and np.all(np.isfinite(tiny["keypoints"]))
    assert in_crop_square(tiny["keypoints"], [[0, 0, 1, 1]])
    _outputs_equal(tiny, call("saved_model", "serving_default",
                              {"images": np.full((1, 1, 1, 3), 200, np.uint8)}))
    # PNG with alpha: the alpha channel is dropped (not composited): the RGB image's answer.
    alpha = np.random.default_rng(1).integers(0, 256, GOOD.shape[:2], dtype=np.uint8)
    rgba = cv2.imencode(".png", np.dstack([cv2.cvtColor(GOOD, cv2.COLOR_RGB2BGR), alpha]))[1]
    _outputs_equal(call(where, "serving_bytes", {"image_bytes": np.array([rgba.tobytes()],
                                                                           object)}),
                   reference["serving_bytes"][1])
    # Grayscale PNG and JPEG decode to RGB (gray replicated): the answer of that RGB image.
    gray = cv2.cvtColor(GOOD, cv2.COLOR_RGB2GRAY)
    for encoded in (cv2.imencode(".png", gray)[1].tobytes(),
                    cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()):
        decoded = tf.io.decode_image(encoded, channels=1).numpy()
        assert decoded.shape == gray.shape + (1,)
        rgb = np.repeat(decoded, 3, axis=-1)[None]
        _outputs_equal(call(where, "serving_bytes", {"image_bytes": np.array([encoded],
                                                                               object)}),
                       call("saved_model", "serving_default", {"images": rgb}))
    # A box partly outside the image: the crop pads black; the keypoints lie in its square.
    boxes = np.array([[-30.0, -40.0, 60.0, 90.0]], np.float32)
    partly = call(where, "serving_boxes", {"images": GOOD[None], "boxes": boxes})
    assert np.all(np.isfinite(partly["keypoints"])) and in_crop_square(partly["keypoints"], boxes)
    _outputs_equal(partly, call("saved_model", "serving_bytes_boxes",
                                {"image_bytes": np.array([GOOD_PNG], object), "boxes": boxes}))
    # A box wholly outside: an all-black crop, so the scores of an all-black image.
    outside = np.array([[1000.0, -500.0, 40.0, 40.0]], np.float32)
    far = call(where, "serving_boxes", {"images": GOOD[None], "boxes": outside})
    black = call("saved_model", "serving_default", {"images": np.zeros((1, 50, 50, 3),
                                                                       np.uint8)})
    np.testing.assert_array_equal(far["scores"], black["scores"])
    assert in_crop_square(far["keypoints"], outside)
    assert_still_good(call, reference, where)


@pytest.fixture(scope="module")
def large_image():
    """8000 x 8000 RGB (192 MB): smooth content and sharp blocks; PNG-encoded too."""
    image = cv2.resize(_image(80, 80, seed=3), (8000, 8000), interpolation=cv2.INTER_NEAREST)
    image[3000:3600, 4000:4400] = (250, 20, 20)
    return image, _png(image)


@pytest.mark.parametrize("where", CHANNELS)
def test_very_large_image_answers(call, reference, large_image, where):
    image, png = large_image
    start = time.perf_counter()
    encoded = call(where, "serving_bytes", {"image_bytes": np.array([png], object)})
    seconds = time.perf_counter() - start
    assert in_crop_square(encoded["keypoints"], [[0, 0, 8000, 8000]])
    if where == "saved_model":  # raw uint8 (192 MB) in-process only; the network sends PNG
        _outputs_equal(encoded, call(where, "serving_default", {"images": image[None]}))
    # A small box far into the image reads the same pixels as that cut-out of it.
    box = np.array([[4100.0, 3100.0, 60.0, 90.0]], np.float32)
    cut = image[3000:3300, 4000:4300]
    in_big = call(where, "serving_bytes_boxes", {"image_bytes": np.array([png], object),
                                                 "boxes": box})
    in_cut = call("saved_model", "serving_boxes", {"images": cut[None],
                                                   "boxes": _f32(box - [[4000, 3000, 0, 0]])})
    np.testing.assert_allclose(in_big["keypoints"], in_cut["keypoints"] + [4000, 3000],
                               atol=1e-3)
    np.testing.assert_array_equal(in_big["scores"], in_cut["scores"])
    print(f"{where}: 8000x8000 PNG ({len(png) / 1e6:.2f} MB) answered in {seconds:.2f} s")
    assert_still_good(call, reference, where)


def test_predictor_and_clients_check_in_python(base, server):
    predictor = export.load_predictor(base / "pose")
    rest = serving.RestClient("127.0.0.1", server.rest_port, model="pose")
    grpc_client = serving.GrpcClient("127.0.0.1", server.grpc_port, model="pose")
    expected = predictor.predict(GOOD)
    cases = [
        (lambda: predictor.predict(GOOD.astype(np.float32)), r"uint8"),
        (lambda: predictor.predict(GOOD[..., 0]), r"\[N, H, W, 3\]"),
        (lambda: predictor.predict(np.zeros((0, 8, 8, 3), np.uint8)), r"batch is empty"),
        (lambda: predictor.predict(np.zeros((1, 0, 0, 3), np.uint8)), r"\[N, H, W, 3\]"),
        (lambda: predictor.predict(GOOD, [np.nan, 0, 5, 5]), r"finite"),
        (lambda: predictor.predict(GOOD, [0, 0, 1e9, 5]), r"finite"),
        (lambda: predictor.predict(GOOD, [0, 0, -5, 5]), r"positive width"),
        (lambda: predictor.predict(GOOD, [[0, 0, 5, 5]] * 2), r"N = 1 images"),
        (lambda: predictor.predict_encoded([]), r"non-empty"),
        (lambda: predictor.predict_encoded(["a string"]), r"encoded image bytes"),
    ]
    for client in (rest, grpc_client):
        cases += [
            (lambda c=client: c.predict([]), r"no images"),
            (lambda c=client: c.predict(GOOD.astype(np.float32)), r"uint8"),
            (lambda c=client: c.predict(np.dstack([GOOD, GOOD[..., :1]])), r"uint8 \[H, W, 3\]"),
            (lambda c=client: c.predict(GOOD, [np.nan, 0, 5, 5]), r"finite"),
            (lambda c=client: c.predict(GOOD, [0, 0, 5, -5]), r"positive width"),
            (lambda c=client: c.predict(GOOD, [[0, 0, 5, 5]] * 3), r"N = 1 images"),
            (lambda c=client: c.predict([GOOD, "x"]), r"image 1 is a str"),
        ]
    for function, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            function()
    # What only the graph can tell: the Predictor passes the op's error on.
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"Unknown image file format"):
        predictor.predict_encoded([GOOD_PNG, b"junk"])
    # Errors from the server reach the client as ServingError with the op's message.
    with pytest.raises(serving.ServingError, match=r"HTTP 400: Unknown image file format"):
        rest.predict([b"neither JPEG nor PNG"])
    with pytest.raises(serving.ServingError,
                       match=r"INVALID_ARGUMENT.*Unknown image file format"):
        grpc_client.predict([b"\x89PNG? no"])
    for client in (rest, grpc_client):
        _outputs_equal(client.predict(GOOD), expected)
    _outputs_equal(predictor.predict(GOOD), expected)
    grpc_client.close()


# -- fuzz --------------------------------------------------------------------------------------


def _fuzz_inputs(count: int, seed: int) -> list[bytes]:
    """Random bytes, truncated / corrupted JPEG, PNG, GIF, BMP files, and bare headers."""
    rng = np.random.default_rng(seed)
    image = _image(40, 30, seed=seed)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    files = [cv2.imencode(ext, bgr)[1].tobytes() for ext in (".jpg", ".png", ".bmp")]
    files.append(tf.io.encode_png(image).numpy())
    gif = (b"GIF89a\x02\x00\x02\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x00\x00\x00"
           b"\x00\x00,\x00\x00\x00\x00\x02\x00\x02\x00\x00\x02\x02D\x01\x00;")
    files.append(gif)
    headers = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBP"]
    inputs = []
    for i in range(count):
        kind = i % 5
        if kind == 0:
            data = rng.bytes(int(rng.integers(0, 2000)))
        elif kind == 1:  # truncated file
            source = files[int(rng.integers(len(files)))]
            data = source[:int(rng.integers(0, len(source)))]
        elif kind == 2:  # a few corrupted bytes
            data = bytearray(files[int(rng.integers(len(files)))])
            for at in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
                data[at] = int(rng.integers(256))
            data = bytes(data)
        elif kind == 3:  # a real header, then noise
            data = headers[int(rng.integers(len(headers)))] + rng.bytes(int(rng.integers(0, 500)))
        else:  # a real file's start, then noise
            source = files[int(rng.integers(len(files)))]
            cut = int(rng.integers(0, len(source)))
            data = source[:cut] + rng.bytes(int(rng.integers(0, 300)))
        inputs.append(data)
    return inputs


def test_fuzz_bytes_signatures(call, reference):
    inputs = _fuzz_inputs(200, seed=14)
    outcomes = {"answer": 0, "invalid_argument": 0}
    deadline = time.monotonic() + 120
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        for i, data in enumerate(inputs):
            # Mostly in-process; every 5th through gRPC, every 7th through REST.
            where = "grpc" if i % 5 == 0 else "rest" if i % 7 == 0 else "saved_model"
            signature = "serving_bytes_boxes" if i % 2 else "serving_bytes"
            request = {"image_bytes": np.array([data], object)}
            if signature == "serving_bytes_boxes":
                request["boxes"] = GOOD_BOX
            future = pool.submit(call, where, signature, request)
            try:
                out = future.result(timeout=max(deadline - time.monotonic(), 1))
            except Rejected:
                outcomes["invalid_argument"] += 1
                continue
            except concurrent.futures.TimeoutError:
                pytest.fail(f"fuzz input {i} ({where}) hung: {data[:40]!r}")
            assert out["keypoints"].shape == (1, 17, 2), (i, data[:40])
            assert np.all(np.isfinite(out["keypoints"])), (i, data[:40])
            outcomes["answer"] += 1
    finally:
        pool.shutdown(wait=False)
    print(f"fuzz: {len(inputs)} byte strings -> {outcomes}")
    assert sum(outcomes.values()) == len(inputs)
    for where in CHANNELS:
        assert_still_good(call, reference, where)
