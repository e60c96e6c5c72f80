"""Export: every format written, checked against the Keras model, documented; predict on real image files."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from keras_cifar import cli, predict
from keras_cifar.errors import CheckpointError
from keras_cifar.evaluation.report import load_model_file
from keras_cifar.export import FORMATS, load_predictor
from keras_cifar.export.__main__ import main as export_main
from keras_cifar.export.convert import float32_copy
from keras_cifar.export.runtime import open_export


def test_every_format_is_written_and_checked(exported):
    report = json.loads((exported / "export_report.json").read_text())
    assert list(report["formats"]) == list(FORMATS)
    for name, row in report["formats"].items():
        assert (exported / FORMATS[name].file).exists()
        assert row["size_bytes"] > 10_000
        assert 0.0 <= row["accuracy"] <= 1.0 and row["latency_ms_median"] > 0
        assert row["latency_ms_p95"] >= row["latency_ms_median"]
        assert row["throughput_images_per_second"] > 0
    # Float formats compute what Keras computes; quantised ones stay close.
    for name in ("savedmodel", "tflite-float32"):
        assert report["formats"][name]["top1_agreement"] == 1.0
        assert report["formats"][name]["max_probability_gap"] < 1e-4
    assert report["formats"]["tflite-float16"]["top1_agreement"] >= 0.98
    # This two-epoch model's probabilities are nearly flat, so top-1 flips easily; the gap says more.
    for name in ("tflite-dynamic-int8", "tflite-int8"):
        assert report["formats"][name]["max_probability_gap"] < 0.15
        assert report["formats"][name]["top1_agreement"] >= 0.5
        assert report["formats"][name]["flagged"] == (report["formats"][name]["accuracy_delta_points"] < -1.0)
    sizes = {name: row["size_bytes"] for name, row in report["formats"].items()}
    assert sizes["tflite-float16"] < 0.6 * sizes["tflite-float32"]
    assert sizes["tflite-int8"] < 0.35 * sizes["tflite-float32"]


def test_the_folder_documents_itself(exported, cifar):
    assert (exported / "labels.txt").read_text().split() == list(cifar.class_names)
    card = (exported / "model_card.md").read_text()
    assert "airbench" in card and "tflite-int8" in card and "Intended use" in card
    metadata = json.loads((exported / "metadata.json").read_text())
    assert metadata["input_shape"] == [32, 32, 3] and metadata["labels"] == list(cifar.class_names)
    assert len(metadata["samples"]) == 10 and all((exported / s["file"]).is_file() for s in metadata["samples"])


def test_exports_take_uint8_and_float_pixels_like_the_keras_model(exported, trained_run, cifar):
    import tensorflow as tf

    images = cifar.x_test[:8]
    expected = float32_copy(load_model_file(trained_run / "model.keras")).predict(images.astype("float32"), verbose=0)
    loaded = tf.saved_model.load(str(exported / FORMATS["savedmodel"].file))
    from_uint8 = loaded.signatures["serving_uint8"](images=tf.constant(images.astype(np.uint8)))["probabilities"]
    np.testing.assert_allclose(from_uint8.numpy(), expected, atol=1e-5)
    int8 = load_predictor(exported, "tflite-int8")
    assert int8.interpreter.get_input_details()[0]["dtype"] == np.uint8  # a phone feeds camera bytes unchanged
    assert int8.predict(images).shape == (8, 10)


def test_export_rejects_unknown_formats_and_folders_that_are_not_runs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        export_main([str(tmp_path), "--formats", "caffe"])
    assert "choose from" in capsys.readouterr().err
    assert cli.run(export_main, [str(tmp_path)]) == 2
    assert "not a training run directory" in capsys.readouterr().err


def write_images(folder, cifar):
    """One picture in each awkward form a user might have: larger JPEG, palette PNG, RGBA, grayscale, WebP."""
    folder.mkdir()
    cat = Image.fromarray(cifar.x_test[0])
    cat.resize((120, 90)).save(folder / "big.jpg", quality=92)
    cat.convert("P").save(folder / "palette.png")
    rgba = cat.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "alpha.png")
    cat.convert("L").save(folder / "gray.png")
    cat.save(folder / "photo.webp")
    return folder


def test_predict_classifies_files_of_any_size_and_mode(exported, cifar, tmp_path, capsys):
    folder = write_images(tmp_path / "pictures", cifar)
    assert cli.run(predict.main, [str(folder), "--model", str(exported), "--top-k", "3", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["file"].rsplit("/", 1)[1] for r in rows} == {
        "big.jpg",
        "palette.png",
        "alpha.png",
        "gray.png",
        "photo.webp",
    }
    for row in rows:
        assert len(row["top_k"]) == 3 and row["top_k"][0]["label"] in cifar.class_names
        probabilities = [g["probability"] for g in row["top_k"]]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0001
    assert next(r for r in rows if r["file"].endswith("big.jpg"))[("width")] == 120


def test_predict_runs_a_run_directory_or_a_keras_file_as_its_export_does(
    exported, trained_run, cifar, tmp_path, capsys
):
    folder = write_images(tmp_path / "pictures", cifar)

    def top_k(model, *flags):
        assert cli.run(predict.main, [str(folder), "--model", str(model), "--json", *flags]) == 0
        return {json.loads(line)["file"]: json.loads(line)["top_k"] for line in capsys.readouterr().out.splitlines()}

    # The export is the model's float32 copy; a run trained in bfloat16 (where the host has it) predicts in
    # bfloat16, whose 8-bit mantissa moves probabilities by up to a few thousandths.
    precision = json.loads((trained_run / "config.json").read_text())["runtime"]["precision"]
    tolerance = 1e-4 if precision == "float32" else 5e-3
    exported_answers = top_k(exported, "--format", "savedmodel")
    for model in (trained_run, trained_run / "model.keras"):
        answers = top_k(model)
        assert answers.keys() == exported_answers.keys()
        for name, answer in answers.items():
            first, second = exported_answers[name][:2]
            assert answer[0]["probability"] == pytest.approx(first["probability"], abs=tolerance)
            if first["probability"] - second["probability"] > 2 * tolerance:  # a near tie may flip within rounding
                assert answer[0]["label"] == first["label"]
    assert cli.run(predict.main, [str(folder), "--model", str(trained_run), "--format", "tflite-int8"]) == 2
    assert "picks a file of an export folder" in capsys.readouterr().err


def test_load_model_knows_the_packages_layers(trained_run):
    import keras_cifar

    assert keras_cifar.load_model(trained_run / "model.keras").count_params() > 0


def test_predict_reports_bad_files_and_still_classifies_the_rest(exported, cifar, tmp_path, capsys):
    folder = write_images(tmp_path / "pictures", cifar)
    (folder / "notes.png").write_text("not an image")
    (folder / "empty.jpg").write_bytes(b"")
    truncated = (folder / "big.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(truncated[: len(truncated) // 3])
    status = cli.run(predict.main, [str(folder), "--model", str(exported), "--format", "tflite-int8"])
    captured = capsys.readouterr()
    assert status == 1
    assert "notes.png: not an image" in captured.err and "empty.jpg: the file is empty" in captured.err
    assert "truncated.jpg" in captured.err
    assert captured.out.count("\n") == 5  # the five good pictures
    assert cli.run(predict.main, [str(folder / "missing.png"), "--model", str(exported)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_missing_or_broken_export_is_named(exported, tmp_path, capsys):
    assert cli.run(predict.main, [str(tmp_path), "--model", str(tmp_path)]) == 2
    assert "not an export folder" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.json").write_text((exported / "metadata.json").read_text())
    (broken / FORMATS["tflite-float32"].file).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot load"):
        load_predictor(broken, "tflite-float32")


@pytest.mark.slow
def test_an_export_killed_at_random_moments_leaves_a_whole_one(exported, trained_run, tmp_path, killed_at_random):
    """Re-exporting over a served folder, SIGKILLed at random moments: the folder always opens (the old export or
    the new one, every format the metadata lists present), and the next export finishes."""
    out = tmp_path / "served"
    shutil.copytree(exported, out)
    command = [sys.executable, "-m", "keras_cifar.export", str(trained_run), "--out", str(out)]
    command += ["--test-limit", "200", "--calibration-images", "64"]
    for _ in range(2):
        killed_at_random(command, seconds=(3, 40))
        predictor, fmt, metadata = open_export(out)
        assert all((out / FORMATS[name].file).exists() for name in metadata["formats"])
    finished = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert (
        open_export(out)[2]["formats"].keys() == json.loads((exported / "metadata.json").read_text())["formats"].keys()
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [".served.export", "served"]  # no partial or old folder
