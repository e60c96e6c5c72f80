"""Exported TFLite files load as they are in MediaPipe Tasks' ImageClassifier, name the classes and answer as the
project's own predictor does; labels or metadata that do not fit the model are refused at export time."""

import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from keras_cifar.errors import KerasCifarError
from keras_cifar.export import FORMATS, load_predictor
from keras_cifar.export.tflite_metadata import MetadataError, ModelFacts, check_labels, check_metadata, read_metadata

TFLITE_FORMATS = [name for name, f in FORMATS.items() if f.file.endswith(".tflite")]


def app_images(exported, cifar) -> np.ndarray:
    """The folder's sample PNGs (what an app would be handed) and the first test images."""
    samples = json.loads((exported / "metadata.json").read_text())["samples"]
    pngs = [np.asarray(Image.open(exported / sample["file"]).convert("RGB")) for sample in samples]
    return np.concatenate([np.stack(pngs), cifar.x_test[:30]]).astype(np.uint8)


@pytest.mark.parametrize("fmt", TFLITE_FORMATS)
def test_mediapipe_image_classifier_loads_the_file_names_the_classes_and_agrees(exported, cifar, fmt):
    pytest.importorskip("mediapipe", reason='the [mobile] extra: pip install "keras-cifar[mobile]"')
    import mediapipe as mp
    from mediapipe.tasks.python.core.base_options import BaseOptions
    from mediapipe.tasks.python.vision import image_classifier

    images = app_images(exported, cifar)
    expected = load_predictor(exported, fmt).predict(images)
    cpu = BaseOptions(model_asset_path=str(exported / FORMATS[fmt].file), delegate=BaseOptions.Delegate.CPU)
    with image_classifier.ImageClassifier.create_from_options(
        image_classifier.ImageClassifierOptions(base_options=cpu)
    ) as classifier:
        results = [
            classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
            for image in images
        ]
    for result, probabilities in zip(results, expected, strict=True):
        categories = result.classifications[0].categories
        assert sorted(c.category_name for c in categories) == sorted(cifar.class_names)
        assert all(c.category_name == cifar.class_names[c.index] for c in categories)
        # MediaPipe's first class is the predictor's top-1 (quantised outputs tie; MediaPipe orders ties its own way).
        assert probabilities[categories[0].index] == pytest.approx(probabilities.max(), abs=1e-6)
        scores = np.zeros_like(probabilities)
        scores[[c.index for c in categories]] = [c.score for c in categories]
        np.testing.assert_allclose(scores, probabilities, atol=1e-4)


def test_the_export_report_says_whether_mediapipe_loads_each_tflite_file(exported):
    report = json.loads((exported / "export_report.json").read_text())
    for name, row in report["formats"].items():
        if name not in TFLITE_FORMATS:
            assert "mediapipe" not in row
            continue
        try:
            import mediapipe
        except ImportError:
            assert row["mediapipe"] == {"checked": False, "reason": row["mediapipe"]["reason"]}
            assert "keras-cifar[mobile]" in row["mediapipe"]["reason"]
            continue
        assert row["mediapipe"]["mediapipe"] == mediapipe.__version__
        assert row["mediapipe"]["checked"] and row["mediapipe"]["loads"] and row["mediapipe"]["class_names"], row
        assert row["mediapipe"]["top1_agreement"] == 1.0 and row["mediapipe"]["max_probability_gap"] < 1e-4


@pytest.mark.parametrize("fmt", TFLITE_FORMATS)
def test_each_tflite_file_carries_the_runs_metadata_and_the_labels(exported, trained_run, cifar, fmt):
    path = exported / FORMATS[fmt].file
    metadata = read_metadata(path)
    assert trained_run.name in metadata["name"] and "airbench" in metadata["name"]
    assert trained_run.name in metadata["version"] and metadata["license"] == "Apache-2.0"
    assert "airbench" in metadata["description"] and metadata["author"] == "keras-cifar"
    assert metadata["input"] == {
        "name": "image",
        "image": True,
        "rgb": True,
        "size": [32, 32],
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
    }
    assert metadata["output"]["label_file"] == "labels.txt" and metadata["labels"] == list(cifar.class_names)
    # The labels ride along as a zip archive appended to the flatbuffer, the same file as the folder's.
    with zipfile.ZipFile(path) as packed:
        assert packed.namelist() == ["labels.txt"]
        assert packed.read("labels.txt") == (exported / "labels.txt").read_bytes()


@pytest.mark.parametrize("fmt", TFLITE_FORMATS)
def test_mediapipes_own_schema_code_reads_the_metadata(exported, fmt):
    """An independent reader: MediaPipe's generated flatbuffers code, not the project's."""
    pytest.importorskip("mediapipe", reason='the [mobile] extra: pip install "keras-cifar[mobile]"')
    from mediapipe.tasks.metadata import metadata_schema_py_generated as schema
    from mediapipe.tasks.metadata import schema_py_generated as tflite

    data = (exported / FORMATS[fmt].file).read_bytes()
    model = tflite.Model.GetRootAs(data, 0)
    entries = {model.Metadata(i).Name(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    buffer = model.Buffers(entries[b"TFLITE_METADATA"]).DataAsNumpy().tobytes()
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
    metadata = schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(buffer, 0))
    assert metadata.license == b"Apache-2.0" and metadata.minParserVersion == b"1.0.0"
    graph = metadata.subgraphMetadata[0]
    image = graph.inputTensorMetadata[0]
    assert image.content.contentPropertiesType == schema.ContentProperties.ImageProperties
    assert image.content.contentProperties.colorSpace == schema.ColorSpaceType.RGB
    size = image.content.contentProperties.defaultSize
    assert (size.width, size.height) == (32, 32)
    normalization = image.processUnits[0].options
    assert image.processUnits[0].optionsType == schema.ProcessUnitOptions.NormalizationOptions
    assert normalization.mean.tolist() == [0.0] * 3 and normalization.std.tolist() == [1.0] * 3
    (labels,) = graph.outputTensorMetadata[0].associatedFiles
    assert (labels.name, labels.type) == (b"labels.txt", schema.AssociatedFileType.TENSOR_AXIS_LABELS)
    pixels = model.Subgraphs(0).Tensors(model.Subgraphs(0).Inputs(0)).Type()
    assert pixels == (tflite.TensorType.UINT8 if fmt == "tflite-int8" else tflite.TensorType.FLOAT32)


def test_labels_that_do_not_fit_the_model_are_refused_before_anything_is_written(trained_run, cifar, tmp_path):
    from keras_cifar.export.exporter import export_run

    out = tmp_path / "export"
    with pytest.raises(MetadataError, match="9 labels were given but the model outputs 10 classes") as raised:
        export_run(
            trained_run,
            out,
            ["tflite-float32"],
            cifar.x_test[:20],
            cifar.y_test[:20],
            cifar.x_train[:8],
            cifar.class_names[:9],
        )
    assert isinstance(raised.value, KerasCifarError)  # the CLI prints it without a traceback
    assert not out.exists()


def test_the_tflite_writer_refuses_labels_that_do_not_fit_the_model(exported, cifar):
    from keras_cifar.export.convert import convert_tflite

    facts = ModelFacts("n", "d", "1", "a", "Apache-2.0", tuple(cifar.class_names) + ("unicorn",))
    with pytest.raises(MetadataError, match="11 labels were given but the model outputs 10 classes"):
        convert_tflite(exported / FORMATS["savedmodel"].file, "tflite-float32", facts)


def test_a_tflite_file_whose_metadata_disagrees_with_its_folder_is_refused(exported, cifar, tmp_path):
    path = tmp_path / "model.tflite"
    shutil.copy(exported / FORMATS["tflite-float32"].file, path)
    labels = list(cifar.class_names)
    assert check_metadata(path, labels, (32, 32, 3))["labels"] == labels
    with pytest.raises(MetadataError, match="labels"):
        check_metadata(path, labels[::-1], (32, 32, 3))
    with pytest.raises(MetadataError, match="model input"):
        check_metadata(path, labels, (64, 64, 3))
    # A file converted without metadata (or stripped of it) is named, not passed.
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(path.read_bytes().replace(b"TFLITE_METADATA", b"SOMETHING_ELSE!"))
    with pytest.raises(MetadataError, match="has no TFLite metadata"):
        check_metadata(bare, labels, (32, 32, 3))
    foreign = tmp_path / "foreign.tflite"
    foreign.write_bytes(path.read_bytes().replace(b"M001", b"X001"))
    with pytest.raises(MetadataError, match="not an image classifier's"):
        check_metadata(foreign, labels, (32, 32, 3))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["cat", "dog"], "2 labels were given but the model outputs 3 classes"),
        (["cat", "dog", "cat"], "distinct"),
        (["cat", "dog", ""], "non-empty single-line"),
        (["cat", "dog", "hot\ndog"], "non-empty single-line"),
        (["cat", "dog", "hot\rdog"], "non-empty single-line"),
    ],
)
def test_labels_must_be_one_distinct_line_per_class(labels, message):
    with pytest.raises(MetadataError, match=message):
        check_labels(labels, 3)


def test_training_and_serving_never_import_mediapipe():
    code = (
        "import sys, keras_cifar.train, keras_cifar.serve, keras_cifar.predict, keras_cifar.serving.app, "
        "keras_cifar.export.runtime\nprint('mediapipe' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.split()[-1] == "False"
