"""The server's limits: bodies counted as they arrive, JSON parsed with limits, overload answered 503, every
status counted in /metrics, and an export folder whose metadata.json is broken refused with a clear error."""

import io
import json
import shutil
import threading

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.responses import JSONResponse

from keras_cifar import cli, serve
from keras_cifar.errors import CheckpointError
from keras_cifar.export.runtime import open_export, read_metadata
from keras_cifar.serving import app as app_module
from keras_cifar.serving.app import create_app
from keras_cifar.serving.middleware import Admission, BodyLimit
from keras_cifar.serving.tfserving import json_depth

TF = "/v1/models/cifar10:predict"
IMAGE = np.zeros((32, 32, 3), dtype=int).tolist()


def png_bytes(size=(32, 32), color=(120, 80, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- the admission middleware on its own ----------------------------------------------------------------------


async def read_all_then_ok(scope, receive, send):
    while True:
        message = await receive()
        if not message.get("more_body"):
            break
    await JSONResponse({"ok": True})(scope, receive, send)


def call(app, chunks, headers=(), path="/v1/predict"):
    """Runs one request through an ASGI app; (chunks the app received, responses started, first status)."""
    consumed, sent = 0, []

    async def receive():
        nonlocal consumed
        if consumed < len(chunks):
            consumed += 1
            return {"type": "http.request", "body": chunks[consumed - 1], "more_body": consumed < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": list(headers)}
    anyio.run(app, scope, receive, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    return consumed, starts, json.loads(sent[-1]["body"]) if sent else None


def admission(app=read_all_then_ok, **kwargs):
    options = dict(
        limits={"/v1/predict": BodyLimit(1000, "at most 1,000 bytes")},
        default_limit=BodyLimit(10, "no body"),
        api_paths={"/v1/predict"},
        error=lambda path, status, message: JSONResponse({"error": message}, status_code=status),
        max_in_flight=4,
        max_body_bytes_in_flight=10_000,
    )
    return Admission(app, **{**options, **kwargs})


def test_a_body_without_content_length_is_refused_as_soon_as_it_passes_the_limit():
    consumed, starts, body = call(admission(), [b"x" * 100] * 100)  # 10,000 bytes, chunked
    assert consumed == 11  # 1,100 bytes read: refused on the chunk that passed 1,000, the rest never read
    assert [s["status"] for s in starts] == [413] and "at most 1,000 bytes" in body["error"]
    consumed, starts, _ = call(admission(), [b"x" * 100] * 10)  # exactly the limit
    assert [s["status"] for s in starts] == [200]


def test_a_declared_oversize_body_is_refused_unread_and_other_paths_take_no_body():
    consumed, starts, _ = call(admission(), [b"x"], headers=[(b"content-length", b"5000")])
    assert consumed == 0 and [s["status"] for s in starts] == [413]
    consumed, starts, _ = call(admission(), [b"x" * 11], path="/healthz")
    assert [s["status"] for s in starts] == [413]
    _, starts, _ = call(admission(), [b"x"], headers=[(b"content-length", b"12ab")])
    assert [s["status"] for s in starts] == [400]


def test_bodies_in_flight_are_bounded_in_bytes():
    consumed, starts, body = call(admission(max_body_bytes_in_flight=500), [b"x" * 100] * 10)
    assert consumed == 6 and [s["status"] for s in starts] == [503] and "too much data" in body["error"]


# ---- the app ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(exported):
    with TestClient(create_app(exported, max_upload_bytes=200_000, max_batch=4)) as client:
        yield client


def test_a_chunked_json_body_over_the_limit_gets_413(client):
    body = json.dumps({"instances": [IMAGE]}).encode()

    def padded():  # valid JSON of 1.1 MB with no Content-Length: it used to be read whole and answered 200
        yield body[:-1]
        for _ in range(11):
            yield b" " * 100_000
        yield b"}"

    response = client.post(TF, content=padded(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "bytes of JSON" in response.json()["error"]
    assert client.post(TF, content=body).status_code == 200


@pytest.mark.parametrize(
    "body, message",
    [
        (b"[" * 50_000 + b"]" * 50_000, "nests 50000 levels"),
        (b'{"instances": [[[[' + b"[" * 10 + b"1" + b"]" * 10 + b"]]]]}", "levels deep"),
        (b'{"instances": [' + b"9" * 5000 + b"]}", "at most 32"),
        (b'{"instances": [1e999999999999999999999999999999999999]}', "at most 32"),
        (json.dumps({"instances": [[[["1", "2", "3"]] * 32] * 32]}).encode(), "numbers only"),
        (json.dumps({"instances": [[[[True, False, True]] * 32] * 32]}).encode(), "numbers only"),
        (json.dumps({"instances": [[[[1, 2, True]] * 32] * 32]}).encode(), "numbers only"),
        (json.dumps({"instances": [[[[None, 2, 3]] * 32] * 32]}).encode(), "numbers only"),
        (b'{"instances": [[[[NaN, 1, 2]]]]}', "NaN"),
        (b'{"instances": [[[[Infinity, 1, 2]]]]}', "Infinity"),
        (b'{"instances": [[[[1e39, 1, 2]]]]}', "shape"),
        (b'{"instances": "\xff\xfe"}', "not valid JSON"),
    ],
)
def test_json_over_its_limits_or_with_non_numbers_gets_400(client, body, message):
    response = client.post(TF, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and message in response.json()["error"], response.text


def test_json_depth_ignores_brackets_in_strings():
    assert json_depth(b'{"a": [[["]]]]]]]]["]]]}') == 4
    assert json_depth(b'["\\"[[[[", "\\\\", [[]]]') == 3
    assert json_depth(b"") == 0 and json_depth(b"1") == 0


def test_uploads_keep_the_whole_request_error_naming_the_file(client):
    bomb = io.BytesIO()
    Image.new("P", (7000, 7000)).save(bomb, format="PNG")
    tiff = io.BytesIO()
    Image.new("RGB", (40, 40)).save(tiff, format="TIFF")
    for name, data in (("bomb.png", bomb.getvalue()), ("scan.tiff", tiff.getvalue())):
        response = client.post(
            "/v1/predict",
            files=[("files", ("good.png", png_bytes(), "image/png")), ("files", (name, data, "image/png"))],
        )
        error = response.json()["error"]
        assert response.status_code == 422 and error["filename"] == name and name in error["message"]
    sixteen = io.BytesIO()
    Image.fromarray(np.full((40, 40), 128 * 257, dtype=np.uint16)).save(sixteen, format="PNG")
    assert client.post("/v1/predict", files=[("files", ("g.png", sixteen.getvalue(), "image/png"))]).status_code == 200


class GatedPredictor:
    """Answers only when `gate` is set (or raises when asked to), so tests can hold requests in the model."""

    def __init__(self):
        self.gate, self.entered, self.fail = threading.Event(), threading.Event(), False

    def predict(self, images):
        self.entered.set()
        if self.fail:
            raise RuntimeError("the model broke")
        assert self.gate.wait(30)
        return np.full((len(images), 10), 0.1, dtype=np.float32)


@pytest.fixture
def gated(exported, monkeypatch):
    predictor = GatedPredictor()
    monkeypatch.setattr(app_module, "open_model", lambda folder, fmt: (predictor, "fake", read_metadata(folder)))
    return predictor


def in_thread(function):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("response", function()), daemon=True)
    thread.start()
    return thread, result


def test_a_full_model_queue_answers_503_with_retry_after(exported, gated):
    with TestClient(create_app(exported, max_batch=4, max_queued_images=2)) as client:
        held, _ = in_thread(lambda: client.post(TF, json={"instances": [IMAGE, IMAGE]}))
        assert gated.entered.wait(30)
        overflow, result = in_thread(lambda: client.post(TF, json={"instances": [IMAGE]}))
        overflow.join(30)
        assert not overflow.is_alive(), "the request queued without bound instead of being refused"
        response = result["response"]
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert "waiting" in response.json()["error"]
        upload = client.post("/v1/predict", files=[("files", ("a.png", png_bytes(), "image/png"))])
        assert upload.status_code == 503 and upload.json()["error"]["status"] == 503
        gated.gate.set()
        held.join(30)
        assert client.post(TF, json={"instances": [IMAGE]}).status_code == 200


def test_requests_in_flight_are_bounded(exported, gated):
    with TestClient(create_app(exported, max_in_flight=1)) as client:
        held, _ = in_thread(lambda: client.post(TF, json={"instances": [IMAGE]}))
        assert gated.entered.wait(30)
        response = client.post("/v1/predict", files=[("files", ("a.png", png_bytes(), "image/png"))])
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert client.get("/healthz").status_code == 200  # not an API request: never refused
        gated.gate.set()
        held.join(30)


def test_a_server_error_is_counted_in_metrics(exported, gated):
    gated.fail = True
    with TestClient(create_app(exported), raise_server_exceptions=False) as client:
        response = client.post(TF, json={"instances": [IMAGE]})
        assert response.status_code == 500 and "internal error" in response.json()["error"]  # TF Serving's shape
        metrics = client.get("/metrics").text
    assert 'keras_cifar_requests_total{endpoint="/v1/models/cifar10:predict",status="500"} 1.0' in metrics


# ---- metadata.json ----------------------------------------------------------------------------------------------


@pytest.fixture
def export_copy(exported, tmp_path):
    """A copy of the export folder with only what serving needs, so each test can damage its metadata.json."""
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(exported / "model_float32.tflite", folder)
    shutil.copytree(exported / "samples", folder / "samples")
    shutil.copy(exported / "metadata.json", folder)
    return folder


def edit_metadata(folder, change):
    metadata = json.loads((folder / "metadata.json").read_text())
    change(metadata)
    (folder / "metadata.json").write_text(json.dumps(metadata))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "metadata.json").write_text((f / "metadata.json").read_text()[:200]), "not valid JSON"),
        (lambda f: (f / "metadata.json").write_text(""), "not valid JSON"),
        (lambda f: (f / "metadata.json").write_text("[1, 2]"), "not an object"),
        (
            lambda f: edit_metadata(f, lambda m: m["labels"].pop()),
            "lists 9 labels but the tflite-float32 model outputs 10",
        ),
        (lambda f: edit_metadata(f, lambda m: m.pop("labels")), '"labels" is missing'),
        (lambda f: edit_metadata(f, lambda m: m["labels"].__setitem__(0, 7)), '"labels" is missing or not a list'),
        (lambda f: edit_metadata(f, lambda m: m.__setitem__("input_shape", [32, "32", 3])), '"input_shape"'),
        (lambda f: edit_metadata(f, lambda m: m.__setitem__("input_shape", [64, 64, 3])), "does not run on input"),
        (lambda f: edit_metadata(f, lambda m: m.__setitem__("formats", [])), '"formats"'),
        (lambda f: edit_metadata(f, lambda m: m.pop("architecture")), '"architecture"'),
    ],
)
def test_a_broken_metadata_json_is_a_clear_error(export_copy, damage, message):
    damage(export_copy)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(")):
        open_export(export_copy)


def test_serve_refuses_a_broken_export_with_one_line(export_copy, capsys):
    edit_metadata(export_copy, lambda m: m["labels"].pop())
    assert cli.run(serve.main, ["--model", str(export_copy), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "9 labels" in err and len(err.splitlines()) == 1


def test_samples_outside_the_export_folder_are_not_served(export_copy, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    edit_metadata(
        export_copy,
        lambda m: m["samples"].extend(
            [
                {"label": "cat", "file": str(secret)},
                {"label": "cat", "file": "../secret.png"},
                {"label": "cat", "file": "model_float32.tflite"},
                {"label": "cat", "file": "samples/missing.png"},
                {"label": "cat"},
                "samples/cat.png",
            ]
        ),
    )
    kept = read_metadata(export_copy)["samples"]
    assert kept and all(s["file"].startswith("samples/") and (export_copy / s["file"]).is_file() for s in kept)
    with TestClient(create_app(export_copy)) as client:
        urls = [s["url"] for s in client.get("/v1/model").json()["samples"]]
        assert "/samples/secret.png" not in urls and all(client.get(url).status_code == 200 for url in urls)
        assert client.get("/samples/secret.png").status_code == 404
