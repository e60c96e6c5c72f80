"""Scoring a trained model on the test set, and the figures and reports that show the result."""

from keras_cifar.evaluation.metrics import (
    compute_metrics,
    format_metrics_table,
    most_confused_pairs,
    predict_probabilities,
    write_metrics,
)
from keras_cifar.evaluation.plots import plot_confusion_matrix, plot_training_curves
from keras_cifar.evaluation.report import evaluate_model, load_model_file, report_run, training_summary

__all__ = [
    "compute_metrics",
    "evaluate_model",
    "load_model_file",
    "format_metrics_table",
    "most_confused_pairs",
    "plot_confusion_matrix",
    "plot_training_curves",
    "predict_probabilities",
    "report_run",
    "training_summary",
    "write_metrics",
]
