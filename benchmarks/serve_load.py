"""Bounded load test of the prediction server on 127.0.0.1: requests/second and latency per format.

    python benchmarks/serve_load.py --model exported_models/NAME --requests 400 --concurrency 16 \\
        --formats tflite-float32,savedmodel --batch-window-ms 0,2

For each format and batching window, starts `python -m keras_cifar.serve` on a free port, sends a fixed number
of single-image upload requests from `--concurrency` client threads (stopping early at `--time-limit`
seconds), and prints requests/second with p50/p99 latency. The client shares the CPU with the server, so the
figures are a floor for a server with the machine to itself.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import statistics
import time
from pathlib import Path

from serve_process import start_server


def sample_png(model) -> bytes:
    metadata = json.loads((Path(model) / "metadata.json").read_text())
    if metadata.get("samples"):
        return (Path(model) / metadata["samples"][0]["file"]).read_bytes()
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (120, 80, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def load(port, image, requests, concurrency, time_limit) -> dict:
    import httpx

    url = f"http://127.0.0.1:{port}/v1/predict"
    stop_at = time.perf_counter() + time_limit
    latencies, failures = [], 0

    def one(client):
        start = time.perf_counter()
        response = client.post(url, files=[("files", ("x.png", image, "image/png"))])
        return time.perf_counter() - start, response.status_code

    start = time.perf_counter()
    with (
        httpx.Client(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client,
        concurrent.futures.ThreadPoolExecutor(concurrency) as pool,
    ):
        pending = set()
        sent = 0
        while sent < requests or pending:
            while sent < requests and len(pending) < concurrency and time.perf_counter() < stop_at:
                pending.add(pool.submit(one, client))
                sent += 1
            if not pending:
                break
            done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                seconds, status = future.result()
                latencies.append(seconds)
                failures += status != 200
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "failures": failures,
        "seconds": elapsed,
        "requests_per_second": len(latencies) / elapsed,
        "p50_ms": 1e3 * statistics.median(latencies),
        "p99_ms": 1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an export folder")
    parser.add_argument("--formats", default="tflite-float32,savedmodel,tflite-int8")
    parser.add_argument("--batch-window-ms", default="0,2", help="comma-separated batching windows to compare")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--time-limit", type=float, default=60.0, help="stop sending after this many seconds")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    image = sample_png(args.model)
    print(
        f"# {os.cpu_count()} cores; {args.requests} single-image uploads, {args.concurrency} concurrent, "
        f"limit {args.time_limit:g} s"
    )
    print(f"{'format':<20} {'window ms':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7}")
    results = []
    for fmt in args.formats.split(","):
        for window in args.batch_window_ms.split(","):
            server, port = start_server(args.model, ["--format", fmt, "--batch-window-ms", window])
            try:
                load(port, image, 20, args.concurrency, 30)  # warm-up: first calls allocate and pick kernels
                row = {
                    "format": fmt,
                    "batch_window_ms": float(window),
                    **load(port, image, args.requests, args.concurrency, args.time_limit),
                }
            finally:
                server.terminate()
                server.wait(30)
            results.append(row)
            print(
                f"{fmt:<20} {row['batch_window_ms']:>9g} {row['requests_per_second']:>8.1f} {row['p50_ms']:>8.1f} "
                f"{row['p99_ms']:>8.1f} {row['failures']:>7}",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"concurrency": args.concurrency, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
