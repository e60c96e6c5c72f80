"""What every route of the server shares: the model and its metadata, the limits, the batcher, the decode pool
and the metrics. `create_app` builds one `Service`; routes receive it through the `service` dependency."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import anyio
import numpy as np
from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Histogram

from keras_cifar.serving.batcher import Batcher, Overloaded
from keras_cifar.serving.errors import APIError

MULTIPART_OVERHEAD = 64 * 1024  # headers and boundaries on top of the files themselves


@dataclass(frozen=True)
class Limits:
    """Per request; docs/serving-guarantees.md states what each implies for memory."""

    max_upload_bytes: int
    max_batch: int
    max_pixels: int
    input_shape: tuple[int, ...]

    @property
    def max_request_bytes(self) -> int:
        return self.max_batch * self.max_upload_bytes + MULTIPART_OVERHEAD

    @property
    def max_json_bytes(self) -> int:
        # A JSON pixel is "255, " plus nesting; 24 bytes each leaves room for whitespace and long float digits.
        return max(2**20, self.max_batch * int(np.prod(self.input_shape)) * 24)

    def to_dict(self) -> dict:
        limits = asdict(self)
        del limits["input_shape"]
        return {**limits, "max_request_bytes": self.max_request_bytes, "max_json_bytes": self.max_json_bytes}


class ServerMetrics:
    """The Prometheus series of one app (its own registry, so several apps in one process do not collide)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "keras_cifar_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "keras_cifar_request_seconds", "request latency by endpoint", ["endpoint"], registry=self.registry
        )
        self.images = Counter("keras_cifar_images", "images classified", registry=self.registry)
        self.batch_sizes = Histogram(
            "keras_cifar_batch_size",
            "images per model call",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )

    def record(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)


@dataclass
class Service:
    export_dir: Path
    fmt: str
    metadata: dict
    limits: Limits
    batcher: Batcher
    workers: anyio.CapacityLimiter  # threads decoding images and parsing JSON at once
    metrics: ServerMetrics

    @property
    def labels(self) -> list[str]:
        return self.metadata["labels"]

    @property
    def model_info(self) -> dict:
        return {"architecture": self.metadata["architecture"], "format": self.fmt}

    @property
    def samples(self) -> dict[str, Path]:
        """Sample images by file name; metadata.json's paths were confined to the export folder when it was read."""
        return {Path(s["file"]).name: self.export_dir / s["file"] for s in self.metadata["samples"]}

    async def classify(self, images: np.ndarray) -> np.ndarray:
        try:
            probabilities = await self.batcher(images)
        except Overloaded as exc:
            raise APIError(503, str(exc), headers={"Retry-After": "1"}) from None
        self.metrics.images.inc(len(images))
        return probabilities

    async def in_worker(self, function, *args):
        """Run CPU-heavy work (decoding, JSON parsing) in the bounded pool, off the event loop."""
        return await anyio.to_thread.run_sync(function, *args, limiter=self.workers)


def service(request: Request) -> Service:
    """The FastAPI dependency that hands a route its app's `Service`."""
    return request.app.state.service
