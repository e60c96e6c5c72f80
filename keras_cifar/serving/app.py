"""The prediction API and web page for one exported model (FastAPI).

Endpoints: `POST /v1/predict` (image uploads), `POST /v1/models/cifar10:predict` (TF Serving's REST format, so
its clients work unchanged), `GET /v1/models/cifar10` (metadata), `GET /healthz`, `GET /metrics` (Prometheus)
and the page at `/`. Every bad request gets a 4xx JSON error that says what was wrong; an overloaded server
answers 503 with Retry-After; nothing a client sends can stop the server or make it answer 5xx otherwise.
docs/serving-guarantees.md states every limit and what it implies for memory.

CPU-heavy work (image decoding, JSON parsing) runs in a small pool of worker threads, never on the event loop,
so `/healthz` and cheap requests are answered while large images are being decoded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path

import anyio
import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from keras_cifar.export.runtime import open_export, top_k
from keras_cifar.serving.batcher import Batcher, Overloaded
from keras_cifar.serving.images import MAX_PIXELS, ImageError, check_input_shape, decode_image
from keras_cifar.serving.middleware import Admission, BodyLimit, Metrics

MODEL_NAME = "cifar10"
UPLOAD_PATH, TF_SERVING_PATH = "/v1/predict", f"/v1/models/{MODEL_NAME}:predict"
STATIC = Path(__file__).parent / "static"
MULTIPART_OVERHEAD = 64 * 1024  # headers and boundaries on top of the files themselves
OTHER_BODY_BYTES = 64 * 1024  # no other route reads a body
# The deepest valid TF Serving body is {"instances": [{"images": [[[r, g, b]]]}]}: 6 levels; 2 more are slack.
MAX_JSON_DEPTH = 8
MAX_NUMBER_CHARS = 32  # "0.123456789012345678" or "1.5e+02"; numpy's float64 repr takes at most 24
DEFAULT_DECODE_WORKERS = max(1, min(4, os.cpu_count() or 1))


class APIError(Exception):
    def __init__(self, status: int, message: str, filename: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.filename, self.headers = status, message, filename, headers


def error_response(status: int, message: str, filename: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = {"status": status, "message": message}
    if filename is not None:
        body["filename"] = filename
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def tf_serving_error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """TF Serving's own error shape, {"error": "message"}, which its clients parse."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


_STRUCTURAL = np.zeros(256, dtype=bool)
_STRUCTURAL[list(b'[]{}"')] = True
_NESTING = np.zeros(256, dtype=np.int8)
_NESTING[list(b"[{")], _NESTING[list(b"]}")] = 1, -1


def json_depth(body: bytes) -> int:
    """How deeply `[` and `{` nest in a JSON text, brackets inside strings ignored; linear time, vectorised.

    Run before parsing, so a body of a million `[` costs milliseconds, not a recursion error in the parser.
    """
    if b"\\" in body:  # every escape is a backslash and one character; neither can open, close or end a string
        body = re.sub(rb"\\.", b"__", body, flags=re.DOTALL)
    data = np.frombuffer(body, dtype=np.uint8)
    chars = data[_STRUCTURAL[data]]
    if not len(chars):
        return 0
    quotes = chars == ord('"')
    inside = np.logical_xor.accumulate(quotes) & ~quotes  # after an odd number of quotes: in a string
    nesting = _NESTING[chars]
    nesting[inside] = 0
    return max(0, int(np.cumsum(nesting, dtype=np.int32).max()))


class _JSONLimit(ValueError):
    pass


def _number(text: str, convert):
    if len(text) > MAX_NUMBER_CHARS:
        raise _JSONLimit(f"a number of {len(text):,} characters; numbers may have at most {MAX_NUMBER_CHARS}")
    return convert(text)


def _constant(name: str):
    raise _JSONLimit(f"{name} is not a JSON number; pixel values must be finite numbers in 0-255")


def parse_json(body: bytes):
    """A request body as JSON, with limits: nesting depth, characters per number, no NaN or Infinity."""
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise APIError(400, f"the body nests {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted")
    try:
        return json.loads(body, parse_int=lambda s: _number(s, int), parse_float=lambda s: _number(s, float),
                          parse_constant=_constant)
    except _JSONLimit as exc:
        raise APIError(400, f"the body is not accepted: {exc}") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, invalid UTF-8
        raise APIError(400, f"the body is not valid JSON ({' '.join(str(exc).split())[:200]})") from None


def _is_number(value) -> bool:
    return type(value) in (int, float)  # bool is a subclass of int, and not a pixel value


_number_types = np.frompyfunc(_is_number, 1, 1)


def instances_array(body, expected_shape) -> np.ndarray:
    """The images of a TF Serving REST request ({"instances": ...} or {"inputs": ...}), checked for shape,
    type (numbers only: strings, booleans and null are refused, as TF Serving does) and range."""
    if not isinstance(body, dict):
        raise APIError(400, 'the body must be a JSON object with "instances" or "inputs"')
    if body.get("signature_name", "serving_default") != "serving_default":
        raise APIError(400, f"unknown signature_name {str(body['signature_name'])[:100]!r}; this model has "
                            "serving_default")
    key = "instances" if "instances" in body else "inputs" if "inputs" in body else None
    if key is None:
        raise APIError(400, 'missing "instances" (row format) or "inputs" (columnar format)')
    data = body[key]
    if isinstance(data, dict):  # named input, as TF Serving allows: {"images": [...]}
        if set(data) != {"images"}:
            raise APIError(400, f'the model has one input, "images"; got {sorted(data)[:10]}')
        data = data["images"]
    if isinstance(data, list) and data and all(isinstance(row, dict) for row in data):
        if any(set(row) != {"images"} for row in data):
            raise APIError(400, 'each named instance must be {"images": [[[r, g, b], ...], ...]}')
        data = [row["images"] for row in data]
    expected = f"[N, {', '.join(map(str, expected_shape))}]"
    if not isinstance(data, list):
        raise APIError(400, f"{key} must be a nested list of numbers of shape {expected}")
    try:
        values = np.array(data, dtype=object)  # ragged lists stay lists, and fail the shape check below
    except (ValueError, TypeError):
        raise APIError(400, f"{key} must be a nested list of numbers of shape {expected}") from None
    if values.ndim == len(expected_shape):
        values = values[None]
    if values.ndim != len(expected_shape) + 1 or tuple(values.shape[1:]) != tuple(expected_shape) or not len(values):
        raise APIError(400, f"{key} has shape {list(values.shape)}; expected {expected} RGB pixels")
    if not np.all(_number_types(values).astype(bool)):
        raise APIError(400, f"{key} must hold numbers only (no strings, booleans or null): pixel values are "
                            "numbers in 0-255")
    with np.errstate(over="ignore", invalid="ignore"):
        array = values.astype(np.float32)
    if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 255:
        raise APIError(400, "pixel values must be finite numbers in 0-255")
    return array


def _read_and_decode(file, name: str, max_upload_bytes: int, max_pixels: int):
    """In a worker thread: one uploaded file's bytes (at most the limit), decoded."""
    file.seek(0)
    data = file.read(max_upload_bytes + 1)
    if len(data) > max_upload_bytes:
        raise APIError(413, f"{name} is larger than the {max_upload_bytes:,}-byte limit", name)
    try:
        return decode_image(data, name, max_pixels)
    except ImageError as exc:
        raise APIError(422, str(exc), name) from None


def create_app(export_dir, fmt: str | None = None, max_upload_bytes: int = 5 * 2**20, max_batch: int = 32,
               batch_window_ms: float = 0.0, *, max_pixels: int = MAX_PIXELS,
               decode_workers: int = DEFAULT_DECODE_WORKERS, max_in_flight: int = 32,
               max_body_bytes_in_flight: int = 256 * 2**20, max_queued_images: int | None = None) -> FastAPI:
    """The app for one export folder. Limits (see docs/serving-guarantees.md):

    max_upload_bytes, max_batch: per image file and images per request; max_pixels: per image, from its header;
    decode_workers: threads decoding images and parsing JSON at once; max_in_flight: API requests being received
    or answered at once; max_body_bytes_in_flight: bytes of their bodies held at once; max_queued_images: images
    waiting for or in a model call (default 8 x max_batch). Past the last three the server answers 503.
    """
    export_dir = Path(export_dir)
    predictor, fmt, metadata = open_export(export_dir, fmt)
    labels, input_shape = metadata["labels"], metadata["input_shape"]
    check_input_shape(input_shape)
    # A JSON pixel is "255, " plus nesting; 24 bytes each leaves room for whitespace and long float digits.
    max_json_bytes = max(2**20, max_batch * int(np.prod(input_shape)) * 24)
    max_upload_request = max_batch * max_upload_bytes + MULTIPART_OVERHEAD
    registry = CollectorRegistry()
    requests = Counter("keras_cifar_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                       registry=registry)
    latency = Histogram("keras_cifar_request_seconds", "request latency by endpoint", ["endpoint"], registry=registry)
    images_total = Counter("keras_cifar_images", "images classified", registry=registry)
    batch_sizes = Histogram("keras_cifar_batch_size", "images per model call", registry=registry,
                            buckets=(1, 2, 4, 8, 16, 32, 64, 128))
    batcher = Batcher(predictor.predict, max_batch=max(max_batch, 64), window_ms=batch_window_ms,
                      on_batch=batch_sizes.observe, max_pending=max_queued_images or 8 * max_batch)
    workers = anyio.CapacityLimiter(decode_workers)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="keras-cifar", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.metadata, app.state.format, app.state.batcher = metadata, fmt, batcher
    model_info = {"architecture": metadata["architecture"], "format": fmt}
    samples = {Path(s["file"]).name: export_dir / s["file"] for s in metadata["samples"]}
    limits = {"max_upload_bytes": max_upload_bytes, "max_batch": max_batch, "max_pixels": max_pixels,
              "max_request_bytes": max_upload_request, "max_json_bytes": max_json_bytes}
    app.state.limits = limits

    def admission_error(path: str, status: int, message: str) -> JSONResponse:
        return tf_serving_error(status, message) if path == TF_SERVING_PATH else error_response(status, message)

    def record(endpoint: str, status: int, seconds: float) -> None:
        requests.labels(endpoint, str(status)).inc()
        latency.labels(endpoint).observe(seconds)

    api_paths = (UPLOAD_PATH, TF_SERVING_PATH)
    app.add_middleware(Admission, limits={
        UPLOAD_PATH: BodyLimit(max_upload_request, f"at most {max_batch} images of {max_upload_bytes:,} bytes each "
                                                   f"are accepted ({max_upload_request:,} bytes with the form)"),
        TF_SERVING_PATH: BodyLimit(max_json_bytes, f"at most {max_json_bytes:,} bytes of JSON are accepted")},
        default_limit=BodyLimit(OTHER_BODY_BYTES, "this route takes no body"), api_paths=api_paths,
        error=admission_error, max_in_flight=max_in_flight, max_body_bytes_in_flight=max_body_bytes_in_flight)
    app.add_middleware(Metrics, record=record, api_paths=api_paths)  # added last: outermost, sees every answer

    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        return error_response(exc.status, exc.message, exc.filename, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return error_response(422, f"invalid request ({problems[:500]})")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        return error_response(500, f"internal error ({type(exc).__name__}); the server is still running")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/samples/{name}", include_in_schema=False)
    async def sample(name: str):
        if name not in samples:
            raise APIError(404, f"no sample named {name[:100]!r}")
        return FileResponse(samples[name], media_type="image/png")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "model": model_info}

    @app.get("/metrics", include_in_schema=False)
    async def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(f"/v1/models/{MODEL_NAME}")
    async def model_metadata():
        """Our metadata, plus TF Serving's model-status field so its clients' health checks work too."""
        return {**metadata, "format": fmt,
                "metrics": {"accuracy": metadata["formats"].get(fmt, {}).get("accuracy"),
                            "num_test_images": metadata.get("num_test_images")},
                "samples": [{"label": s["label"], "url": f"/samples/{Path(s['file']).name}"}
                            for s in metadata["samples"]],
                "limits": limits,
                "model_version_status": [{"version": "1", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}

    async def classify(images: np.ndarray) -> np.ndarray:
        try:
            return await batcher(images)
        except Overloaded as exc:
            raise APIError(503, str(exc), headers={"Retry-After": "1"}) from None

    @app.post(UPLOAD_PATH)
    async def predict(files: list[UploadFile] = File(..., description="one or more images"),
                      top_k_: int = Query(5, alias="top_k", ge=1, le=len(labels))):
        if len(files) > max_batch:
            raise APIError(413, f"{len(files)} files sent; at most {max_batch} per request")
        start = time.perf_counter()
        names = [upload.filename or "upload" for upload in files]
        for name, upload in zip(names, files):  # every size first: a refusal costs no decoding
            if upload.size is not None and upload.size > max_upload_bytes:
                raise APIError(413, f"{name} is {upload.size:,} bytes; the limit is {max_upload_bytes:,}", name)
        images, sizes = [], []
        for name, upload in zip(names, files):  # one at a time: a request of 32 bombs holds one worker, not all
            image, size = await anyio.to_thread.run_sync(_read_and_decode, upload.file, name, max_upload_bytes,
                                                         max_pixels, limiter=workers)
            images.append(image)
            sizes.append(size)
        probabilities = await classify(np.stack(images).astype(np.float32))
        images_total.inc(len(images))
        return {"predictions": [{"filename": upload.filename, "width": w, "height": h,
                                 "top_k": top_k(p, labels, top_k_)}
                                for upload, (w, h), p in zip(files, sizes, probabilities)],
                "model": model_info, "timing_ms": 1e3 * (time.perf_counter() - start)}

    def tf_serving_images(body: bytes) -> np.ndarray:
        return instances_array(parse_json(body), input_shape)

    @app.post(TF_SERVING_PATH)
    async def tf_serving_predict(request: Request):
        """TF Serving's REST predict: {"instances": [N x 32 x 32 x 3]} -> {"predictions": [N x classes]}."""
        try:
            images = await anyio.to_thread.run_sync(tf_serving_images, await request.body(), limiter=workers)
            if len(images) > max_batch:
                raise APIError(413, f"{len(images)} instances sent; at most {max_batch}")
            probabilities = await classify(images)
        except APIError as exc:
            return tf_serving_error(exc.status, exc.message, exc.headers)
        images_total.inc(len(images))
        return {"predictions": probabilities.tolist()}

    return app
