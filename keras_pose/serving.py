"""Clients for a pose model served by TF Serving, over REST and gRPC.

Both send encoded images (JPEG/PNG bytes; numpy images are PNG-encoded, lossless) to the
export's bytes signatures (``serving_bytes``, or ``serving_bytes_boxes`` with person boxes; see
``keras_pose.export``) and return numpy ``keypoints`` [N, K, 2] (image pixels) and ``scores``
[N, K].

REST: ``POST http://HOST:8501/v1/models/NAME[/versions/V]:predict`` with
``{"signature_name": "serving_bytes", "instances": [{"b64": "..."}]}`` (row format) or
``{"signature_name": ..., "inputs": {"image_bytes": [{"b64": ...}], "boxes": [[x, y, w, h]]}}``
(columnar format). gRPC: ``tensorflow.serving.PredictionService/Predict`` on port 8500.

Example:

>>> client = RestClient("localhost", 8501, model="hourglass")      # doctest: +SKIP
>>> result = client.predict([open("person.jpg", "rb").read()])      # doctest: +SKIP
>>> result["keypoints"].shape                                        # doctest: +SKIP
(1, 17, 2)
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from keras_pose.keypoints import KeypointSet
from keras_pose.visualize import draw_skeleton

# The wire contract, shared by the export (which writes these signatures) and the clients;
# here because this module needs no TensorFlow.
SIGNATURE_DEFAULT = "serving_default"
SIGNATURE_BOXES = "serving_boxes"
SIGNATURE_BYTES = "serving_bytes"
SIGNATURE_BYTES_BOXES = "serving_bytes_boxes"
SIGNATURES = (SIGNATURE_DEFAULT, SIGNATURE_BOXES, SIGNATURE_BYTES, SIGNATURE_BYTES_BOXES)
OUTPUTS = ("keypoints", "scores")
MAX_BOX_VALUE = 1e7  # |x|, |y|, w, h of a person box, in pixels (finite, and no overflow)


class ServingError(RuntimeError):
    """The server could not be reached or answered with an error; the message says which."""


# -- inputs ----------------------------------------------------------------------------------


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 [H, W, 3], with an error naming the file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not an image OpenCV can read")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def encode_image(image: np.ndarray) -> bytes:
    """RGB uint8 [H, W, 3] -> PNG bytes (lossless, so the server sees the same pixels)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"images must be uint8 [H, W, 3] RGB, received {image.dtype} {list(image.shape)}"
        )
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("cv2 could not encode the image as PNG")
    return data.tobytes()


def _encoded(images: Sequence[bytes | np.ndarray] | bytes | np.ndarray) -> list[bytes]:
    if isinstance(images, (bytes, bytearray)) or isinstance(images, np.ndarray):
        images = [images]
    encoded = []
    for i, image in enumerate(images):
        if isinstance(image, (bytes, bytearray)):
            encoded.append(bytes(image))
        elif isinstance(image, np.ndarray):
            encoded.append(encode_image(image))
        else:
            raise ValueError(
                f"image {i} is a {type(image).__name__}; pass encoded bytes or uint8 RGB arrays"
            )
    if not encoded:
        raise ValueError("no images to send")
    return encoded


def check_boxes(boxes, count: int) -> np.ndarray:
    """``boxes`` as float32 ``[count, 4]`` (x, y, w, h in pixels), or a ``ValueError`` saying
    what is wrong: the rule the serving graph enforces, applied before a request is sent."""
    array = np.asarray(boxes, dtype=np.float32)
    if array.ndim == 1:
        array = array[None]
    if array.shape != (count, 4):
        raise ValueError(
            f"boxes must be float32 [N, 4] (x, y, w, h in pixels) with N = {count} images, "
            f"received shape {list(np.shape(boxes))}"
        )
    if not np.all(np.abs(array) <= MAX_BOX_VALUE) or np.any(array[:, 2:] <= 0):
        raise ValueError(f"boxes need finite values (|v| <= {MAX_BOX_VALUE:g} pixels) and a "
                         f"positive width and height: {array.tolist()}")
    return array


def _result(outputs: dict[str, Any], count: int, where: str) -> dict[str, np.ndarray]:
    missing = [key for key in OUTPUTS if key not in outputs]
    if missing:
        raise ServingError(f"{where}: the response lacks outputs {missing} (got {list(outputs)}"
                           "); is this a keras_pose export?")
    result = {
        "keypoints": np.asarray(outputs["keypoints"], np.float32),
        "scores": np.asarray(outputs["scores"], np.float32),
    }
    if result["keypoints"].ndim != 3 or result["keypoints"].shape[0] != count:
        raise ServingError(
            f"{where}: expected keypoints [{count}, K, 2], received {result['keypoints'].shape}"
        )
    return result


# -- REST ------------------------------------------------------------------------------------


class RestClient:
    """TF Serving's REST predict API.

    Args:
        host: server host.
        port: REST port (``--rest_api_port``, 8501 in the Docker image).
        model: model name (``models.config`` name).
        version: a version number, or ``None`` for the server's choice (the newest).
        timeout: seconds per request.
        scheme: ``"http"`` or ``"https"``.
    """

    def __init__(self, host: str = "localhost", port: int = 8501, *, model: str,
                 version: int | None = None, timeout: float = 30.0, scheme: str = "http"):
        if scheme not in ("http", "https"):
            raise ValueError(f"scheme must be 'http' or 'https', received {scheme!r}")
        self.base = f"{scheme}://{host}:{int(port)}/v1/models/{model}"
        if version is not None:
            self.base += f"/versions/{int(version)}"
        self.timeout = float(timeout)

    @property
    def predict_url(self) -> str:
        return self.base + ":predict"

    def _request(self, url: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            url, data=data, method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except (json.JSONDecodeError, AttributeError):
                pass
            raise ServingError(f"{url}: HTTP {error.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ServingError(
                f"cannot reach TF Serving at {url}: {reason} (is tensorflow_model_server "
                "running with --rest_api_port?)"
            ) from None
        try:
            return json.loads(payload)
        except json.JSONDecodeError:
            raise ServingError(f"{url}: the answer is not JSON: {payload[:200]!r}") from None

    def status(self) -> dict:
        """``GET /v1/models/NAME``: the versions and their states."""
        return self._request(self.base)

    def predict(self, images, boxes=None, *, columnar: bool = False) -> dict[str, np.ndarray]:
        """Keypoints of the person in each image (or box).

        Args:
            images: encoded image bytes or RGB uint8 arrays (one or a list).
            boxes: [N, 4] person boxes ``x, y, w, h`` in pixels, or ``None`` (whole images).
            columnar: send the columnar ``"inputs"`` format instead of row ``"instances"``.

        Returns:
            ``keypoints`` float32 [N, K, 2] in image pixels, ``scores`` float32 [N, K].
        """
        encoded = _encoded(images)
        boxes = None if boxes is None else check_boxes(boxes, len(encoded))
        b64 = [{"b64": base64.b64encode(data).decode("ascii")} for data in encoded]
        signature = SIGNATURE_BYTES if boxes is None else SIGNATURE_BYTES_BOXES
        if columnar:
            inputs: dict[str, Any] = {"image_bytes": b64}
            if boxes is not None:
                inputs["boxes"] = boxes.tolist()
            body = {"signature_name": signature, "inputs": inputs}
        elif boxes is None:
            body = {"signature_name": signature, "instances": b64}
        else:
            body = {"signature_name": signature, "instances": [
                {"image_bytes": item, "boxes": box} for item, box in zip(b64, boxes.tolist())]}
        answer = self._request(self.predict_url, body)
        if "outputs" in answer:
            outputs = answer["outputs"]
        elif "predictions" in answer:
            rows = answer["predictions"]
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise ServingError(f"{self.predict_url}: unexpected predictions {str(rows)[:200]}")
            outputs = {key: [row.get(key) for row in rows] for key in OUTPUTS}
        else:
            raise ServingError(f"{self.predict_url}: no 'predictions' or 'outputs' in the answer "
                               f"(keys {list(answer)})")
        return _result(outputs, len(encoded), self.predict_url)


# -- gRPC ------------------------------------------------------------------------------------


class GrpcClient:
    """TF Serving's gRPC ``PredictionService.Predict`` (``tensorflow-serving-api``).

    Args:
        host: server host.
        port: gRPC port (``--port``, 8500 in the Docker image).
        model: model name.
        version: a version number, or ``None`` for the newest.
        timeout: seconds per request.
        max_message_bytes: the channel's send/receive limit.
    """

    def __init__(self, host: str = "localhost", port: int = 8500, *, model: str,
                 version: int | None = None, timeout: float = 30.0,
                 max_message_bytes: int = 64 << 20):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.target = f"{host}:{int(port)}"
        self.model = model
        self.version = version
        self.timeout = float(timeout)
        self._channel = grpc.insecure_channel(self.target, options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ])
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def predict(self, images, boxes=None) -> dict[str, np.ndarray]:
        """Same as :meth:`RestClient.predict`, over gRPC."""
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        encoded = _encoded(images)
        boxes = None if boxes is None else check_boxes(boxes, len(encoded))
        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model
        if self.version is not None:
            request.model_spec.version.value = int(self.version)
        request.model_spec.signature_name = (
            SIGNATURE_BYTES if boxes is None else SIGNATURE_BYTES_BOXES)
        request.inputs["image_bytes"].CopyFrom(
            tf.make_tensor_proto(encoded, dtype=tf.string, shape=[len(encoded)]))
        if boxes is not None:
            request.inputs["boxes"].CopyFrom(tf.make_tensor_proto(boxes, dtype=tf.float32))
        where = f"grpc://{self.target}/{self.model}"
        try:
            response = self._stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as error:
            code = error.code() if hasattr(error, "code") else "?"
            details = error.details() if hasattr(error, "details") else str(error)
            if code == grpc.StatusCode.UNAVAILABLE:
                details += " (is tensorflow_model_server running with --port?)"
            raise ServingError(f"{where}: {code}: {details}") from None
        outputs = {key: tf.make_ndarray(response.outputs[key]) for key in response.outputs}
        return _result(outputs, len(encoded), where)


# -- drawing ---------------------------------------------------------------------------------


def draw_prediction(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                    keypoint_set: KeypointSet, *, threshold: float = 0.0,
                    box: Sequence[float] | None = None) -> np.ndarray:
    """An RGB copy of ``image`` with the predicted skeleton (and the box, if given).

    Args:
        image: RGB uint8 [H, W, 3].
        keypoints: [K, 2] image pixels.
        scores: [K] keypoint scores; keypoints at or below ``threshold`` are not drawn.
        keypoint_set: skeleton and sides.
        threshold: score threshold (heatmap peaks; coordinate models score 1).
        box: the person box ``x, y, w, h`` to outline.
    """

    # draw_skeleton draws keypoints whose value is above its threshold; 0 must stay drawable.
    values = np.asarray(scores, np.float32)
    drawn = draw_skeleton(image, keypoints, np.where(values > threshold, 1.0, 0.0), keypoint_set,
                          threshold=0.5)
    if box is not None:
        x, y, w, h = (float(v) for v in box)
        cv2.rectangle(drawn, (int(round(x)), int(round(y))),
                      (int(round(x + w)) - 1, int(round(y + h)) - 1), (255, 255, 0), 1)
    return drawn


# -- videos ------------------------------------------------------------------------------------

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def annotate_video(predict, source: str | os.PathLike, target: str | os.PathLike, *,
                   keypoint_set: KeypointSet, box: Sequence[float] | None = None,
                   threshold: float = 0.0, batch_size: int = 8,
                   progress: bool = True) -> dict[str, Any]:
    """Predict every frame of a video and write an MP4 (``mp4v``) with the skeletons drawn.

    Args:
        predict: ``predict(frames, boxes) -> {"keypoints", "scores"}`` taking a list of RGB
            uint8 frames (e.g. ``keras_pose.export.Predictor.predict`` or a client's
            ``predict``).
        source: the input video.
        target: the output ``.mp4``; written under a temporary name and renamed when complete.
        keypoint_set: skeleton for drawing.
        box: a fixed person box ``x, y, w, h`` for every frame (default: the whole frame).
        threshold: score threshold for drawing.
        batch_size: frames per ``predict`` call.
        progress: show a tqdm progress bar.

    Returns:
        ``{"video", "output", "fps", "width", "height", "frames": [{"frame", "keypoints",
        "scores"}, ...]}``.
    """
    source, target = pathlib.Path(source), pathlib.Path(target)
    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise ValueError(f"{source}: OpenCV cannot open this video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.stem}.tmp-{os.getpid()}.mp4")
    writer = cv2.VideoWriter(str(temp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        capture.release()
        raise OSError(f"OpenCV cannot write an mp4v video to {temp}")
    frames: list[dict] = []
    bar = tqdm(total=total, desc=source.name, unit="frame", disable=not progress)

    def flush(batch: list[np.ndarray]) -> None:
        boxes = None if box is None else np.tile(np.asarray(box, np.float32), (len(batch), 1))
        result = predict(batch, boxes)
        for frame, points, scores in zip(batch, result["keypoints"], result["scores"],
                                         strict=True):
            drawn = draw_prediction(frame, points, scores, keypoint_set, threshold=threshold,
                                    box=box)
            writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            frames.append({"frame": len(frames), "keypoints": points.tolist(),
                           "scores": scores.tolist()})
        bar.update(len(batch))

    try:
        batch: list[np.ndarray] = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            batch.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            if len(batch) == batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    except BaseException:
        writer.release()
        temp.unlink(missing_ok=True)
        raise
    finally:
        capture.release()
        bar.close()
    writer.release()
    if not frames:
        temp.unlink(missing_ok=True)
        raise ValueError(f"{source}: no frames could be read")
    os.replace(temp, target)
    return {"video": str(source), "output": str(target), "fps": fps, "width": width,
            "height": height, "frames": frames}
