"""`POST /v1/predict`: image files in (multipart), the top-k classes of each out, in file order."""

from __future__ import annotations

import time

import numpy as np
from fastapi import APIRouter, Depends, File, Query, UploadFile

from keras_cifar.export.runtime import top_k
from keras_cifar.serving import explain
from keras_cifar.serving.errors import APIError
from keras_cifar.serving.images import ImageError, decode_image
from keras_cifar.serving.service import Service, service

UPLOAD_PATH = "/v1/predict"

router = APIRouter()


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


async def explanation(svc: Service, image: np.ndarray, label: int, probability: float) -> dict:
    """The 32x32 input and its occlusion map for the predicted class (see serving/explain.py)."""
    batch = explain.occlusion_batch(image)
    occluded = (await svc.classify(batch))[:, label]
    return {
        "input_png": explain.png_data_url(image),
        "saliency": explain.saliency(probability, occluded, image.shape),
        "saliency_patch": explain.PATCH,
        "saliency_stride": explain.STRIDE,
    }


@router.post(UPLOAD_PATH)
async def predict(
    files: list[UploadFile] = File(..., description="one or more images"),
    k: int = Query(5, alias="top_k", ge=1, description="classes to return per image"),
    explain_: bool = Query(
        False, alias="explain", description="also return the 32x32 input and an occlusion map of the top class"
    ),
    svc: Service = Depends(service),
):
    limits = svc.limits
    if k > len(svc.labels):
        raise APIError(422, f"top_k is {k}; the model knows {len(svc.labels)} classes")
    if len(files) > limits.max_batch:
        raise APIError(413, f"{len(files)} files sent; at most {limits.max_batch} per request")
    start = time.perf_counter()
    names = [upload.filename or "upload" for upload in files]
    for name, upload in zip(names, files):  # every size first: a refusal costs no decoding
        if upload.size is not None and upload.size > limits.max_upload_bytes:
            raise APIError(413, f"{name} is {upload.size:,} bytes; the limit is {limits.max_upload_bytes:,}", name)
    images, sizes = [], []
    for name, upload in zip(names, files):  # one at a time: a request of 32 bombs holds one worker, not all
        image, size = await svc.in_worker(
            _read_and_decode, upload.file, name, limits.max_upload_bytes, limits.max_pixels
        )
        images.append(image)
        sizes.append(size)
    probabilities = await svc.classify(np.stack(images).astype(np.float32))
    predictions = [
        {"filename": upload.filename, "width": w, "height": h, "top_k": top_k(p, svc.labels, k)}
        for upload, (w, h), p in zip(files, sizes, probabilities)
    ]
    if explain_:  # one image at a time: each is one batch of occluded copies, within the batcher's bounds
        for row, image, p in zip(predictions, images, probabilities):
            label = int(np.argmax(p))
            row.update(await explanation(svc, image, label, float(p[label])))
    return {
        "predictions": predictions,
        "model": svc.model_info,
        "timing_ms": 1e3 * (time.perf_counter() - start),
    }
