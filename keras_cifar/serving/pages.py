"""The web page and what it and operators read: `/`, `/static`, `/samples/{name}`, `GET /v1/model` (metadata,
limits, samples), `/healthz` and `/metrics` (Prometheus)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from keras_cifar.serving.errors import APIError
from keras_cifar.serving.service import Service, service

STATIC = Path(__file__).parent / "static"
INFO_PATH = "/v1/model"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def page():
    return FileResponse(STATIC / "index.html")


@router.get("/samples/{name}", include_in_schema=False)
async def sample(name: str, svc: Service = Depends(service)):
    samples = svc.samples
    if name not in samples:
        raise APIError(404, f"no sample named {name[:100]!r}")
    return FileResponse(samples[name], media_type="image/png")


@router.get("/healthz")
async def healthz(svc: Service = Depends(service)):
    return {"status": "ok", "model": svc.model_info}


@router.get("/metrics", include_in_schema=False)
async def metrics(svc: Service = Depends(service)):
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get(INFO_PATH)
async def model_info(svc: Service = Depends(service)):
    """Everything the page shows: metadata, the served file's test accuracy, limits and sample URLs."""
    metadata = svc.metadata
    return {
        **metadata,
        "format": svc.fmt,
        "metrics": {
            "accuracy": metadata["formats"].get(svc.fmt, {}).get("accuracy"),
            "num_test_images": metadata.get("num_test_images"),
        },
        "samples": [{"label": s["label"], "url": f"/samples/{Path(s['file']).name}"} for s in metadata["samples"]],
        "limits": svc.limits.to_dict(),
    }
