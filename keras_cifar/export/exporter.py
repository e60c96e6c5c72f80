"""Export a run's best model to every deployment format, check each against the Keras model, document it.

An export folder is self-contained: the model files, `labels.txt`, `metadata.json` (read by the server),
`export_report.json`, `model_card.md` and a few test images under `samples/` for the web page. Each TFLite file
also carries its own TFLite metadata and labels, checked against the folder's, so an app loads it as it is.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from keras_cifar import __version__
from keras_cifar.errors import CheckpointError
from keras_cifar.export.check import check_format, format_report_table
from keras_cifar.export.convert import float32_copy
from keras_cifar.export.formats import FORMATS
from keras_cifar.export.mobile import MEDIAPIPE_CHECK_IMAGES, mediapipe_check
from keras_cifar.export.runtime import load_predictor, tflite_interpreter_class
from keras_cifar.export.tflite_metadata import MetadataError, ModelFacts, check_labels, check_metadata
from keras_cifar.run import RunDir, cpu_info, folder_lock, recover_folder, replace_folder, write_json

INPUT_DESCRIPTION = "RGB pixels 0-255, shape [N, 32, 32, 3], float32 or uint8; normalisation is inside the model"
# The licence written into each TFLite file's metadata: the project's (setup.cfg), under which its models are shared.
MODEL_LICENSE = "Apache-2.0"


def read_run(run_dir) -> tuple:
    """The run's record (config.json) and metrics (empty before its test report); a folder that is not a
    training run with a model is named in the error."""
    run = RunDir(run_dir)
    record = run.read_record()
    if record is None or not run.model_file.is_file():
        raise CheckpointError(f"{run.path} is not a training run directory (it needs model.keras and config.json)")
    return record, run.read_metrics() or {}


def file_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def write_samples(out: Path, images: np.ndarray, labels: np.ndarray, class_names) -> list[dict]:
    """The first test image of each class as a PNG, for the web page's one-click examples."""
    from PIL import Image

    folder = out / "samples"
    folder.mkdir(exist_ok=True)
    samples = []
    for index, name in enumerate(class_names):
        hits = np.flatnonzero(labels == index)
        if len(hits):
            Image.fromarray(images[hits[0]].astype(np.uint8)).save(folder / f"{name}.png")
            samples.append({"label": name, "file": f"samples/{name}.png"})
    return samples


def model_facts(run: RunDir, record, class_names) -> ModelFacts:
    """What each TFLite file's metadata says about the model, from the run that trained it."""
    config = record.config
    return ModelFacts(
        name=f"{record.arch} CIFAR-10 classifier ({run.path.name})",
        description=(
            f"Classifies a small RGB photo into the {len(class_names)} CIFAR-10 classes: {record.arch} (width "
            f"multiplier {config['width_multiplier']}, {record.model['parameters']:,} parameters) trained by "
            f"keras-cifar on CIFAR-10 (data fingerprint {record.fingerprint}). Takes raw 0-255 RGB pixels, returns "
            "probabilities."
        ),
        version=f"run {run.path.name}, code {record.environment.get('code', 'unknown')}, keras-cifar {__version__}",
        author="keras-cifar",
        license=MODEL_LICENSE,
        labels=tuple(class_names),
    )


def model_card(record, run_metrics: dict, report: dict) -> str:
    config, data = record.config, record.data
    tta = run_metrics.get("tta", "none")
    lines = [
        f"# {config['arch']} for CIFAR-10",
        "",
        f"- Architecture: `{config['arch']}` (width multiplier {config['width_multiplier']}), "
        f"{record.model['parameters']:,} parameters.",
        f"- Trained by keras-cifar: {config['epochs']} epochs max, batch {config['batch_size']}, {config['optimizer']} "
        f"at lr {config['lr']}, {config['schedule']} schedule, label smoothing {config['label_smoothing']}, precision "
        f"{record.runtime['precision']}, seed {config['seed']}.",
        f"- Data: CIFAR-10 ({data['source']}, fingerprint `{data['fingerprint']}`), splits {data['sizes']}.",
    ]
    if run_metrics:
        lines.append(
            f"- Test accuracy of the trained model: {run_metrics['accuracy']:.2%} (TTA: {tta}), macro F1 "
            f"{run_metrics['f1_macro']:.4f}, on {run_metrics['num_test_images']:,} test images."
        )
    lines += [
        f"- Input: {INPUT_DESCRIPTION}. Output: probabilities over {', '.join(report['labels'])}.",
        "",
        "## Exported formats (no test-time augmentation)",
        "",
        "| format | file | size | accuracy | vs Keras | top-1 agreement | latency p50 / p95 (batch 1) | img/s (batch 64) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["formats"].items():
        lines.append(
            f"| {name} | `{row['file']}` | {row['size_bytes'] / 1e6:.2f} MB | {row['accuracy']:.2%} | "
            f"{row['accuracy_delta_points']:+.2f} pt{' (flagged)' if row['flagged'] else ''} | "
            f"{row['top1_agreement']:.2%} | {row['latency_ms_median']:.2f} / {row['latency_ms_p95']:.2f} ms | "
            f"{row['throughput_images_per_second']:.0f} |"
        )
    lines += [
        "",
        f"Measured on {report['cpu']} with {report['tflite_runtime']}; reference: the Keras model in float32.",
        "",
        "## Intended use and limits",
        "",
        "Classifying small natural photos into the ten CIFAR-10 classes, and as a baseline for study. Inputs are",
        "resized to 32x32, so fine detail is lost; anything outside the ten classes is still given one of them",
        "(no 'unknown' class), and confidence is not calibrated for such inputs. Not for decisions about people.",
        "",
    ]
    return "\n".join(lines)


def export_run(run_dir, out, formats, images, labels, calibration_images, class_names, max_drop_points=1.0) -> dict:
    """Write every requested format into `out`, check each on (`images`, `labels`), and document the folder.

    The folder is built beside `out` and renamed into place only when whole, so a kill at any moment leaves the
    previous export or the new one, never a mix; one export at a time may write `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(out.parent / f".{out.name}.export", "export"):
        recover_folder(out)
        building = out.with_name(f".{out.name}.partial")
        shutil.rmtree(building, ignore_errors=True)  # a killed export's
        report = _build(run_dir, building, formats, images, labels, calibration_images, class_names, max_drop_points)
        replace_folder(building, out)
    return report


def _build(run_dir, out: Path, formats, images, labels, calibration_images, class_names, max_drop_points) -> dict:
    from keras_cifar.models.saving import load_model_file

    run = RunDir(run_dir)
    record, run_metrics = read_run(run.path)
    model = float32_copy(load_model_file(run.model_file))
    # labels.txt, metadata.json and the TFLite metadata all state these: refuse before converting if they are wrong.
    check_labels(class_names, model.output_shape[-1])
    if tuple(model.input_shape[1:]) != images.shape[1:]:
        raise MetadataError(f"the test images are {list(images.shape[1:])} but the model takes {model.input_shape[1:]}")
    facts = model_facts(run, record, class_names)
    out.mkdir(parents=True)
    print("export: converting savedmodel", flush=True)
    FORMATS["savedmodel"].convert(model, out / FORMATS["savedmodel"].file, out, calibration_images, facts)
    for name in formats:
        if name != "savedmodel":  # every TFLite file is converted from the SavedModel
            print(f"export: converting {name}", flush=True)
            FORMATS[name].convert(model, out / FORMATS[name].file, out, calibration_images, facts)

    reference = model.predict(images.astype(np.float32), batch_size=256, verbose=0)
    report = {
        "run_dir": str(run.path),
        "architecture": record.arch,
        "labels": list(class_names),
        "num_test_images": len(labels),
        "max_accuracy_drop_points": max_drop_points,
        "keras_float32_accuracy": float(np.mean(reference.argmax(1) == labels)),
        "cpu": cpu_info()["model"],
        "tflite_runtime": tflite_interpreter_class()[1],
        "formats": {},
    }
    for number, name in enumerate(formats, start=1):
        print(f"export: checking {name} on {len(labels):,} test images ({number}/{len(formats)})", flush=True)
        path = out / FORMATS[name].file
        predictor = load_predictor(out, name)
        row = check_format(predictor, images, labels, reference, max_drop_points)
        if path.suffix == ".tflite":
            check_metadata(path, class_names, images.shape[1:])  # what an app reads is what this folder says
            sample = images[:MEDIAPIPE_CHECK_IMAGES]
            row["mediapipe"] = mediapipe_check(path, sample, predictor.predict(sample), class_names)
            print(f"export: {name} in MediaPipe's ImageClassifier: {row['mediapipe']}", flush=True)
        report["formats"][name] = {
            "file": FORMATS[name].file,
            "description": FORMATS[name].description,
            "size_bytes": file_size(path),
            **row,
        }
    if "savedmodel" not in formats:
        shutil.rmtree(out / "savedmodel", ignore_errors=True)

    (out / "labels.txt").write_text("\n".join(class_names) + "\n")
    write_json(out / "export_report.json", report, sort_keys=False)  # formats in registry order
    (out / "model_card.md").write_text(model_card(record, run_metrics, report))
    write_json(
        out / "metadata.json",
        sort_keys=False,
        payload={
            "name": "cifar10",
            "architecture": record.arch,
            "parameters": record.model["parameters"],
            "input_shape": list(images.shape[1:]),
            "input": INPUT_DESCRIPTION,
            "labels": list(class_names),
            # The served file's own accuracy is in formats; the run's (possibly with TTA) is kept for reference.
            "num_test_images": len(labels),
            "run_metrics": {
                k: run_metrics[k] for k in ("accuracy", "f1_macro", "num_test_images", "tta") if k in run_metrics
            },
            "formats": {
                name: {k: row[k] for k in ("file", "accuracy", "size_bytes", "latency_ms_median")}
                for name, row in report["formats"].items()
            },
            "samples": write_samples(out, images, labels, class_names),
        },
    )
    print(format_report_table(report), flush=True)
    return report
