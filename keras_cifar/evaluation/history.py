"""Reading a run's history.csv (Keras CSVLogger), for the plots and the training summary alike."""

import csv
import math
from pathlib import Path

from keras_cifar.errors import KerasCifarError


def read_history(history_csv) -> dict[str, list[float]]:
    """The log as {column: [float, ...]}; a blank or "NA" cell (not logged that epoch) is NaN.

    CSVLogger pads the val_ columns of a run without validation data with "NA".
    """
    history_csv = Path(history_csv)
    if not history_csv.is_file():
        raise KerasCifarError(f"Training log {history_csv} does not exist; train a model first.")
    with history_csv.open(newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        raise KerasCifarError(f"Training log {history_csv} has no epochs in it; was training interrupted?")
    try:
        return {column: [_as_float(row[column]) for row in rows] for column in rows[0]}
    except (TypeError, ValueError) as error:
        raise KerasCifarError(f"Training log {history_csv} is not a Keras CSVLogger file: {error}") from error


def _as_float(cell):
    return math.nan if cell in ("", "NA") else float(cell)
