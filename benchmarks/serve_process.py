"""`python -m keras_cifar.serve` as a child process on a free loopback port: what the load and fault benchmarks
and the server's tests all start."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class ServerExited(RuntimeError):
    """The server ended before it answered /healthz; the message is the end of its output."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model, extra=(), port=None, log=None, timeout=180) -> tuple[subprocess.Popen, int]:
    """The server on `port` (a free one by default) once /healthz answers: (process, port). Its output goes to
    `log` (a temporary file by default), whose end `ServerExited` carries if it stops first."""
    import httpx

    port = port or free_port()
    log = log or tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (the server writes to it while it runs)
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_cifar.serve", "--model", str(model), "--port", str(port), *map(str, extra)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return process, port
        except httpx.HTTPError:
            time.sleep(0.2)
    if process.poll() is None:
        process.kill()
        process.wait()
    log.seek(0)
    raise ServerExited(f"the server did not start on port {port}: {log.read()[-2000:]}")
