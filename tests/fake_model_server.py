"""A test double of ``tensorflow_model_server``: REST and gRPC Predict over SavedModels, in-process.

The real model server cannot be installed here, so the serving client is tested against this
stand-in. It implements the parts of TF Serving's API the client uses, with TF Serving's request
and response formats:

- ``GET  /v1/models/NAME[/versions/V]`` -> ``{"model_version_status": [...]}``
- ``POST /v1/models/NAME[/versions/V]:predict`` with row (``"instances"``) or columnar
  (``"inputs"``) JSON, ``{"b64": ...}`` objects for binary strings, ``"signature_name"``
  (default ``serving_default``); errors as ``{"error": "..."}`` with HTTP 400 / 404.
- gRPC ``tensorflow.serving.PredictionService/Predict`` (``tensorflow-serving-api`` protos).

It binds 127.0.0.1 only, on ephemeral ports, with one REST thread and a 2-thread gRPC pool,
a request size limit and socket timeouts. Not for production: use ``tensorflow/serving``.
"""

from __future__ import annotations

import base64
import http.server
import json
import pathlib
import re
import threading
from concurrent import futures
from typing import Any

import numpy as np
import tensorflow as tf

from keras_pose import export

MAX_BODY_BYTES = 32 << 20
_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
                   r"(?P<verb>:predict)?$")


def _client_message(message: str) -> str:
    """The op's own message (what TF Serving answers), without eager TF's wrapping lines."""
    skip = ("Graph execution error", "Detected at node", "<stack traces", "[[{{node")
    for line in message.splitlines():
        line = line.strip()
        if line and not line.startswith(skip) and "(most recent call last)" not in line:
            return re.sub(r"\s*\[Op:[^\]]*\]$", "", line)
    return message.strip()


class RequestError(Exception):
    """A bad request: HTTP status and TF Serving-style message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class FakeModelServer:
    """Serve every version of the given models over REST and gRPC until :meth:`stop`.

    Args:
        models: ``{name: base_path}`` (every version served), or the path of a
            ``models.config`` (its version policies apply: the latest version by default).
        host: bind address (127.0.0.1: never reachable from outside).
    """

    def __init__(self, models: dict[str, str | pathlib.Path] | str | pathlib.Path,
                 host: str = "127.0.0.1"):
        policies = {}
        if not isinstance(models, dict):
            config = export.read_models_config(models)
            models = {c.name: c.base_path for c in config.model_config_list.config}
            policies = {c.name: c.model_version_policy for c in config.model_config_list.config}
        self.host = host
        self.models: dict[str, dict[int, Any]] = {}
        for name, base in models.items():
            versions = export.list_versions(base)
            if not versions:
                raise ValueError(f"model {name!r}: no versions under {base}")
            # TF Serving's version policy: latest 1 unless the config says otherwise.
            policy = policies.get(name)
            if policy is not None and policy.HasField("specific"):
                versions = [v for v in versions if v in set(policy.specific.versions)]
            elif policy is None or not policy.HasField("all"):
                latest = policy.latest.num_versions if policy is not None else 0
                versions = versions[-max(latest, 1):]
            self.models[name] = {v: tf.saved_model.load(str(pathlib.Path(base) / str(v)))
                                 for v in versions}
        self.rest_port: int | None = None
        self.grpc_port: int | None = None
        self._http = None
        self._grpc = None
        self._thread = None

    # -- model lookup and execution (shared by both protocols) --------------------------------

    def _loaded(self, name: str, version: int | None):
        if name not in self.models:
            raise RequestError(404, f"Servable not found for request: Latest({name})")
        versions = self.models[name]
        if version is None:
            return max(versions), versions[max(versions)]
        if version not in versions:
            raise RequestError(404, f"Servable not found for request: Specific({name}, {version})")
        return version, versions[version]

    @staticmethod
    def _signature(loaded, signature_name: str):
        if signature_name not in loaded.signatures:
            raise RequestError(
                400, f'Serving signature name: "{signature_name}" not found in signature def')
        function = loaded.signatures[signature_name]
        specs = function.structured_input_signature[1]
        return function, specs

    @staticmethod
    def _run(function, specs, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        missing = sorted(set(specs) - set(inputs))
        extra = sorted(set(inputs) - set(specs))
        if missing or extra:
            raise RequestError(400, f"input names mismatch: missing {missing}, unexpected {extra}"
                               f"; the signature takes {sorted(specs)}")
        tensors = {}
        for key, spec in specs.items():
            value = inputs[key]
            if isinstance(value, np.ndarray) and value.dtype != object and \
                    tf.as_dtype(value.dtype) != spec.dtype:  # a typed (gRPC) tensor: no casts
                raise RequestError(400, f"Expects arg {key} to be {spec.dtype.name} but "
                                   f"{tf.as_dtype(value.dtype).name} is provided")
            try:
                tensor = tf.convert_to_tensor(value, dtype=spec.dtype)
            except (TypeError, ValueError) as error:
                raise RequestError(
                    400, f"input {key!r}: expects {spec.dtype.name}: {str(error)[:160]}") from None
            if tensor.dtype != spec.dtype:
                raise RequestError(400, f"Expects arg {key} to be {spec.dtype.name} but "
                                   f"{tensor.dtype.name} is provided")
            tensors[key] = tensor
        try:
            outputs = function(**tensors)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            message = getattr(error, "message", None) or str(error)
            raise RequestError(400, _client_message(message) or repr(error)) from None
        return {key: value.numpy() for key, value in outputs.items()}

    # -- REST ---------------------------------------------------------------------------------

    @staticmethod
    def _decode_json_value(value):
        if isinstance(value, dict) and set(value) == {"b64"}:
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (ValueError, TypeError):
                raise RequestError(400, "invalid base64 in a {\"b64\": ...} value") from None
        if isinstance(value, list):
            return [FakeModelServer._decode_json_value(v) for v in value]
        if isinstance(value, dict):
            raise RequestError(400, f"unexpected JSON object {str(value)[:80]}")
        return value

    def rest_predict(self, name: str, version: int | None, body: dict) -> dict:
        """The JSON answer of ``POST /v1/models/NAME[/versions/V]:predict``."""
        _, loaded = self._loaded(name, version)
        function, specs = self._signature(loaded, body.get("signature_name", "serving_default"))
        names = sorted(specs)
        if ("instances" in body) == ("inputs" in body):
            raise RequestError(400, "JSON Value must have exactly one of 'instances' (row) or "
                               "'inputs' (columnar)")
        if "instances" in body:
            rows = body["instances"]
            if not isinstance(rows, list) or not rows:
                raise RequestError(400, "'instances' must be a non-empty list")
            inputs: dict[str, list] = {key: [] for key in names}
            for row in rows:
                if isinstance(row, dict) and set(row) == set(names):
                    for key in names:
                        inputs[key].append(self._decode_json_value(row[key]))
                elif len(names) == 1:
                    inputs[names[0]].append(self._decode_json_value(row))
                else:
                    raise RequestError(400, f"each instance must be an object with the inputs "
                                       f"{names}")
            outputs = self._run(function, specs, inputs)
            keys = sorted(outputs)
            count = len(rows)
            if any(len(outputs[k]) != count for k in keys):
                raise RequestError(400, "outputs do not have one row per instance")
            if len(keys) == 1:
                return {"predictions": outputs[keys[0]].tolist()}
            return {"predictions": [{k: outputs[k][i].tolist() for k in keys}
                                    for i in range(count)]}
        columns = body["inputs"]
        if len(names) == 1 and not (isinstance(columns, dict) and set(columns) == set(names)):
            columns = {names[0]: columns}  # a single input may be given bare
        if not isinstance(columns, dict):
            raise RequestError(400, f"'inputs' must be an object with {names}")
        inputs = {key: self._decode_json_value(value) for key, value in columns.items()}
        outputs = self._run(function, specs, inputs)
        if len(outputs) == 1:
            return {"outputs": next(iter(outputs.values())).tolist()}
        return {"outputs": {k: v.tolist() for k, v in outputs.items()}}

    def rest_status(self, name: str, version: int | None) -> dict:
        if name not in self.models:
            raise RequestError(404, f"Could not find any versions of model {name}")
        versions = [version] if version is not None else sorted(self.models[name])
        for v in versions:
            self._loaded(name, v)
        return {"model_version_status": [
            {"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK",
                                                                  "error_message": ""}}
            for v in versions]}

    def _make_handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 30  # seconds per socket operation: a stalled client cannot hang the test

            def log_message(self, *args):  # quiet
                pass

            def _answer(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self):
                match = _PATH.match(self.path)
                if not match:
                    raise RequestError(404, f"Malformed request: {self.command} {self.path}")
                version = match.group("version")
                return (match.group("name"), int(version) if version else None,
                        match.group("verb"))

            def do_GET(self):
                try:
                    name, version, verb = self._route()
                    if verb:
                        raise RequestError(405, "predict needs POST")
                    self._answer(200, server.rest_status(name, version))
                except RequestError as error:
                    self._answer(error.status, {"error": str(error)})

            def do_POST(self):
                try:
                    name, version, verb = self._route()
                    if not verb:
                        raise RequestError(404, f"Malformed request: POST {self.path}")
                    length = int(self.headers.get("Content-Length") or 0)
                    if length <= 0 or length > MAX_BODY_BYTES:
                        raise RequestError(413 if length else 400,
                                           f"request body of {length} bytes (limit "
                                           f"{MAX_BODY_BYTES})")
                    try:
                        body = json.loads(self.rfile.read(length))
                    except json.JSONDecodeError as error:
                        raise RequestError(400, f"JSON Parse error: {error}") from None
                    if not isinstance(body, dict):
                        raise RequestError(400, "the request must be a JSON object")
                    self._answer(200, server.rest_predict(name, version, body))
                except RequestError as error:
                    self._answer(error.status, {"error": str(error)})

        return Handler

    # -- gRPC ---------------------------------------------------------------------------------

    def _make_servicer(self):
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        server = self

        class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
            def Predict(self, request, context):  # noqa: N802 (the proto's name)
                codes = {404: grpc.StatusCode.NOT_FOUND, 400: grpc.StatusCode.INVALID_ARGUMENT}
                try:
                    version = (request.model_spec.version.value
                               if request.model_spec.HasField("version") else None)
                    number, loaded = server._loaded(request.model_spec.name, version)
                    signature = request.model_spec.signature_name or "serving_default"
                    function, specs = server._signature(loaded, signature)
                    inputs = {key: tf.make_ndarray(proto) for key, proto in
                              request.inputs.items()}
                    outputs = server._run(function, specs, inputs)
                except RequestError as error:
                    context.abort(codes.get(error.status, grpc.StatusCode.UNKNOWN), str(error))
                response = predict_pb2.PredictResponse()
                response.model_spec.name = request.model_spec.name
                response.model_spec.version.value = number
                response.model_spec.signature_name = signature
                for key, value in outputs.items():
                    response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
                return response

        return Servicer()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeModelServer:
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self._http = http.server.HTTPServer((self.host, 0), self._make_handler())
        self.rest_port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True,
                                        name="fake-model-server-rest")
        self._thread.start()
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=[
            ("grpc.max_receive_message_length", MAX_BODY_BYTES),
            ("grpc.max_send_message_length", MAX_BODY_BYTES),
        ])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            self._make_servicer(), self._grpc)
        self.grpc_port = self._grpc.add_insecure_port(f"{self.host}:0")
        self._grpc.start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._thread.join(timeout=10)
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait(timeout=10)
            self._grpc = None

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
