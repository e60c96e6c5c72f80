"""The prediction API and web page for one exported model (FastAPI).

Endpoints: `POST /v1/predict` (image uploads), `POST /v1/models/cifar10:predict` (TF Serving's REST format, so
its clients work unchanged), `GET /v1/models/cifar10` (metadata), `GET /healthz`, `GET /metrics` (Prometheus)
and the page at `/`. Every bad request gets a 4xx JSON error that says what was wrong; nothing a client sends
can stop the server.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from keras_cifar.export.runtime import open_export, top_k
from keras_cifar.serving.batcher import Batcher
from keras_cifar.serving.images import ImageError, decode_image

MODEL_NAME = "cifar10"
STATIC = Path(__file__).parent / "static"
MULTIPART_OVERHEAD = 64 * 1024  # headers and boundaries on top of the files themselves


class APIError(Exception):
    def __init__(self, status: int, message: str, filename: str | None = None):
        super().__init__(message)
        self.status, self.message, self.filename = status, message, filename


def error_response(status: int, message: str, filename: str | None = None) -> JSONResponse:
    body = {"status": status, "message": message}
    if filename is not None:
        body["filename"] = filename
    return JSONResponse({"error": body}, status_code=status)



def instances_array(body, expected_shape) -> np.ndarray:
    """The images of a TF Serving REST request ({"instances": ...} or {"inputs": ...}), checked for shape and range."""
    if not isinstance(body, dict):
        raise APIError(400, 'the body must be a JSON object with "instances" or "inputs"')
    if body.get("signature_name", "serving_default") != "serving_default":
        raise APIError(400, f"unknown signature_name {body['signature_name']!r}; this model has serving_default")
    key = "instances" if "instances" in body else "inputs" if "inputs" in body else None
    if key is None:
        raise APIError(400, 'missing "instances" (row format) or "inputs" (columnar format)')
    data = body[key]
    if isinstance(data, dict):  # named input, as TF Serving allows: {"images": [...]}
        if set(data) != {"images"}:
            raise APIError(400, f'the model has one input, "images"; got {sorted(data)}')
        data = data["images"]
    if isinstance(data, list) and data and all(isinstance(row, dict) for row in data):
        if any(set(row) != {"images"} for row in data):
            raise APIError(400, 'each named instance must be {"images": [[[r, g, b], ...], ...]}')
        data = [row["images"] for row in data]
    try:
        array = np.asarray(data, dtype=np.float32)
    except (ValueError, TypeError):
        raise APIError(400, f"{key} must be a nested list of numbers of shape [N, {', '.join(map(str, expected_shape))}]")
    if array.ndim == len(expected_shape):
        array = array[None]
    if array.ndim != len(expected_shape) + 1 or tuple(array.shape[1:]) != tuple(expected_shape) or not len(array):
        raise APIError(400, f"{key} has shape {list(array.shape)}; expected [N, {', '.join(map(str, expected_shape))}] "
                            "RGB pixels")
    if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 255:
        raise APIError(400, "pixel values must be finite numbers in 0-255")
    return array


def create_app(export_dir, fmt: str | None = None, max_upload_bytes: int = 5 * 2**20, max_batch: int = 32,
               batch_window_ms: float = 0.0) -> FastAPI:
    export_dir = Path(export_dir)
    predictor, fmt, metadata = open_export(export_dir, fmt)
    labels, input_shape = metadata["labels"], metadata["input_shape"]
    # A JSON pixel is "255, " plus nesting; 24 bytes each leaves room for whitespace and long float digits.
    max_json_bytes = max(2**20, max_batch * int(np.prod(input_shape)) * 24)
    registry = CollectorRegistry()
    requests = Counter("keras_cifar_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                       registry=registry)
    latency = Histogram("keras_cifar_request_seconds", "request latency by endpoint", ["endpoint"], registry=registry)
    images_total = Counter("keras_cifar_images", "images classified", registry=registry)
    batch_sizes = Histogram("keras_cifar_batch_size", "images per model call", registry=registry,
                            buckets=(1, 2, 4, 8, 16, 32, 64, 128))
    batcher = Batcher(predictor.predict, max_batch=max(max_batch, 64), window_ms=batch_window_ms,
                      on_batch=batch_sizes.observe)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="keras-cifar", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.metadata, app.state.format = metadata, fmt
    model_info = {"architecture": metadata["architecture"], "format": fmt}
    samples = {Path(s["file"]).name: export_dir / s["file"] for s in metadata.get("samples", [])}

    @app.middleware("http")
    async def record(request: Request, call_next):
        start, endpoint = time.perf_counter(), "rejected"
        length = request.headers.get("content-length")
        uploads = request.url.path == "/v1/predict"
        limit = max_batch * max_upload_bytes + MULTIPART_OVERHEAD if uploads else max_json_bytes
        if request.method == "POST" and length and length.isdigit() and int(length) > limit:
            response = error_response(413, f"the request is {int(length):,} bytes; at most " + (
                f"{max_batch} images of {max_upload_bytes:,} bytes each are accepted" if uploads else
                f"{limit:,} bytes of JSON are accepted"))
        else:
            response = await call_next(request)
            route = request.scope.get("route")
            endpoint = route.path if route else "unmatched"
        requests.labels(endpoint, str(response.status_code)).inc()
        latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        return error_response(exc.status, exc.message, exc.filename)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return error_response(422, f"invalid request ({problems})")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail))

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
            raise APIError(404, f"no sample named {name!r}")
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
                            for s in metadata.get("samples", [])],
                "limits": {"max_upload_bytes": max_upload_bytes, "max_batch": max_batch},
                "model_version_status": [{"version": "1", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}

    @app.post("/v1/predict")
    async def predict(files: list[UploadFile] = File(..., description="one or more images"),
                      top_k_: int = Query(5, alias="top_k", ge=1, le=len(labels))):
        if len(files) > max_batch:
            raise APIError(413, f"{len(files)} files sent; at most {max_batch} per request")
        start = time.perf_counter()
        images, sizes = [], []
        for upload in files:
            name = upload.filename or "upload"
            if upload.size is not None and upload.size > max_upload_bytes:
                raise APIError(413, f"{name} is {upload.size:,} bytes; the limit is {max_upload_bytes:,}", name)
            data = await upload.read(max_upload_bytes + 1)
            if len(data) > max_upload_bytes:
                raise APIError(413, f"{name} is larger than the {max_upload_bytes:,}-byte limit", name)
            try:
                image, size = decode_image(data, name)
            except ImageError as exc:
                raise APIError(422, str(exc), name) from None
            images.append(image)
            sizes.append(size)
        probabilities = await batcher(np.stack(images).astype(np.float32))
        images_total.inc(len(images))
        return {"predictions": [{"filename": upload.filename, "width": w, "height": h,
                                 "top_k": top_k(p, labels, top_k_)}
                                for upload, (w, h), p in zip(files, sizes, probabilities)],
                "model": model_info, "timing_ms": 1e3 * (time.perf_counter() - start)}

    @app.post(f"/v1/models/{MODEL_NAME}:predict")
    async def tf_serving_predict(request: Request):
        """TF Serving's REST predict: {"instances": [N x 32 x 32 x 3]} -> {"predictions": [N x classes]}."""
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return JSONResponse({"error": f"the body is not valid JSON ({exc})"}, status_code=400)
        try:
            images = instances_array(body, input_shape)
        except APIError as exc:  # TF Serving's own error shape, which its clients parse
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        if len(images) > max_batch:
            return JSONResponse({"error": f"{len(images)} instances sent; at most {max_batch}"}, status_code=413)
        probabilities = await batcher(images)
        images_total.inc(len(images))
        return {"predictions": probabilities.tolist()}

    return app
