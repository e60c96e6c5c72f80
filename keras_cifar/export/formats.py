"""The export formats as data: adding one is one entry here and its convert and load functions.

A light module (no TensorFlow): `predict`, `serve` and the export CLI list and pick formats through it, and only
the chosen format's functions import what they need.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from keras_cifar.errors import CheckpointError

IMAGE_SIGNATURE = "serving_default"
UINT8_SIGNATURE = "serving_uint8"


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    name: str
    file: str  # inside the export folder
    description: str
    # convert(model, target_path, export_folder, calibration_images, facts): write the file; TFLite converts from
    # the SavedModel the exporter always writes first into export_folder/savedmodel/1, and writes `facts`
    # (tflite_metadata.ModelFacts: the run's name, version, licence and the labels) into the file's metadata.
    convert: Callable
    load: Callable  # load(path) -> an object with predict(images) -> probabilities


def _savedmodel(model, target, folder, calibration, facts):
    from keras_cifar.export.convert import export_savedmodel

    export_savedmodel(model, target)


def _tflite(kind):
    def convert(model, target, folder, calibration, facts):
        from keras_cifar.export.convert import convert_tflite
        from keras_cifar.run import write_atomic

        write_atomic(target, convert_tflite(Path(folder) / FORMATS["savedmodel"].file, kind, facts, calibration))

    return convert


def _onnx(model, target, folder, calibration, facts):
    from keras_cifar.cli import require_extra
    from keras_cifar.export.convert import convert_onnx
    from keras_cifar.run import write_atomic

    require_extra("onnx", "tf2onnx", "onnx")
    write_atomic(target, convert_onnx(model))


def _load_onnx(path):
    from keras_cifar.cli import require_extra
    from keras_cifar.export.runtime import ONNXPredictor

    require_extra("onnx", "onnxruntime")
    return ONNXPredictor(path)


def _load_savedmodel(path):
    from keras_cifar.export.runtime import SavedModelPredictor

    return SavedModelPredictor(path)


def _load_tflite(path):
    from keras_cifar.export.runtime import TFLitePredictor

    return TFLitePredictor(path)


FORMATS = {
    f.name: f
    for f in (
        ExportFormat(
            "savedmodel",
            "savedmodel/1",
            "SavedModel for TF Serving: float32 or uint8 0-255 images in, probabilities out",
            _savedmodel,
            _load_savedmodel,
        ),
        ExportFormat(
            "tflite-float32",
            "model_float32.tflite",
            "TFLite, float32 weights and activations",
            _tflite("tflite-float32"),
            _load_tflite,
        ),
        ExportFormat(
            "tflite-float16",
            "model_float16.tflite",
            "TFLite, float16 weights (half the size), float32 compute",
            _tflite("tflite-float16"),
            _load_tflite,
        ),
        ExportFormat(
            "tflite-dynamic-int8",
            "model_dynamic_int8.tflite",
            "TFLite, int8 weights, activations quantised on the fly",
            _tflite("tflite-dynamic-int8"),
            _load_tflite,
        ),
        ExportFormat(
            "tflite-int8",
            "model_int8.tflite",
            "TFLite, full integer: int8 weights and activations, uint8 pixels in",
            _tflite("tflite-int8"),
            _load_tflite,
        ),
        ExportFormat(
            "onnx",
            "model.onnx",
            "ONNX (opset 17) for ONNX Runtime and other engines: float32 0-255 images in, probabilities out",
            _onnx,
            _load_onnx,
        ),
    )
}


def get_format(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise CheckpointError(f"unknown format {name!r}; choose from {', '.join(FORMATS)}")
    return FORMATS[name]
