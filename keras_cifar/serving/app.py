"""The prediction API and web page for one exported model (FastAPI): `create_app` wires the routers (`uploads`,
`tfserving`, `pages`) to one `Service`, behind the admission and metrics middlewares.

Every bad request gets a 4xx JSON error that says what was wrong; an overloaded server answers 503 with
Retry-After; nothing a client sends can stop the server or make it answer 5xx otherwise. CPU-heavy work (image
decoding, JSON parsing) runs in a small pool of worker threads, never on the event loop, so `/healthz` and cheap
requests are answered while large images are being decoded. docs/serving-guarantees.md states every limit.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from keras_cifar.export.runtime import open_model
from keras_cifar.serving import pages, tfserving, uploads
from keras_cifar.serving.batcher import Batcher
from keras_cifar.serving.errors import APIError, error_response, tf_serving_error
from keras_cifar.serving.images import MAX_PIXELS, check_input_shape
from keras_cifar.serving.middleware import Admission, BodyLimit, Metrics
from keras_cifar.serving.service import Limits, ServerMetrics, Service

OTHER_BODY_BYTES = 64 * 1024  # no other route reads a body
DEFAULT_DECODE_WORKERS = max(1, min(4, os.cpu_count() or 1))


def _speaks_tf_serving(path: str) -> bool:
    return path.startswith("/v1/models/")


def create_app(
    export_dir,
    fmt: str | None = None,
    max_upload_bytes: int = 5 * 2**20,
    max_batch: int = 32,
    batch_window_ms: float = 0.0,
    *,
    max_pixels: int = MAX_PIXELS,
    decode_workers: int = DEFAULT_DECODE_WORKERS,
    max_in_flight: int = 32,
    max_body_bytes_in_flight: int = 256 * 2**20,
    max_queued_images: int | None = None,
) -> FastAPI:
    """The app for one export folder, run directory or `.keras` file. Limits (see docs/serving-guarantees.md):

    max_upload_bytes, max_batch: per image file and images per request; max_pixels: per image, from its header;
    decode_workers: threads decoding images and parsing JSON at once; max_in_flight: API requests being received
    or answered at once; max_body_bytes_in_flight: bytes of their bodies held at once; max_queued_images: images
    waiting for or in a model call (default 8 x max_batch, at least 64: one explained image is 49). Past the last
    three the server answers 503.
    """
    export_dir = Path(export_dir)
    predictor, fmt, metadata = open_model(export_dir, fmt)
    check_input_shape(metadata["input_shape"])
    limits = Limits(max_upload_bytes, max_batch, max_pixels, tuple(metadata["input_shape"]))
    metrics = ServerMetrics()
    batcher = Batcher(
        predictor.predict,
        max_batch=max(max_batch, 64),
        window_ms=batch_window_ms,
        on_batch=metrics.batch_sizes.observe,
        max_pending=max_queued_images or max(8 * max_batch, 64),
    )
    svc = Service(export_dir, fmt, metadata, limits, batcher, anyio.CapacityLimiter(decode_workers), metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="keras-cifar", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.service, app.state.metadata, app.state.format = svc, metadata, fmt
    app.include_router(uploads.router)
    app.include_router(tfserving.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")

    def error(path: str, status: int, message: str, headers: dict | None = None):
        return (
            tf_serving_error(status, message, headers)
            if _speaks_tf_serving(path)
            else error_response(status, message, headers=headers)
        )

    api_paths = (uploads.UPLOAD_PATH, *tfserving.PREDICT_PATHS)
    json_limit = BodyLimit(limits.max_json_bytes, f"at most {limits.max_json_bytes:,} bytes of JSON are accepted")
    app.add_middleware(
        Admission,
        limits={
            uploads.UPLOAD_PATH: BodyLimit(
                limits.max_request_bytes,
                f"at most {max_batch} images of {max_upload_bytes:,} bytes each are accepted "
                f"({limits.max_request_bytes:,} bytes with the form)",
            ),
            **dict.fromkeys(tfserving.PREDICT_PATHS, json_limit),
        },
        default_limit=BodyLimit(OTHER_BODY_BYTES, "this route takes no body"),
        api_paths=api_paths,
        error=error,
        max_in_flight=max_in_flight,
        max_body_bytes_in_flight=max_body_bytes_in_flight,
    )
    app.add_middleware(Metrics, record=metrics.record, api_paths=api_paths)  # added last: outermost, sees all

    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        return error_response(exc.status, exc.message, exc.filename, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return error(request.url.path, 422, f"invalid request ({problems[:500]})")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        message = str(exc.detail)
        if exc.status_code == 404 and _speaks_tf_serving(request.url.path):
            message = f"Servable not found for request: {request.url.path[len('/v1/models/') :][:100]}"
        return error(request.url.path, exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        return error(request.url.path, 500, f"internal error ({type(exc).__name__}); the server is still running")

    return app
