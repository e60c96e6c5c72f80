"""TF Serving's REST API for the one model this server holds, so TF Serving's clients work unchanged.

Model status `GET /v1/models/cifar10[/versions/1]`, metadata `GET …/metadata` (the serving_default signature:
float32 images [-1, 32, 32, 3] in, probabilities [-1, 10] out) and predict `POST …:predict` in both formats: row
(`{"instances": …}` -> `{"predictions": …}`) and columnar (`{"inputs": …}` -> `{"outputs": …}`). The model has one
input and one output, so, as TF Serving does, neither is named in a response. Errors are `{"error": "message"}`.
Request bodies are parsed with limits (nesting depth, digits per number, numbers only) in the decode pool.
"""

from __future__ import annotations

import json
import re

import numpy as np
from fastapi import APIRouter, Depends, Request

from keras_cifar.export.formats import IMAGE_SIGNATURE
from keras_cifar.serving.errors import APIError, tf_serving_error
from keras_cifar.serving.service import Service, service

MODEL_NAME, VERSION = "cifar10", "1"
MODEL_PATH = f"/v1/models/{MODEL_NAME}"
PREDICT_PATHS = (f"{MODEL_PATH}:predict", f"{MODEL_PATH}/versions/{VERSION}:predict")
# The deepest valid body is {"instances": [{"images": [[[r, g, b]]]}]}: 6 levels; 2 more are slack.
MAX_JSON_DEPTH = 8
MAX_NUMBER_CHARS = 32  # "0.123456789012345678" or "1.5e+02"; numpy's float64 repr takes at most 24
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"  # the SavedModel's serving_default signature

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
        return json.loads(
            body, parse_int=lambda s: _number(s, int), parse_float=lambda s: _number(s, float), parse_constant=_constant
        )
    except _JSONLimit as exc:
        raise APIError(400, f"the body is not accepted: {exc}") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, invalid UTF-8
        raise APIError(400, f"the body is not valid JSON ({' '.join(str(exc).split())[:200]})") from None


def _is_number(value) -> bool:
    return type(value) in (int, float)  # bool is a subclass of int, and not a pixel value


_number_types = np.frompyfunc(_is_number, 1, 1)


def instances_array(body, expected_shape) -> tuple[np.ndarray, str]:
    """The images of a predict request and its format ("instances": row, "inputs": columnar), checked for shape,
    type (numbers only: strings, booleans and null are refused, as TF Serving does) and range."""
    if not isinstance(body, dict):
        raise APIError(400, 'the body must be a JSON object with "instances" or "inputs"')
    if body.get("signature_name", IMAGE_SIGNATURE) != IMAGE_SIGNATURE:
        raise APIError(
            400, f"unknown signature_name {str(body['signature_name'])[:100]!r}; this model has {IMAGE_SIGNATURE}"
        )
    key = "instances" if "instances" in body else "inputs" if "inputs" in body else None
    if key is None:
        raise APIError(400, 'missing "instances" (row format) or "inputs" (columnar format)')
    data = body[key]
    if isinstance(data, dict):  # named input, as TF Serving allows: {"images": [...]}
        if set(data) != {INPUT_NAME}:
            raise APIError(400, f'the model has one input, "{INPUT_NAME}"; got {sorted(data)[:10]}')
        data = data[INPUT_NAME]
    if isinstance(data, list) and data and all(isinstance(row, dict) for row in data):
        if any(set(row) != {INPUT_NAME} for row in data):
            raise APIError(400, f'each named instance must be {{"{INPUT_NAME}": [[[r, g, b], ...], ...]}}')
        data = [row[INPUT_NAME] for row in data]
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
        raise APIError(
            400, f"{key} must hold numbers only (no strings, booleans or null): pixel values are numbers in 0-255"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        array = values.astype(np.float32)
    if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 255:
        raise APIError(400, "pixel values must be finite numbers in 0-255")
    return array, key


def _tensor_info(name: str, shape) -> dict:
    return {
        "dtype": "DT_FLOAT",
        "name": name,
        "tensor_shape": {"dim": [{"size": str(size), "name": ""} for size in shape], "unknown_rank": False},
    }


def model_status() -> dict:
    """GetModelStatusResponse: the one version, loaded and available."""
    return {
        "model_version_status": [
            {"version": VERSION, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


def model_metadata(labels, input_shape) -> dict:
    """GetModelMetadataResponse for the signature this server accepts (float32 images 0-255 in)."""
    signature = {
        "inputs": {INPUT_NAME: _tensor_info(f"{IMAGE_SIGNATURE}_{INPUT_NAME}:0", [-1, *input_shape])},
        "outputs": {OUTPUT_NAME: _tensor_info("StatefulPartitionedCall:0", [-1, len(labels)])},
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": MODEL_NAME, "signature_name": "", "version": VERSION},
        "metadata": {"signature_def": {"signature_def": {IMAGE_SIGNATURE: signature}}},
    }


router = APIRouter()


@router.get(MODEL_PATH)
@router.get(f"{MODEL_PATH}/versions/{VERSION}", include_in_schema=False)
async def status():
    return model_status()


@router.get(f"{MODEL_PATH}/metadata")
@router.get(f"{MODEL_PATH}/versions/{VERSION}/metadata", include_in_schema=False)
async def metadata(svc: Service = Depends(service)):
    return model_metadata(svc.labels, svc.metadata["input_shape"])


def _images(body: bytes, input_shape):
    return instances_array(parse_json(body), input_shape)


async def predict(request: Request, svc: Service = Depends(service)):
    """TF Serving's REST predict: row {"instances": [N x 32 x 32 x 3]} -> {"predictions": [N x classes]}, columnar
    {"inputs": …} -> {"outputs": …}."""
    try:
        images, key = await svc.in_worker(_images, await request.body(), svc.metadata["input_shape"])
        if len(images) > svc.limits.max_batch:
            raise APIError(413, f"{len(images)} instances sent; at most {svc.limits.max_batch}")
        probabilities = await svc.classify(images)
    except APIError as exc:
        return tf_serving_error(exc.status, exc.message, exc.headers)
    return {("predictions" if key == "instances" else "outputs"): probabilities.tolist()}


for _path in PREDICT_PATHS:
    router.add_api_route(_path, predict, methods=["POST"], include_in_schema=_path == PREDICT_PATHS[0])
