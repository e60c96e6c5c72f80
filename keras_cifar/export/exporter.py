"""Export a run's best model to every deployment format, check each against the Keras model, document it.

An export folder is self-contained: the model files, `labels.txt`, `metadata.json` (read by the server),
`export_report.json`, `model_card.md` and a few test images under `samples/` for the web page.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from keras_cifar.errors import CheckpointError
from keras_cifar.export.check import check_format, format_report_table
from keras_cifar.export.convert import FORMATS, convert_tflite, export_savedmodel, float32_copy
from keras_cifar.export.runtime import load_predictor, tflite_interpreter_class

INPUT_DESCRIPTION = "RGB pixels 0-255, shape [N, 32, 32, 3], float32 or uint8; normalisation is inside the model"


def read_run(run_dir: Path) -> tuple[dict, dict]:
    """The run's config.json and metrics.json; a folder that is not a finished run is named in the error."""
    config_file, metrics_file = run_dir / "config.json", run_dir / "metrics.json"
    if not (run_dir / "model.keras").is_file() or not config_file.is_file():
        raise CheckpointError(f"{run_dir} is not a training run directory (it needs model.keras and config.json)")
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return json.loads(config_file.read_text()), metrics


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


def model_card(run_config: dict, run_metrics: dict, report: dict) -> str:
    config, data = run_config["config"], run_config["data"]
    tta = run_metrics.get("tta", "none")
    lines = [
        f"# {config['arch']} for CIFAR-10",
        "",
        f"- Architecture: `{config['arch']}` (width multiplier {config['width_multiplier']}), "
        f"{run_config['model']['parameters']:,} parameters.",
        f"- Trained by keras-cifar: {config['epochs']} epochs max, batch {config['batch_size']}, {config['optimizer']} "
        f"at lr {config['lr']}, {config['schedule']} schedule, label smoothing {config['label_smoothing']}, precision "
        f"{run_config['runtime']['precision']}, seed {config['seed']}.",
        f"- Data: CIFAR-10 ({data['source']}, fingerprint `{data['fingerprint']}`), splits {data['sizes']}.",
    ]
    if run_metrics:
        lines.append(f"- Test accuracy of the trained model: {run_metrics['accuracy']:.2%} (TTA: {tta}), macro F1 "
                     f"{run_metrics['f1_macro']:.4f}, on {run_metrics['num_test_images']:,} test images.")
    lines += [
        f"- Input: {INPUT_DESCRIPTION}. Output: probabilities over {', '.join(report['labels'])}.",
        "",
        "## Exported formats (no test-time augmentation)",
        "",
        "| format | file | size | accuracy | vs Keras | top-1 agreement | latency p50 / p95 (batch 1) | img/s (batch 64) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["formats"].items():
        lines.append(f"| {name} | `{row['file']}` | {row['size_bytes'] / 1e6:.2f} MB | {row['accuracy']:.2%} | "
                     f"{row['accuracy_delta_points']:+.2f} pt{' (flagged)' if row['flagged'] else ''} | "
                     f"{row['top1_agreement']:.2%} | {row['latency_ms_median']:.2f} / {row['latency_ms_p95']:.2f} ms | "
                     f"{row['throughput_images_per_second']:.0f} |")
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


def export_run(run_dir, out, formats, images, labels, calibration_images, class_names,
               max_drop_points=1.0) -> dict:
    """Write every requested format into `out`, check each on (`images`, `labels`), and document the folder."""
    from keras_cifar.evaluation.report import load_model_file
    from keras_cifar.training.host import environment

    run_dir, out = Path(run_dir), Path(out)
    run_config, run_metrics = read_run(run_dir)
    model = float32_copy(load_model_file(run_dir / "model.keras"))
    out.mkdir(parents=True, exist_ok=True)
    saved_model = out / FORMATS["savedmodel"][0]
    shutil.rmtree(saved_model, ignore_errors=True)
    export_savedmodel(model, saved_model)  # every TFLite file is converted from it
    for name in formats:
        if name != "savedmodel":
            (out / FORMATS[name][0]).write_bytes(convert_tflite(saved_model, name, calibration_images))

    reference = model.predict(images.astype(np.float32), batch_size=256, verbose=0)
    report = {"run_dir": str(run_dir), "architecture": run_config["config"]["arch"], "labels": list(class_names),
              "num_test_images": len(labels), "max_accuracy_drop_points": max_drop_points,
              "keras_float32_accuracy": float(np.mean(reference.argmax(1) == labels)),
              "cpu": environment()["cpu"]["model"], "tflite_runtime": tflite_interpreter_class()[1], "formats": {}}
    for name in formats:
        row = check_format(load_predictor(out, name), images, labels, reference, max_drop_points)
        report["formats"][name] = {"file": FORMATS[name][0], "description": FORMATS[name][1],
                                   "size_bytes": file_size(out / FORMATS[name][0]), **row}
    if "savedmodel" not in formats:
        shutil.rmtree(out / "savedmodel", ignore_errors=True)

    (out / "labels.txt").write_text("\n".join(class_names) + "\n")
    (out / "export_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "model_card.md").write_text(model_card(run_config, run_metrics, report))
    metadata = {
        "name": "cifar10", "architecture": run_config["config"]["arch"], "parameters": run_config["model"]["parameters"],
        "input_shape": list(images.shape[1:]), "input": INPUT_DESCRIPTION, "labels": list(class_names),
        # The served file's own accuracy is in formats; the run's (possibly with TTA) is kept for reference.
        "num_test_images": len(labels),
        "run_metrics": {k: run_metrics[k] for k in ("accuracy", "f1_macro", "num_test_images", "tta") if k in run_metrics},
        "formats": {name: {k: row[k] for k in ("file", "accuracy", "size_bytes", "latency_ms_median")}
                    for name, row in report["formats"].items()},
        "samples": write_samples(out, images, labels, class_names),
    }
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    print(format_report_table(report), flush=True)
    return report
