"""The `predict` and `serve` command lines: bad files cost only their own line, and a restarted server gets its
port back at once."""

import json
import socket
import sys
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from keras_cifar import cli, predict

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
from serve_faults import bad_exif_jpeg  # noqa: E402
from serve_process import ServerExited, free_port, start_server  # noqa: E402


def test_predict_reports_each_bad_file_and_classifies_the_rest(exported, cifar, tmp_path, capsys):
    Image.fromarray(cifar.x_test[0]).save(tmp_path / "a_good.png")
    (tmp_path / "b_exif.jpg").write_bytes(bad_exif_jpeg())  # used to end the run with a TypeError traceback
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "c_large.png")  # 360 KB: incompressible
    Image.new("RGB", (40, 40)).save(tmp_path / "d_scan.tiff")
    (tmp_path / "e_notes.png").write_text("not an image")
    Image.fromarray(np.full((40, 40), 128 * 257, dtype=np.uint16)).save(tmp_path / "f_gray16.png")
    files = sorted(str(p) for p in tmp_path.iterdir())
    status = cli.run(predict.main, [*files, "--model", str(exported), "--json", "--max-file-mb", "0.1"])
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    errors = {Path(json.loads(line)["file"]).name: json.loads(line)["error"] for line in err.splitlines()}
    assert status == 1
    assert [Path(r["file"]).name for r in rows] == ["a_good.png", "b_exif.jpg", "f_gray16.png"]
    assert set(errors) == {"c_large.png", "d_scan.tiff", "e_notes.png"}
    assert "more than the 104,857 accepted" in errors["c_large.png"] and "--max-file-mb" in errors["c_large.png"]
    assert "not an image in a supported format" in errors["d_scan.tiff"]


def test_predict_refuses_a_file_by_its_size_before_reading_it(exported, tmp_path, monkeypatch, capsys):
    big = tmp_path / "huge.png"
    with open(big, "wb") as file:
        file.truncate(200 * 2**20)  # sparse: 200 MiB on paper, nothing on disk
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    assert cli.run(predict.main, [str(big), "--model", str(exported)]) == 1
    assert str(big) not in opened
    assert "209,715,200 bytes, more than the" in capsys.readouterr().err


def start_serve(exported, port):
    """(process, None) once it answers, or (None, its output) if it stopped first."""
    try:
        return start_server(exported, port=port)[0], None
    except ServerExited as exited:
        return None, str(exited)


def time_wait_connections(port: int) -> int:
    """Connections in TIME-WAIT (state 06 in /proc/net/tcp) whose local port is `port`."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        count += sum(
            1 for line in lines if int(line.split()[1].rsplit(":", 1)[1], 16) == port and line.split()[3] == "06"
        )
    return count


def test_serve_restarts_on_its_port_at_once(exported):
    port = free_port()
    first, failure = start_serve(exported, port)
    assert failure is None, failure
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}")  # keep-alive: the server closes it first
        assert client.get("/healthz").status_code == 200
    finally:
        first.terminate()
        first.wait(30)
    client.close()
    lingering = time_wait_connections(port)
    second, failure = start_serve(exported, port)  # the kernel keeps TIME-WAIT for a minute
    try:
        assert failure is None, f"{failure} ({lingering} connections in TIME-WAIT on the port)"
    finally:
        second.terminate()
        second.wait(30)


def test_serve_refuses_a_port_in_use_with_one_line(exported, capsys):
    from keras_cifar import serve

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.run(serve.main, ["--model", str(exported), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot listen on 127.0.0.1") and len(err.splitlines()) == 1
