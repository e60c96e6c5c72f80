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
from keras_cifar.export.formats import FORMATS, IMAGE_SIGNATURE, get_format


class SavedModelPredictor:
    def __init__(self, directory: Path):
        import tensorflow as tf

        self._tf = tf
        self.signature = tf.saved_model.load(str(directory)).signatures[IMAGE_SIGNATURE]

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = self._tf.constant(np.asarray(images, dtype=np.float32))
        return self.signature(images=images)["probabilities"].numpy()


class KerasPredictor:
    """A `.keras` file run by Keras itself (TensorFlow at run time), for a run directory or a model not exported."""

    def __init__(self, path: Path):
        from keras_cifar.models.saving import load_model_file

        self.model = load_model_file(path)
        self._lock = threading.Lock()

    def predict(self, images: np.ndarray) -> np.ndarray:
        with self._lock:
            outputs = self.model.predict(np.asarray(images, dtype=np.float32), batch_size=256, verbose=0)
        return np.asarray(outputs, dtype=np.float32)


class ONNXPredictor:
    """An ONNX file on ONNX Runtime's CPU engine; the session takes any batch size and is safe to call from threads."""

    def __init__(self, path: Path, num_threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads or os.cpu_count() or 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: np.asarray(images, dtype=np.float32)})[0]


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
    export_format = get_format(fmt)
    path = Path(export_dir) / export_format.file
    if not path.exists():
        raise CheckpointError(
            f"{path} not found: export the model with `python -m keras_cifar.export RUN_DIR --formats {fmt}` first"
        )
    try:
        return export_format.load(path)
    except Exception as exc:  # noqa: BLE001 - parse and load errors all mean an unusable file
        raise CheckpointError(f"cannot load {path} ({type(exc).__name__}: {str(exc)[:200]}); export it again") from None


def top_k(probabilities: np.ndarray, labels, k: int) -> list[dict]:
    """The `k` most probable classes of one image, best first, as the CLI and the API report them."""
    order = np.argsort(-probabilities)[:k]
    return [{"label": labels[i], "index": int(i), "probability": float(probabilities[i])} for i in order]


def predict_in_batches(predictor, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.concatenate([predictor.predict(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


# The default format to serve: the float TFLite file needs no TensorFlow at run time and loads in milliseconds.
PREFERRED_FORMATS = ("tflite-float32", "savedmodel", "tflite-float16", "tflite-dynamic-int8", "tflite-int8", "onnx")


MAX_METADATA_BYTES = 2**20  # an export's metadata.json is a few KB; anything this large is not one


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _metadata_problem(metadata) -> str | None:
    """Why a parsed metadata.json cannot be served from, or None: required keys and their types."""
    if not isinstance(metadata, dict):
        return f"it holds a JSON {type(metadata).__name__}, not an object"
    architecture = metadata.get("architecture")
    if not isinstance(architecture, str) or not architecture:
        return '"architecture" is missing or not a non-empty string'
    shape = metadata.get("input_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(n) and n > 0 for n in shape)):
        return f'"input_shape" must be three positive whole numbers, got {shape!r}'[:200]
    labels = metadata.get("labels")
    if not (isinstance(labels, list) and labels and all(isinstance(label, str) and label for label in labels)):
        return '"labels" is missing or not a list of non-empty strings'
    if len(set(labels)) != len(labels):
        return '"labels" repeats a label'
    formats = metadata.get("formats", {})
    if not (isinstance(formats, dict) and all(isinstance(row, dict) for row in formats.values())):
        return '"formats" is not an object of objects'
    for name, row in formats.items():
        accuracy = row.get("accuracy")
        if accuracy is not None and (not isinstance(accuracy, (int, float)) or isinstance(accuracy, bool)):
            return f'"formats"/{name}/"accuracy" is not a number'
    count = metadata.get("num_test_images")
    if count is not None and not (_is_int(count) and count >= 0):
        return '"num_test_images" is not a whole number'
    if not isinstance(metadata.get("samples", []), list):
        return '"samples" is not a list'
    return None


def _usable_samples(export_dir: Path, samples: list) -> list[dict]:
    """The sample images of metadata.json that are PNG files inside the export folder; others dropped, each logged."""
    import logging

    log = logging.getLogger(__name__)
    root, kept, names = export_dir.resolve(), [], set()
    for entry in samples:
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("label"), str)):
            log.warning('%s/metadata.json: sample %.100r ignored: not {"label": ..., "file": ...}', export_dir, entry)
            continue
        path = (export_dir / entry["file"]).resolve()
        reason = (
            "it is outside the export folder"
            if not path.is_relative_to(root)
            else "it is not a .png file"
            if path.suffix.lower() != ".png"
            else "the file does not exist"
            if not path.is_file()
            else "another sample has the same file name"
            if path.name in names
            else None
        )
        if reason:
            log.warning("%s/metadata.json: sample %.100r ignored: %s", export_dir, entry["file"], reason)
            continue
        names.add(path.name)
        kept.append(entry)
    return kept


def read_metadata(export_dir) -> dict:
    """An export folder's metadata.json, checked: the keys serving needs, with their types; samples outside the
    folder or missing are dropped. A torn, truncated or edited file is a CheckpointError that says so."""
    import json

    export_dir = Path(export_dir)
    metadata_file = export_dir / "metadata.json"
    again = f"export the model again (`python -m keras_cifar.export RUN_DIR --out {export_dir}`)"
    if not metadata_file.is_file():
        raise CheckpointError(
            f"{export_dir} is not an export folder (no metadata.json): run "
            "`python -m keras_cifar.export RUN_DIR --out FOLDER` first"
        )
    try:
        with metadata_file.open("rb") as file:
            text = file.read(MAX_METADATA_BYTES + 1)
    except OSError as exc:
        raise CheckpointError(f"cannot read {metadata_file} ({exc.strerror})") from None
    if len(text) > MAX_METADATA_BYTES:
        raise CheckpointError(
            f"{metadata_file} is larger than {MAX_METADATA_BYTES:,} bytes, so it is not the one "
            f"the exporter wrote; {again}"
        )
    try:
        metadata = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, over-long integers, deep nesting
        detail = " ".join(str(exc).split())[:150]
        raise CheckpointError(
            f"{metadata_file} is not valid JSON ({detail}); it may have been cut short while being written: {again}"
        ) from None
    problem = _metadata_problem(metadata)
    if problem:
        raise CheckpointError(f"{metadata_file} is not usable: {problem}; {again}")
    metadata.setdefault("formats", {})
    metadata["samples"] = _usable_samples(export_dir, metadata.get("samples", []))
    return metadata


def open_export(export_dir, fmt: str | None = None):
    """(predictor, format, metadata) of an export folder; `fmt=None` takes the first present of PREFERRED_FORMATS.

    metadata.json is checked (`read_metadata`), and the model is run once on a blank image to check that it takes
    the input shape metadata.json states and outputs one probability per label.
    """
    export_dir = Path(export_dir)
    metadata = read_metadata(export_dir)
    if fmt is None:
        present = [name for name in PREFERRED_FORMATS if (export_dir / FORMATS[name].file).exists()]
        if not present:
            raise CheckpointError(f"{export_dir} holds no model file; export the model again")
        fmt = present[0]
    predictor = load_predictor(export_dir, fmt)
    shape, labels = metadata["input_shape"], metadata["labels"]
    try:
        outputs = np.asarray(predictor.predict(np.zeros((1, *shape), dtype=np.float32)))
    except Exception as exc:  # noqa: BLE001 - any failure here means the file and metadata.json disagree
        raise CheckpointError(
            f"the {fmt} model in {export_dir} does not run on input of shape {shape} as "
            f"metadata.json says ({type(exc).__name__}: {' '.join(str(exc).split())[:150]}); "
            "export the model again"
        ) from None
    if outputs.shape != (1, len(labels)):
        raise CheckpointError(
            f"{export_dir}/metadata.json lists {len(labels)} labels but the {fmt} model outputs "
            f"{outputs.shape[-1] if outputs.ndim == 2 else list(outputs.shape)} values an image; "
            "export the model again"
        )
    return predictor, fmt, metadata


def open_model(target, fmt: str | None = None):
    """(predictor, format, metadata) of what a user points at: an export folder (`open_export`), a run directory
    (its model.keras, named from its config.json and scored from its metrics.json) or a `.keras` file. The last two
    run on Keras and TensorFlow; an export's TFLite files need neither."""
    target = Path(target)
    model_file = target if target.suffix == ".keras" else target / "model.keras"
    if (target / "metadata.json").is_file() or not model_file.is_file():
        return open_export(target, fmt)
    if fmt is not None:
        raise CheckpointError(
            f"--format {fmt} picks a file of an export folder, and {target} is a "
            f"{'model file' if target.is_file() else 'run directory'}: leave --format out to run its Keras model, "
            f"or export it first (`python -m keras_cifar.export RUN_DIR`)"
        )
    from keras_cifar.data.sources import CLASS_NAMES
    from keras_cifar.run import RunDir

    predictor = KerasPredictor(model_file)
    run = RunDir(target) if target.is_dir() else None
    record = run.read_record() if run else None
    metrics = (run.read_metrics() if run and run.is_finished() else None) or {}
    metadata = {
        "architecture": record.arch if record else predictor.model.name,
        "labels": list(CLASS_NAMES),
        "input_shape": [int(d) for d in predictor.model.input_shape[1:]],
        "formats": {"keras": {"accuracy": metrics["accuracy"]}} if "accuracy" in metrics else {},
        "num_test_images": metrics.get("num_test_images"),
        "samples": [],
    }
    outputs = predictor.predict(np.zeros((1, *metadata["input_shape"]), dtype=np.float32))
    if outputs.shape != (1, len(CLASS_NAMES)):
        raise CheckpointError(f"{model_file} outputs {outputs.shape[-1]} values an image, not CIFAR-10's 10 classes")
    return predictor, "keras", metadata
