"""TFLite model metadata: what MediaPipe Tasks (and LiteRT's support libraries) need to run an exported file as is.

Every TFLite file gets the `TFLITE_METADATA` record of the TFLite metadata schema (`metadata_schema.fbs`, shipped
by TFLite Support and MediaPipe): the model's name, description, version and licence; its input as an RGB image
with NormalizationOptions mean 0 and std 1 (the models take raw 0-255 pixels and normalise inside, so an app feeds
pixels unchanged); its output's class names as an associated `labels.txt` (TENSOR_AXIS_LABELS), zipped onto the end
of the file as TFLite Support's metadata populator does, so the file is also a zip archive.

Why this is written here on `flatbuffers` rather than by a library: MediaPipe's metadata writer does not import (its
wheel lacks the compiled module it needs), tflite-support was last released in 2023 and pins protobuf 3, and the
generated Python for this schema ships only inside those two optional packages. The few tables used are small and
the schema only ever appends fields, so they are built and read here by their field ids (`_FIELDS`, copied from
metadata_schema.fbs). The TFLite model itself is read and rewritten with TensorFlow's own generated schema code:
TensorFlow is always there at export time. tests/export/test_mobile.py reads the result with MediaPipe's generated code
and runs every file in MediaPipe's ImageClassifier.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import flatbuffers
import numpy as np
from flatbuffers import number_types
from flatbuffers.table import Table

from keras_cifar.errors import KerasCifarError

METADATA_NAME = "TFLITE_METADATA"  # the Model.metadata entry that readers look for
METADATA_IDENTIFIER = b"M001"  # metadata_schema.fbs's file_identifier
MODEL_IDENTIFIER = b"TFL3"  # the TFLite schema's
MIN_PARSER_VERSION = "1.0.0"  # every field written here is in the schema's first version
LABELS_FILE = "labels.txt"
# Pixels in as they are, 0-255: the models normalise inside. MediaPipe feeds a float input (pixel - mean) / std.
MEAN, STD = 0.0, 1.0

# The field ids of the tables used, from metadata_schema.fbs; a union field takes two ids, its type's then its value's.
_FIELDS = {
    "ModelMetadata": {
        "name": 0,
        "description": 1,
        "version": 2,
        "subgraph_metadata": 3,
        "author": 4,
        "license": 5,
        "min_parser_version": 7,
    },
    "SubGraphMetadata": {"input_tensor_metadata": 2, "output_tensor_metadata": 3},
    "TensorMetadata": {"name": 0, "description": 1, "content": 3, "process_units": 4, "associated_files": 6},
    "Content": {"content_properties_type": 0, "content_properties": 1},
    "ImageProperties": {"color_space": 0, "default_size": 1},
    "ImageSize": {"width": 0, "height": 1},
    "FeatureProperties": {},
    "ProcessUnit": {"options_type": 0, "options": 1},
    "NormalizationOptions": {"mean": 0, "std": 1},
    "AssociatedFile": {"name": 0, "description": 1, "type": 2},
}
# Enum and union values of the schema.
_RGB = 1  # ColorSpaceType
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2  # ContentProperties
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType


class MetadataError(KerasCifarError):
    """An export's labels or TFLite metadata do not match its model."""


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What a TFLite file says about itself: the run's name, description, version and licence, and the labels."""

    name: str
    description: str
    version: str
    author: str
    license: str
    labels: tuple[str, ...]


def check_labels(labels, num_classes: int) -> None:
    """One non-empty, distinct, single-line label per class: labels.txt holds one a line and apps index it."""
    labels = list(labels)
    if len(labels) != num_classes:
        raise MetadataError(
            f"{len(labels)} labels were given but the model outputs {num_classes} classes; export it with the "
            "labels of the data it was trained on"
        )
    bad = [
        label for label in labels if not isinstance(label, str) or not label.strip() or label.splitlines() != [label]
    ]
    if bad:
        raise MetadataError(f"every label must be a non-empty single-line string, got {bad[0]!r}")
    if len(set(labels)) != len(labels):
        raise MetadataError(f"the labels must be distinct, got {labels}")


def _schema():
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def _image_input(model_bytes: bytes, labels) -> tuple[int, int, str]:
    """(height, width, pixel type) of a TFLite image classifier with one output per label, or a MetadataError
    saying why the model does not fit the metadata written here."""
    schema = _schema()
    graph = schema.Model.GetRootAs(model_bytes, 0).Subgraphs(0)
    if graph.InputsLength() != 1 or graph.OutputsLength() != 1:
        raise MetadataError(f"the TFLite model has {graph.InputsLength()} inputs and {graph.OutputsLength()} outputs")
    image, scores = graph.Tensors(graph.Inputs(0)), graph.Tensors(graph.Outputs(0))
    shape, kind, quantization = image.ShapeAsNumpy().tolist(), image.Type(), image.Quantization()
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
        raise MetadataError(f"the TFLite input is {shape}, not one RGB image [1, height, width, 3]")
    if kind not in (schema.TensorType.FLOAT32, schema.TensorType.UINT8):
        raise MetadataError(f"the TFLite input has tensor type {kind}, not float32 or uint8 pixels")
    if kind == schema.TensorType.UINT8 and quantization and quantization.ScaleLength():
        scale, zero_point = quantization.Scale(0), quantization.ZeroPoint(0)
        if (scale, zero_point) != (1.0, 0):
            raise MetadataError(
                f"the uint8 input is quantised with scale {scale} and zero point {zero_point}, so it does not take "
                "raw pixels as its metadata would say"
            )
    output_shape = scores.ShapeAsNumpy().tolist()
    if len(output_shape) != 2 or output_shape[0] != 1:
        raise MetadataError(f"the TFLite output is {output_shape}, not one vector of class scores [1, classes]")
    check_labels(labels, output_shape[1])
    return shape[1], shape[2], "float32" if kind == schema.TensorType.FLOAT32 else "uint8"


def _metadata_buffer(facts: ModelFacts, height: int, width: int, pixels: str) -> bytes:
    """The ModelMetadata flatbuffer: built leaves first, as flatbuffers requires."""
    builder = flatbuffers.Builder(1024)

    def table(kind, **fields):
        """A table from built offsets, strings, and scalars given as (Builder type name, value)."""
        values = {name: builder.CreateString(v) if isinstance(v, str) else v for name, v in fields.items()}
        builder.StartObject(max(_FIELDS[kind].values(), default=-1) + 1)
        for name, value in values.items():
            if isinstance(value, tuple):
                getattr(builder, f"Prepend{value[0]}Slot")(_FIELDS[kind][name], value[1], 0)
            else:
                builder.PrependUOffsetTRelativeSlot(_FIELDS[kind][name], value, 0)
        return builder.EndObject()

    def vector(*offsets):
        builder.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            builder.PrependUOffsetTRelative(offset)
        return builder.EndVector()

    def floats(value):
        return builder.CreateNumpyVector(np.full(3, value, dtype=np.float32))

    image = table(
        "TensorMetadata",
        name="image",
        description=f"RGB pixels 0-255 as {pixels}, {height}x{width}; the model normalises them",
        content=table(
            "Content",
            content_properties_type=("Uint8", _IMAGE_PROPERTIES),
            content_properties=table(
                "ImageProperties",
                color_space=("Int8", _RGB),
                default_size=table("ImageSize", width=("Uint32", width), height=("Uint32", height)),
            ),
        ),
        process_units=vector(
            table(
                "ProcessUnit",
                options_type=("Uint8", _NORMALIZATION_OPTIONS),
                options=table("NormalizationOptions", mean=floats(MEAN), std=floats(STD)),
            )
        ),
    )
    probabilities = table(
        "TensorMetadata",
        name="probabilities",
        description=f"The probability of each of the {len(facts.labels)} classes, in the order of {LABELS_FILE}",
        content=table(
            "Content",
            content_properties_type=("Uint8", _FEATURE_PROPERTIES),
            content_properties=table("FeatureProperties"),
        ),
        associated_files=vector(
            table(
                "AssociatedFile",
                name=LABELS_FILE,
                description="Class names, one a line, in output order",
                type=("Int8", _TENSOR_AXIS_LABELS),
            )
        ),
    )
    subgraph = table(
        "SubGraphMetadata", input_tensor_metadata=vector(image), output_tensor_metadata=vector(probabilities)
    )
    root = table(
        "ModelMetadata",
        name=facts.name,
        description=facts.description,
        version=facts.version,
        subgraph_metadata=vector(subgraph),
        author=facts.author,
        license=facts.license,
        min_parser_version=MIN_PARSER_VERSION,
    )
    builder.Finish(root, file_identifier=METADATA_IDENTIFIER)
    return bytes(builder.Output())


def add_metadata(model_bytes: bytes, facts: ModelFacts) -> bytes:
    """The TFLite model with `facts` as its metadata and the labels zipped on, as TFLite Support's populator writes
    it: the metadata as a new buffer named in Model.metadata, the model repacked, the files appended as a zip."""
    schema = _schema()
    height, width, pixels = _image_input(model_bytes, facts.labels)
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_bytes, 0))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(_metadata_buffer(facts, height, width, pixels), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    builder = flatbuffers.Builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=MODEL_IDENTIFIER)
    archive = io.BytesIO(bytes(builder.Output()))
    with zipfile.ZipFile(archive, "a") as files:  # not a zip yet, so the archive is appended after the model
        # Stored (MediaPipe reads associated files uncompressed) and dated 1980, so an export is reproducible.
        files.writestr(zipfile.ZipInfo(LABELS_FILE, date_time=(1980, 1, 1, 0, 0, 0)), "\n".join(facts.labels) + "\n")
    return archive.getvalue()


class _Reader:
    """A table of metadata_schema.fbs, read by the field names of `_FIELDS`."""

    def __init__(self, kind: str, buffer: bytes, position: int):
        self.kind, self._table = kind, Table(buffer, position)

    def _offset(self, field: str) -> int:
        return self._table.Offset(4 + 2 * _FIELDS[self.kind][field])

    def string(self, field: str) -> str | None:
        offset = self._offset(field)
        return self._table.String(offset + self._table.Pos).decode() if offset else None

    def scalar(self, field: str, flags) -> int:
        offset = self._offset(field)
        return self._table.Get(flags, offset + self._table.Pos) if offset else 0

    def floats(self, field: str) -> list[float]:
        offset = self._offset(field)
        return self._table.GetVectorAsNumpy(number_types.Float32Flags, offset).tolist() if offset else []

    def table(self, field: str, kind: str) -> _Reader | None:
        offset = self._offset(field)
        return _Reader(kind, self._table.Bytes, self._table.Indirect(offset + self._table.Pos)) if offset else None

    def tables(self, field: str, kind: str) -> list[_Reader]:
        offset = self._offset(field)
        if not offset:
            return []
        start = self._table.Vector(offset)
        return [
            _Reader(kind, self._table.Bytes, self._table.Indirect(start + 4 * i))
            for i in range(self._table.VectorLen(offset))
        ]


def _parse(buffer: bytes) -> dict:
    """The fields written by `_metadata_buffer`, read back from a ModelMetadata flatbuffer."""
    root = _Reader("ModelMetadata", buffer, Table(buffer, 0).Indirect(0))
    graph = root.tables("subgraph_metadata", "SubGraphMetadata")[0]
    image = graph.tables("input_tensor_metadata", "TensorMetadata")[0]
    output = graph.tables("output_tensor_metadata", "TensorMetadata")[0]
    content = image.table("content", "Content")
    properties = content.table("content_properties", "ImageProperties")
    size = properties.table("default_size", "ImageSize")
    normalization = [
        unit.table("options", "NormalizationOptions")
        for unit in image.tables("process_units", "ProcessUnit")
        if unit.scalar("options_type", number_types.Uint8Flags) == _NORMALIZATION_OPTIONS
    ]
    label_files = [
        file.string("name")
        for file in output.tables("associated_files", "AssociatedFile")
        if file.scalar("type", number_types.Int8Flags) == _TENSOR_AXIS_LABELS
    ]
    return {
        **{field: root.string(field) for field in ("name", "description", "version", "author", "license")},
        "min_parser_version": root.string("min_parser_version"),
        "input": {
            "name": image.string("name"),
            "image": content.scalar("content_properties_type", number_types.Uint8Flags) == _IMAGE_PROPERTIES,
            "rgb": properties.scalar("color_space", number_types.Int8Flags) == _RGB,
            "size": [size.scalar("height", number_types.Uint32Flags), size.scalar("width", number_types.Uint32Flags)],
            "mean": normalization[0].floats("mean") if normalization else None,
            "std": normalization[0].floats("std") if normalization else None,
        },
        "output": {"name": output.string("name"), "label_file": label_files[0]},
    }


def read_metadata(path) -> dict:
    """A TFLite file's metadata and packed labels as plain values: what an app that reads it will find."""
    path = Path(path)
    data = path.read_bytes()
    model = _schema().Model.GetRootAs(data, 0)
    entries = [model.Metadata(i) for i in range(model.MetadataLength())]
    buffers = [entry.Buffer() for entry in entries if entry.Name().decode() == METADATA_NAME]
    if not buffers:
        raise MetadataError(f"{path} has no TFLite metadata ({METADATA_NAME}); export it again")
    buffer = model.Buffers(buffers[0]).DataAsNumpy().tobytes()
    try:
        if buffer[4:8] != METADATA_IDENTIFIER:
            raise ValueError(f"its identifier is {buffer[4:8]!r}, not {METADATA_IDENTIFIER!r}")
        metadata = _parse(buffer)
    except (ValueError, IndexError, AttributeError) as exc:  # a field the exporter writes is missing or malformed
        raise MetadataError(f"{path}'s {METADATA_NAME} is not an image classifier's ({exc}); export it again") from None
    try:
        labels = zipfile.ZipFile(io.BytesIO(data)).read(metadata["output"]["label_file"])
    except (zipfile.BadZipFile, KeyError) as exc:
        raise MetadataError(f"{path} does not hold the labels its metadata names ({exc}); export it again") from None
    return {**metadata, "labels": labels.decode().splitlines()}


def check_metadata(path, labels, input_shape) -> dict:
    """A TFLite file's metadata (`read_metadata`) if it says what its export folder says and fits the model in it:
    the labels, an RGB image of `input_shape` taken as raw 0-255 pixels; otherwise a MetadataError naming the
    difference, so a wrong file is refused at export time rather than found on a phone."""
    path = Path(path)
    metadata = read_metadata(path)
    height, width, _ = _image_input(path.read_bytes(), metadata["labels"])
    image = metadata["input"]
    expected = {
        "labels": (metadata["labels"], list(labels)),
        "metadata image size": (image["size"], [height, width]),
        "model input": ([height, width, 3], list(input_shape)),
        "RGB image input": ([image["image"], image["rgb"]], [True, True]),
        "normalisation (mean, std)": ([image["mean"], image["std"]], [[MEAN] * 3, [STD] * 3]),
    }
    for what, (found, wanted) in expected.items():
        if found != wanted:
            raise MetadataError(f"{path.name}: its {what} {found} does not match the export's {wanted}")
    return metadata
