"""benchmarks/serve_faults.py --small against a live server on loopback: bombs, malformed bodies and good traffic
at once; no 5xx, no traceback, /healthz under a second throughout, and each kind of request answered as it should."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

ACCEPTED = {"bomb jpeg 4096x4096 (accepted)", "bomb gif of 50,000 frames", "bomb 8 x png palette 4096x4096"}
EXPECTED = {
    "truncated multipart": 422,
    "chunked upload over the limit": 413,
    "chunked json over the limit": 413,
    "content-length over the limit": 413,
    "json nested 100,000 deep": 400,
    "json 5,000-digit integer": 400,
    "json strings as pixels": 400,
    "json booleans as pixels": 400,
    "json NaN pixels": 400,
    "not json": 400,
    "text file as png": 422,
    "tiff (not advertised)": 422,
    "empty file": 422,
    "too many files": 413,
}


def test_faults_and_bombs_get_4xx_while_healthz_stays_fast(exported, tmp_path):
    out = tmp_path / "faults.json"
    run = subprocess.run(
        [sys.executable, "benchmarks/serve_faults.py", "--export", str(exported), "--small", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["five_xx"] == [] and result["overload_503"] == 0 and not result["five_xx_in_metrics"]
    assert result["server_tracebacks"] == 0 and result["server_alive_after"], result["server_log_tail"]
    for kind, statuses in result["by_kind"].items():
        if kind in EXPECTED:
            assert set(statuses) == {str(EXPECTED[kind])}, (kind, statuses)
        elif kind.startswith("bomb") and kind not in ACCEPTED:
            assert set(statuses) == {"422"}, (kind, statuses)
        else:
            assert set(statuses) == {"200"}, (kind, statuses)
    while_bombs = result["healthz_while_bombs"]
    assert while_bombs["count"] >= 3 and while_bombs["max_ms"] < 1000, while_bombs
    assert result["healthz_failed"] == 0
