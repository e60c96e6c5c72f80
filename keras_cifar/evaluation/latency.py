"""How fast a predictor answers on this CPU: the one timing that exports and the comparison report share."""

from __future__ import annotations

import statistics
import time

import numpy as np


def speed(
    predictor, images: np.ndarray, latency_runs: int = 50, throughput_batch: int = 64, throughput_runs: int = 5
) -> dict:
    """Batch-1 latency (median, p95) and batch-64 throughput; a few untimed calls first absorb one-off set-up."""
    single, batch = images[:1], np.resize(images, (throughput_batch, *images.shape[1:]))
    for _ in range(3):
        predictor.predict(single)
    times = []
    for i in range(latency_runs):
        start = time.perf_counter()
        predictor.predict(images[i % len(images)][None])
        times.append(time.perf_counter() - start)
    predictor.predict(batch)
    start = time.perf_counter()
    for _ in range(throughput_runs):
        predictor.predict(batch)
    elapsed = time.perf_counter() - start
    return {
        "latency_ms_median": 1e3 * statistics.median(times),
        "latency_ms_p95": 1e3 * float(np.percentile(times, 95)),
        "throughput_images_per_second": throughput_batch * throughput_runs / elapsed,
    }
