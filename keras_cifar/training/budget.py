"""Fitting a run to a wall-clock budget (`--time-budget MINUTES`).

The schedule must know its length before the first step, so a throwaway copy of the model is timed first and
the run gets as many epochs as the budget holds at that speed, to a tenth of an epoch (whole epochs left up to
an epoch of the budget unused: results/cpu/classic-b60-zen4/). Equal budgets then compare architectures by what
they learn per CPU-minute, each with a complete LR schedule.

The probe times what an epoch really costs, not a train step alone: batches come from the run's own tf.data
pipeline (its augmentation shares the two cores with the step), each epoch's two checkpoint writes are timed
on the probe, and the first step's tracing is paid once. A probe of steps on one in-memory batch missed all
three and planned runs 13 % under to 19 % over their budget (docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path

# Inference costs about a third of a training step per image (no backward pass).
EVAL_COST = 1 / 3
# The first steps of a new model trace it and pick oneDNN kernels, and run slower; after them, at least
# TIMED_STEPS steps and TIMED_SECONDS are timed, so a small net's 0.1 s steps still average over the pipeline's
# prefetch rhythm.
WARMUP_STEPS = 2
TIMED_STEPS = 5
TIMED_SECONDS = 5.0
# Each epoch writes the model twice: the checkpoint (model.keras) and the crash backup.
SAVES_PER_EPOCH = 2


@dataclasses.dataclass(frozen=True)
class Probe:
    """What the probe measured, in seconds."""

    step: float  # a train step in steady state, its batch's wait on the input pipeline included
    first_step: float  # the first step, tracing included
    save: float  # one write of the model

    def epoch_overhead(self, eval_images, batch_size) -> float:
        """What an epoch costs besides its train steps, paid by a short last epoch too: validation, checkpoints."""
        return eval_images / batch_size * self.step * EVAL_COST + SAVES_PER_EPOCH * self.save

    def epoch_seconds(self, steps_per_epoch, eval_images, batch_size) -> float:
        return steps_per_epoch * self.step + self.epoch_overhead(eval_images, batch_size)


def probe(model, dataset, max_steps=None) -> Probe:
    """Time `model` training on batches of `dataset` (the run's tf.data pipeline, repeated as needed) and
    writing itself once. `max_steps` caps the timed steps (say, at one epoch's)."""
    batches = dataset.repeat().as_numpy_iterator()

    def step():
        images, labels = next(batches)
        model.train_on_batch(images, labels)

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    for _ in range(WARMUP_STEPS - 1):
        step()
    start, timed = time.perf_counter(), 0
    while timed < TIMED_STEPS or (time.perf_counter() - start < TIMED_SECONDS and timed < (max_steps or math.inf)):
        step()
        timed += 1
    steady = (time.perf_counter() - start) / timed
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        model.save(Path(scratch) / "probe.keras")
        save = time.perf_counter() - start
    return Probe(step=steady, first_step=first, save=save)


def epochs_for_budget(budget_seconds, measured: Probe, steps_per_epoch, eval_images, batch_size) -> int | float:
    """Epochs (at least one, in tenths) that fit in the budget at the probe's speed, after the tracing the first
    step pays once. A short last epoch pays its whole overhead (validation, checkpoints), and its steps the rest."""
    available = budget_seconds - max(measured.first_step - measured.step, 0.0)
    steps = steps_per_epoch * measured.step
    overhead = measured.epoch_overhead(eval_images, batch_size)
    whole = int(available // (steps + overhead))
    if whole < 1:
        return 1
    left = available - whole * (steps + overhead) - overhead
    tenths = min(9, int(10 * left // steps)) if left > 0 else 0
    return round(whole + tenths / 10, 1) if tenths else whole
