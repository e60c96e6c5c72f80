"""Running an exported model: one `predict(images) -> probabilities` interface over every format.

The parity check, the predict CLI and the server all go through `load_predictor`, so what is measured at
export time is what is served. TFLite files run on LiteRT (`ai-edge-litert`) where it is installed, else on
TensorFlow's bundled interpreter; both take the same flatbuffers.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from keras_cifar.errors import CheckpointError
from keras_cifar.export.convert import FORMATS, IMAGE_SIGNATURE


class SavedModelPredictor:
    def __init__(self, directory: Path):
        import tensorflow as tf

        self._tf = tf
        self.signature = tf.saved_model.load(str(directory)).signatures[IMAGE_SIGNATURE]

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = self._tf.constant(np.asarray(images, dtype=np.float32))
        return self.signature(images=images)["probabilities"].numpy()


def tflite_interpreter_class():
    """LiteRT's interpreter if installed (the supported runtime), else TensorFlow's copy of it."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter, "tf.lite"


class TFLitePredictor:
    """A TFLite model resized to each batch size it is given; quantised inputs and outputs are converted here.

    An interpreter is not thread-safe, so calls are serialised; the server batches requests instead.
    """

    def __init__(self, path: Path, num_threads: int | None = None):
        interpreter_class, self.runtime = tflite_interpreter_class()
        self.interpreter = interpreter_class(model_path=str(path), num_threads=num_threads or os.cpu_count())
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self._batch = int(self._input["shape"][0])
        self._lock = threading.Lock()

    def _quantise(self, images):
        scale, zero_point = self._input["quantization"]
        dtype = self._input["dtype"]
        if not np.issubdtype(dtype, np.integer):
            return images.astype(dtype)
        info = np.iinfo(dtype)
        return np.clip(np.round(images / scale + zero_point), info.min, info.max).astype(dtype)

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        with self._lock:
            if len(images) != self._batch:
                self.interpreter.resize_tensor_input(self._input["index"], [len(images), *images.shape[1:]])
                self.interpreter.allocate_tensors()
                self._input = self.interpreter.get_input_details()[0]
                self._output = self.interpreter.get_output_details()[0]
                self._batch = len(images)
            self.interpreter.set_tensor(self._input["index"], self._quantise(images))
            self.interpreter.invoke()
            output = self.interpreter.get_tensor(self._output["index"])
        scale, zero_point = self._output["quantization"]
        if np.issubdtype(output.dtype, np.integer):
            output = (output.astype(np.float32) - zero_point) * scale
        return output.astype(np.float32)


def load_predictor(export_dir, fmt: str):
    """The predictor for format `fmt` inside an export folder, with a missing or broken file named."""
    if fmt not in FORMATS:
        raise CheckpointError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    path = Path(export_dir) / FORMATS[fmt][0]
    if not path.exists():
        raise CheckpointError(f"{path} not found: export the model with "
                              f"`python -m keras_cifar.export RUN_DIR --formats {fmt}` first")
    try:
        return SavedModelPredictor(path) if fmt == "savedmodel" else TFLitePredictor(path)
    except Exception as exc:  # noqa: BLE001 - parse and load errors all mean an unusable file
        raise CheckpointError(f"cannot load {path} ({type(exc).__name__}: {str(exc)[:200]}); export it again") from None


def top_k(probabilities: np.ndarray, labels, k: int) -> list[dict]:
    """The `k` most probable classes of one image, best first, as the CLI and the API report them."""
    order = np.argsort(-probabilities)[:k]
    return [{"label": labels[i], "index": int(i), "probability": float(probabilities[i])} for i in order]


def predict_in_batches(predictor, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.concatenate([predictor.predict(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


# The default format to serve: the float TFLite file needs no TensorFlow at run time and loads in milliseconds.
PREFERRED_FORMATS = ("tflite-float32", "savedmodel", "tflite-float16", "tflite-dynamic-int8", "tflite-int8")


def open_export(export_dir, fmt: str | None = None):
    """(predictor, format, metadata) of an export folder; `fmt=None` takes the first present of PREFERRED_FORMATS."""
    import json

    export_dir = Path(export_dir)
    metadata_file = export_dir / "metadata.json"
    if not metadata_file.is_file():
        raise CheckpointError(f"{export_dir} is not an export folder (no metadata.json): run "
                              "`python -m keras_cifar.export RUN_DIR --out FOLDER` first")
    metadata = json.loads(metadata_file.read_text())
    if fmt is None:
        present = [name for name in PREFERRED_FORMATS if (export_dir / FORMATS[name][0]).exists()]
        if not present:
            raise CheckpointError(f"{export_dir} holds no model file; export the model again")
        fmt = present[0]
    return load_predictor(export_dir, fmt), fmt, metadata
