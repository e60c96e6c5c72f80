"""Bounded fault and load test of the prediction server on 127.0.0.1: hostile inputs mixed with good traffic.

    python benchmarks/serve_faults.py --export exported_models/NAME            # about 1-2 minutes
    python benchmarks/serve_faults.py --export exported_models/NAME --small    # about 15 s (what the tests run)

Starts `python -m keras_cifar.serve` on a free loopback port and, from `--clients` threads, sends good uploads
and TF Serving JSON mixed with decompression bombs (palette PNGs of 7000x7000 and of the largest accepted
4096x4096, JPEGs whose headers claim 65500x65500 or 8000x8000, a GIF of 50,000 frames, a WebP claiming
16383x16383, a request of max-batch bombs) and malformed requests (truncated multipart, chunked bodies over the
limit with no Content-Length, a Content-Length over it, JSON nested 100,000 deep, a 5,000-digit integer,
strings, booleans and NaN as pixels, a text file, a TIFF, an empty file, too many files). Meanwhile a monitor
asks `/healthz` every 100 ms and samples the server's RSS.

Prints requests by kind and status code, every 5xx, `/healthz` latency (p50/p95/max, overall and while bombs
were being sent), peak RSS, and whether the server logged a traceback. Exits 1 if any response was 5xx, the
server logged a traceback, or it died. Nothing leaves the machine; the run stops at `--time-limit` seconds.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import io
import json
import os
import re
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from serve_process import start_server

# ---- inputs ---------------------------------------------------------------------------------------------------


def encode(image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small valid JPEG whose frame header (SOF0) is rewritten to claim width x height."""
    from PIL import Image

    data = bytearray(encode(Image.new("RGB", (16, 16), (90, 120, 200)), "JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    """A small lossless WebP whose VP8L header is rewritten to claim width x height (at most 16384 each)."""
    from PIL import Image

    data = bytearray(encode(Image.new("RGB", (16, 16), (10, 200, 10)), "WEBP", lossless=True))
    at = data.find(b"VP8L") + 8 + 1  # chunk tag, chunk size, signature byte 0x2f
    bits = struct.unpack("<I", data[at : at + 4])[0]
    bits = (bits & ~0xFFFFFFF) | (width - 1) | ((height - 1) << 14)
    data[at : at + 4] = struct.pack("<I", bits)
    return bytes(data)


def gif_with_frames(frames: int, size: int = 64) -> bytes:
    """A GIF whose first frame is size x size, followed by `frames - 1` one-pixel frames (15 bytes each)."""
    from PIL import Image

    first = encode(Image.new("P", (size, size), 1), "GIF")
    assert first.endswith(b";")
    # Image descriptor at (0, 0), 1x1, no local palette; LZW minimum code size 2; codes clear, 0, end packed
    # LSB-first in one sub-block; block terminator.
    frame = b"\x2c" + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00" + b"\x02" + b"\x02\x44\x01" + b"\x00"
    return first[:-1] + frame * (frames - 1) + b";"


def bad_exif_jpeg() -> bytes:
    """A JPEG whose EXIF block has an orientation and a resolution tag of the wrong type (Pillow cannot rewrite it)."""
    import warnings

    from PIL import Image

    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")
    exif = Image.Exif()
    exif[0x0112], exif[0x011A] = 6, (72, 1)
    raw = bytearray(exif.tobytes())
    order = "<" if raw[6:8] == b"II" else ">"
    at = raw.find(struct.pack(order + "HH", 0x011A, 5))
    raw[at + 2 : at + 4] = struct.pack(order + "H", 2)  # RATIONAL -> ASCII
    return encode(Image.new("RGB", (60, 40), (200, 40, 40)), "JPEG", exif=bytes(raw))


def inputs(export: Path) -> dict:
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(0)
    metadata = json.loads((export / "metadata.json").read_text())
    samples = [export / s["file"] for s in metadata.get("samples", [])]
    sample = samples[0].read_bytes() if samples else encode(Image.new("RGB", (32, 32), (120, 80, 40)), "PNG")
    photo = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(3))
    sixteen = Image.fromarray(np.full((40, 40), 128 * 257, dtype=np.uint16))
    return {
        "sample_png": sample,
        "photo_jpeg": encode(photo, "JPEG", quality=90),
        "png16": encode(sixteen, "PNG"),
        "bad_exif": bad_exif_jpeg(),
        "palette_7000": encode(Image.new("P", (7000, 7000)), "PNG"),
        "palette_4096": encode(Image.new("P", (4096, 4096)), "PNG"),
        "jpeg_4096": encode(Image.new("RGB", (4096, 4096), (30, 60, 90)), "JPEG"),
        "jpeg_65500": jpeg_claiming(65500, 65500),
        "jpeg_8000": jpeg_claiming(8000, 8000),
        "gif_frames": gif_with_frames(50_000),
        "webp_16383": webp_claiming(16383, 16383),
        "tiff": encode(Image.new("RGB", (40, 40)), "TIFF"),
        "json_image": rng.integers(0, 256, (32, 32, 3)).tolist(),
    }


# ---- requests -------------------------------------------------------------------------------------------------


def files(*items):
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def raw_request(port: int, head: str, chunks, timeout: float = 30.0) -> tuple[int | str, int]:
    """Send `head` then each chunk (already framed), watching for an early response; (status, bytes sent)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        for chunk in chunks:
            if select.select([sock], [], [], 0.01)[0]:
                break  # the server answered before the body ended
            try:
                sock.sendall(chunk)
            except OSError:
                break
            sent += len(chunk)
        sock.settimeout(timeout)
        try:
            answer = sock.recv(65536)
        except OSError as exc:
            return f"no answer ({type(exc).__name__})", sent
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return (int(match.group(1)) if match else "no answer"), sent


def chunked(total: int, piece: int = 1 << 20, first: bytes = b""):
    """A chunked body of `first` then `total` bytes of filler, framed in pieces; the server should stop it early."""
    if first:
        yield f"{len(first):x}\r\n".encode() + first + b"\r\n"
    block = b"x" * piece
    framed = f"{piece:x}\r\n".encode() + block + b"\r\n"
    for _ in range(total // piece):
        yield framed
    yield b"0\r\n\r\n"


NOTES: dict[str, str] = {}  # what the chunked senders saw, for the summary


def request_kinds(data: dict, port: int, max_batch: int, upload_limit: int, json_limit: int, small: bool) -> list:
    """(kind, category, send(client) -> status) for every request of the mix; category: good, bomb or malformed."""
    image = data["json_image"]
    tf = "/v1/models/cifar10:predict"
    bombs = max_batch if not small else min(max_batch, 8)

    def upload(*items, params=None):
        return lambda c: c.post("/v1/predict", files=files(*items), params=params).status_code

    def post_json(body: bytes):
        return lambda c: c.post(tf, content=body, headers={"content-type": "application/json"}).status_code

    def chunked_upload(c):
        head = (
            "POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: multipart/form-data; boundary=XyZ\r\n\r\n"
        )
        part = b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n\r\n'
        total = upload_limit + (16 << 20)
        status, sent = raw_request(port, head, chunked(total, first=part))
        NOTES["chunked upload over the limit"] = (
            f"answered {status} after {sent / 2**20:.1f} MiB sent of "
            f"{total / 2**20:.0f} MiB (limit {upload_limit / 2**20:.1f} MiB)"
        )
        return status

    def chunked_json(c):
        head = (
            f"POST {tf} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: application/json\r\n\r\n"
        )
        total = json_limit + (4 << 20)
        status, sent = raw_request(port, head, chunked(total, 1 << 16, first=b'{"instances": ['))
        NOTES["chunked json over the limit"] = (
            f"answered {status} after {sent / 2**20:.1f} MiB sent of "
            f"{total / 2**20:.0f} MiB (limit {json_limit / 2**20:.1f} MiB)"
        )
        return status

    def declared_oversize(c):
        head = (
            f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {upload_limit + 1}\r\n"
            "Content-Type: multipart/form-data; boundary=XyZ\r\n\r\n"
        )
        return raw_request(port, head, [])[0]

    truncated = (
        b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + data["sample_png"][:40]
    )
    return [
        ("upload sample png", "good", upload(("a.png", data["sample_png"]))),
        ("upload 640x480 jpeg", "good", upload(("photo.jpg", data["photo_jpeg"]))),
        ("upload 8 images", "good", upload(*[(f"{i}.png", data["sample_png"]) for i in range(min(8, max_batch))])),
        ("upload 16-bit png", "good", upload(("gray16.png", data["png16"]))),
        ("upload jpeg, broken exif", "good", upload(("exif.jpg", data["bad_exif"]))),
        ("tf json 1 image", "good", post_json(json.dumps({"instances": [image]}).encode())),
        ("tf json 4 images", "good", post_json(json.dumps({"instances": [image] * min(4, max_batch)}).encode())),
        ("bomb png palette 7000x7000", "bomb", upload(("p7000.png", data["palette_7000"]))),
        (
            f"bomb {bombs} x png palette 7000x7000",
            "bomb",
            upload(*[(f"p7000-{i}.png", data["palette_7000"]) for i in range(bombs)]),
        ),
        (
            f"bomb {bombs} x png palette 4096x4096",
            "bomb",
            upload(*[(f"p4096-{i}.png", data["palette_4096"]) for i in range(bombs)]),
        ),
        ("bomb jpeg 4096x4096 (accepted)", "bomb", upload(("j4096.jpg", data["jpeg_4096"]))),
        ("bomb jpeg claiming 65500x65500", "bomb", upload(("j65500.jpg", data["jpeg_65500"]))),
        ("bomb jpeg claiming 8000x8000", "bomb", upload(("j8000.jpg", data["jpeg_8000"]))),
        ("bomb gif of 50,000 frames", "bomb", upload(("frames.gif", data["gif_frames"]))),
        ("bomb webp claiming 16383x16383", "bomb", upload(("huge.webp", data["webp_16383"]))),
        (
            "truncated multipart",
            "malformed",
            lambda c: (
                c.post(
                    "/v1/predict", content=truncated, headers={"content-type": "multipart/form-data; boundary=XyZ"}
                ).status_code
            ),
        ),
        ("chunked upload over the limit", "malformed", chunked_upload),
        ("chunked json over the limit", "malformed", chunked_json),
        ("content-length over the limit", "malformed", declared_oversize),
        ("json nested 100,000 deep", "malformed", post_json(b"[" * 100_000 + b"]" * 100_000)),
        ("json 5,000-digit integer", "malformed", post_json(b'{"instances": [' + b"9" * 5000 + b"]}")),
        (
            "json strings as pixels",
            "malformed",
            post_json(json.dumps({"instances": [[[["1", "2", "3"]] * 32] * 32]}).encode()),
        ),
        (
            "json booleans as pixels",
            "malformed",
            post_json(json.dumps({"instances": [[[[True, False, True]] * 32] * 32]}).encode()),
        ),
        ("json NaN pixels", "malformed", post_json(b'{"instances": [[[[NaN, 1, 2]]]]}')),
        ("not json", "malformed", post_json(b"{nope")),
        ("text file as png", "malformed", upload(("notes.png", b"hello, not an image"))),
        ("tiff (not advertised)", "malformed", upload(("a.tiff", data["tiff"]))),
        ("empty file", "malformed", upload(("empty.png", b""))),
        ("too many files", "malformed", upload(*[(f"{i}.png", data["sample_png"]) for i in range(max_batch + 1)])),
    ]


# ---- server and monitor ----------------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int | None:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - the process ended
        return None
    try:
        text = Path(f"/proc/{pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) * 1024
    except (OSError, AttributeError):
        return None


class Monitor(threading.Thread):
    """Asks /healthz every `interval` s (each with its own 10 s timeout) and samples the server's RSS."""

    def __init__(self, port: int, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.port, self.pid, self.interval = port, pid, interval
        self.bombs_in_flight = 0
        self.lock = threading.Lock()
        self.samples: list[tuple[float, bool]] = []  # (latency s or inf on failure, bombs in flight)
        self.rss: list[int] = []
        self.stop = threading.Event()

    def run(self):
        import httpx

        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10) as client:
            while not self.stop.is_set():
                bombs = self.bombs_in_flight > 0
                start = time.perf_counter()
                try:
                    ok = client.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.samples.append((time.perf_counter() - start if ok else float("inf"), bombs))
                rss = rss_bytes(self.pid)
                if rss:
                    self.rss.append(rss)
                self.stop.wait(self.interval)


def percentiles(values) -> dict:
    if not values:
        return {"count": 0}
    values = sorted(values)
    return {
        "count": len(values),
        "p50_ms": 1e3 * statistics.median(values),
        "p95_ms": 1e3 * values[min(len(values) - 1, int(0.95 * len(values)))],
        "max_ms": 1e3 * values[-1],
    }


# ---- the run ---------------------------------------------------------------------------------------------------


def run(args) -> dict:
    import httpx

    export = Path(args.export).resolve()
    server_args = ["--max-upload-mb", str(args.max_upload_mb), "--max-batch", str(args.max_batch)]
    upload_limit = int(args.max_upload_mb * 2**20) * args.max_batch + 64 * 1024
    json_limit = max(2**20, args.max_batch * 32 * 32 * 3 * 24)
    data = inputs(export)
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (the server writes to it until the end)
    server, port = start_server(export, server_args, log=log)
    results = collections.defaultdict(collections.Counter)
    failures = []
    try:
        base = f"http://127.0.0.1:{port}"
        monitor = Monitor(port, server.pid)
        monitor.start()
        time.sleep(1.0)  # an idle baseline for RSS and /healthz
        idle_samples = len(monitor.samples)
        kinds = request_kinds(data, port, args.max_batch, upload_limit, json_limit, args.small)
        local = threading.local()
        clients = []

        def send(kind, category, fn):
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=base, timeout=120)
                clients.append(local.client)
            if category == "bomb":
                with monitor.lock:
                    monitor.bombs_in_flight += 1
            try:
                status = fn(local.client)
            except (httpx.HTTPError, OSError) as exc:
                status = f"client error ({type(exc).__name__})"
            finally:
                if category == "bomb":
                    with monitor.lock:
                        monitor.bombs_in_flight -= 1
            return kind, status

        jobs = []
        for _ in range(args.rounds):
            good = [k for k in kinds if k[1] == "good"]
            jobs += [k for k in kinds if k[1] != "good"] + good * args.good_per_round
        start = time.perf_counter()
        deadline = start + args.time_limit
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            pending, queue = set(), list(reversed(jobs))
            while queue or pending:
                while queue and len(pending) < args.clients and time.perf_counter() < deadline:
                    pending.add(pool.submit(send, *queue.pop()))
                if not pending:
                    break
                done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    kind, status = future.result()
                    results[kind][status] += 1
                    if not isinstance(status, int) or (status >= 500 and status != 503):
                        failures.append((kind, status))
        elapsed = time.perf_counter() - start
        for client in clients:
            client.close()
        time.sleep(0.5)
        monitor.stop.set()
        monitor.join()
        with httpx.Client(base_url=base, timeout=30) as after:
            alive = after.get("/healthz").status_code == 200
            metrics = after.get("/metrics").text
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    log.seek(0)
    server_log = log.read()
    metric_5xx = {
        line.split()[0]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("keras_cifar_requests_total") and re.search(r'status="5\d\d"', line)
    }
    samples = monitor.samples[idle_samples:]
    statuses = collections.Counter()
    for counter in results.values():
        statuses.update({str(k): v for k, v in counter.items()})
    return {
        "seconds": elapsed,
        "requests": sum(statuses.values()),
        "clients": args.clients,
        "by_status": dict(sorted(statuses.items())),
        "by_kind": {kind: {str(k): v for k, v in counter.items()} for kind, counter in results.items()},
        "five_xx": [f"{kind}: {status}" for kind, status in failures],
        "overload_503": statuses.get("503", 0),
        "five_xx_in_metrics": metric_5xx,
        "healthz_idle": percentiles([s for s, _ in monitor.samples[:idle_samples]]),
        "healthz_under_load": percentiles([s for s, _ in samples]),
        "healthz_while_bombs": percentiles([s for s, bombs in samples if bombs]),
        "healthz_failed": sum(1 for s, _ in monitor.samples if s == float("inf")),
        "rss_idle_mb": (monitor.rss[0] / 2**20) if monitor.rss else None,
        "rss_peak_mb": (max(monitor.rss) / 2**20) if monitor.rss else None,
        "server_alive_after": alive,
        "notes": dict(NOTES),
        "server_tracebacks": server_log.count("Traceback"),
        "server_log_tail": server_log[-1500:],
    }


def print_summary(result: dict) -> None:
    print(
        f"# {result['requests']} requests from {result['clients']} clients in {result['seconds']:.1f} s "
        f"({os.cpu_count()} cores)"
    )
    print(f"{'kind':<40} statuses")
    for kind, counts in result["by_kind"].items():
        print(f"{kind:<40} " + ", ".join(f"{status}: {n}" for status, n in sorted(counts.items())))
    print("by status: " + ", ".join(f"{status}: {n}" for status, n in result["by_status"].items()))
    print(
        f"5xx answers or client errors: {len(result['five_xx'])} {result['five_xx'][:5] if result['five_xx'] else ''}"
        f"; 503 overload answers (Retry-After): {result['overload_503']}"
    )
    print(f"5xx counted in /metrics: {result['five_xx_in_metrics'] or 'none'}")
    for name in ("healthz_idle", "healthz_under_load", "healthz_while_bombs"):
        p = result[name]
        if p["count"]:
            print(
                f"{name:<20} n={p['count']:<4} p50 {p['p50_ms']:7.1f} ms  p95 {p['p95_ms']:7.1f} ms  "
                f"max {p['max_ms']:7.1f} ms"
            )
    print(f"healthz failures: {result['healthz_failed']}")
    for kind, note in result["notes"].items():
        print(f"{kind}: {note}")
    if result["rss_peak_mb"]:
        print(f"server RSS: idle {result['rss_idle_mb']:.0f} MiB, peak {result['rss_peak_mb']:.0f} MiB")
    print(f"server alive after: {result['server_alive_after']}; tracebacks in its log: {result['server_tracebacks']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", required=True, help="an export folder (python -m keras_cifar.export)")
    parser.add_argument("--small", action="store_true", help="one round, few clients: about 15 s")
    parser.add_argument("--rounds", type=int, default=None, help="times the whole mix is sent (default 5; 1 small)")
    parser.add_argument(
        "--good-per-round", type=int, default=None, help="good requests of each kind per round (default 20; 3 small)"
    )
    parser.add_argument("--clients", type=int, default=None, help="concurrent client threads (default 12; 6 small)")
    parser.add_argument("--max-upload-mb", type=float, default=None, help="server limit (default 5; 1 small)")
    parser.add_argument("--max-batch", type=int, default=None, help="server limit (default 32; 8 small)")
    parser.add_argument("--time-limit", type=float, default=90.0, help="stop sending after this many seconds")
    parser.add_argument("--json", default=None, help="also write the result to this JSON file")
    args = parser.parse_args(argv)
    small = args.small
    for name, full, reduced in (
        ("rounds", 5, 1),
        ("good_per_round", 20, 3),
        ("clients", 12, 6),
        ("max_upload_mb", 5.0, 1.0),
        ("max_batch", 32, 8),
    ):
        if getattr(args, name) is None:
            setattr(args, name, reduced if small else full)
    result = run(args)
    print_summary(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["five_xx"] or result["server_tracebacks"] or not result["server_alive_after"] else 0


if __name__ == "__main__":
    sys.exit(main())
