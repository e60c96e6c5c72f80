"""Fitting a run to a wall-clock budget (`--time-budget MINUTES`).

The schedule must know its length before the first step, so a throwaway copy of the model is timed for a
few steps first, and the run gets as many whole epochs as the budget holds at that speed. Equal budgets
then compare architectures by what they learn per CPU-minute, each with a complete LR schedule.
"""

from __future__ import annotations

import time

import numpy as np

# Inference costs about a third of a training step per image (no backward pass).
EVAL_COST = 1 / 3
# The first steps of a new model trace it and pick oneDNN kernels, and run slower; the median of the timed ones
# resists one slow step.
WARMUP_STEPS = 2
TIMED_STEPS = 5


def seconds_per_step(model, images, labels, num_classes=10) -> float:
    """Median time of a train step after the warm-up steps, on one real batch."""
    x = images.astype(np.float32)
    y = np.eye(num_classes, dtype=np.float32)[labels]
    for _ in range(WARMUP_STEPS):
        model.train_on_batch(x, y)
    times = []
    for _ in range(TIMED_STEPS):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def epochs_for_budget(budget_seconds, step_seconds, steps_per_epoch, eval_images, batch_size) -> int:
    """Whole epochs (at least one) whose training and validation fit in the budget."""
    eval_seconds = eval_images / batch_size * step_seconds * EVAL_COST
    return max(1, int(budget_seconds // (steps_per_epoch * step_seconds + eval_seconds)))
