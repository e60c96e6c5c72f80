"""The prediction API: every endpoint, every kind of bad request (4xx, never 5xx), and the server lives on."""

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from keras_cifar.serving.app import create_app


def png_bytes(array, size=None, mode=None):
    image = Image.fromarray(array)
    image = image.resize(size) if size else image
    image = image.convert(mode) if mode else image
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(exported):
    with TestClient(create_app(exported, max_upload_bytes=200_000, max_batch=4)) as client:
        yield client


def test_upload_returns_top_k_labels_in_file_order(client, cifar):
    files = [("files", (f"img{i}.png", png_bytes(cifar.x_test[i], size=(64 + i, 48)), "image/png")) for i in range(3)]
    response = client.post("/v1/predict?top_k=3", files=files)
    assert response.status_code == 200
    body = response.json()
    assert [p["filename"] for p in body["predictions"]] == ["img0.png", "img1.png", "img2.png"]
    assert body["predictions"][1]["width"] == 65
    for prediction in body["predictions"]:
        assert len(prediction["top_k"]) == 3 and prediction["top_k"][0]["label"] in cifar.class_names
    assert body["model"]["architecture"] == "airbench" and body["timing_ms"] > 0


def test_tf_serving_rest_format_matches_the_upload_endpoint(client, cifar):
    images = cifar.x_test[:2]
    response = client.post("/v1/models/cifar10:predict", json={"instances": images.tolist()})
    assert response.status_code == 200
    predictions = np.array(response.json()["predictions"])
    assert predictions.shape == (2, 10)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, atol=1e-4)
    columnar = client.post("/v1/models/cifar10:predict", json={"inputs": {"images": images.tolist()}}).json()
    assert set(columnar) == {"outputs"}  # TF Serving answers the columnar format in kind
    np.testing.assert_allclose(columnar["outputs"], predictions, atol=1e-6)
    versioned = client.post("/v1/models/cifar10/versions/1:predict", json={"instances": images.tolist()}).json()
    np.testing.assert_allclose(versioned["predictions"], predictions, atol=1e-6)
    upload = client.post("/v1/predict?top_k=1", files=[("files", ("a.png", png_bytes(images[0]), "image/png"))]).json()
    assert upload["predictions"][0]["top_k"][0]["index"] == int(predictions[0].argmax())


def test_tf_serving_status_and_metadata_are_exactly_its_responses(client):
    status = {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert client.get("/v1/models/cifar10").json() == status
    assert client.get("/v1/models/cifar10/versions/1").json() == status
    metadata = client.get("/v1/models/cifar10/metadata").json()
    assert metadata == client.get("/v1/models/cifar10/versions/1/metadata").json()
    assert metadata["model_spec"] == {"name": "cifar10", "signature_name": "", "version": "1"}
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    dims = [int(d["size"]) for d in signature["inputs"]["images"]["tensor_shape"]["dim"]]
    assert dims == [-1, 32, 32, 3] and signature["inputs"]["images"]["dtype"] == "DT_FLOAT"
    assert [int(d["size"]) for d in signature["outputs"]["probabilities"]["tensor_shape"]["dim"]] == [-1, 10]
    for path in ("/v1/models/other", "/v1/models/cifar10/versions/2", "/v1/models/cifar10/versions/2/metadata"):
        response = client.get(path)
        assert response.status_code == 404 and "Servable not found" in response.json()["error"]
    unknown = client.post("/v1/models/other:predict", json={"instances": []})
    assert unknown.status_code in (404, 405) and isinstance(unknown.json()["error"], str)


def test_metadata_health_metrics_page_and_samples(client, cifar):
    metadata = client.get("/v1/model").json()
    assert metadata["labels"] == list(cifar.class_names) and metadata["input_shape"] == [32, 32, 3]
    assert metadata["limits"]["max_upload_bytes"] == 200_000 and metadata["limits"]["max_batch"] == 4
    assert metadata["limits"]["max_pixels"] == 4096 * 4096
    assert client.get("/healthz").json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and 'id="file-input"' in page.text
    assert client.get("/static/app.js").status_code == 200
    sample = client.get(metadata["samples"][0]["url"])
    assert sample.status_code == 200 and Image.open(io.BytesIO(sample.content)).size == (32, 32)
    metrics = client.get("/metrics").text
    assert "keras_cifar_requests_total" in metrics and "keras_cifar_images_total" in metrics


def bad_requests(cifar):
    """(description, request kwargs, expected status): each kind of malformed request a client can send."""
    good = png_bytes(cifar.x_test[0])
    image = cifar.x_test[0].tolist()
    return [
        ("text file", dict(files=[("files", ("a.png", b"hello", "image/png"))]), 422),
        ("zero bytes", dict(files=[("files", ("a.png", b"", "image/png"))]), 422),
        ("truncated png", dict(files=[("files", ("a.png", good[: len(good) // 2], "image/png"))]), 422),
        ("html", dict(files=[("files", ("a.jpg", b"<html></html>", "image/jpeg"))]), 422),
        ("too large", dict(files=[("files", ("a.png", b"\x89PNG" + bytes(300_000), "image/png"))]), 413),
        ("too many", dict(files=[("files", (f"{i}.png", good, "image/png")) for i in range(5)]), 413),
        ("no files", dict(data={"other": "x"}), 422),
        ("bad top_k", dict(files=[("files", ("a.png", good, "image/png"))], params={"top_k": 0}), 422),
        ("not json", dict(url="/v1/models/cifar10:predict", content=b"{nope"), 400),
        ("json list", dict(url="/v1/models/cifar10:predict", json=[1, 2]), 400),
        ("no instances", dict(url="/v1/models/cifar10:predict", json={"foo": 1}), 400),
        ("wrong shape", dict(url="/v1/models/cifar10:predict", json={"instances": [[1, 2, 3]]}), 400),
        ("ragged", dict(url="/v1/models/cifar10:predict", json={"instances": [image, [[1]]]}), 400),
        ("strings", dict(url="/v1/models/cifar10:predict", json={"instances": [[["a"] * 3] * 32] * 32}), 400),
        ("out of range", dict(url="/v1/models/cifar10:predict", json={"instances": [[[[300, 0, 0]] * 32] * 32]}), 400),
        ("empty", dict(url="/v1/models/cifar10:predict", json={"instances": []}), 400),
        (
            "bad signature",
            dict(url="/v1/models/cifar10:predict", json={"signature_name": "x", "instances": [image]}),
            400,
        ),
        ("too many instances", dict(url="/v1/models/cifar10:predict", json={"instances": [image] * 5}), 413),
        ("unknown sample", dict(method="GET", url="/samples/../../etc/passwd"), 404),
        ("unknown path", dict(method="GET", url="/v1/nothing"), 404),
    ]


def test_malformed_requests_get_4xx_json_and_the_server_keeps_serving(client, cifar):
    for description, kwargs, status in bad_requests(cifar):
        kwargs = dict(kwargs)
        method, url = kwargs.pop("method", "POST"), kwargs.pop("url", "/v1/predict")
        response = client.request(method, url, **kwargs)
        assert response.status_code == status, (description, response.text)
        error = response.json()["error"]
        message = error if isinstance(error, str) else error["message"]
        assert message, description
    good = [("files", ("a.png", png_bytes(cifar.x_test[0]), "image/png"))]
    assert client.post("/v1/predict", files=good).status_code == 200
    assert 'status="422"' in client.get("/metrics").text


def test_a_bad_file_names_itself(client, cifar):
    files = [
        ("files", ("good.png", png_bytes(cifar.x_test[0]), "image/png")),
        ("files", ("bad.png", b"nonsense", "image/png")),
    ]
    error = client.post("/v1/predict", files=files).json()["error"]
    assert error["filename"] == "bad.png" and "not an image" in error["message"]


def test_an_oversized_request_is_refused_before_it_is_read(exported):
    app = create_app(exported, max_upload_bytes=1000, max_batch=1)
    with TestClient(app) as client:
        response = client.post(
            "/v1/predict", content=b"x" * 200_000, headers={"content-type": "multipart/form-data; boundary=b"}
        )
    assert response.status_code == 413 and "at most 1 images" in response.json()["error"]["message"]


def test_concurrent_requests_share_a_model_call(exported, cifar):
    import concurrent.futures

    with TestClient(create_app(exported, batch_window_ms=50)) as client:
        image = cifar.x_test[:1].tolist()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(
                pool.map(lambda _: client.post("/v1/models/cifar10:predict", json={"instances": image}), range(8))
            )
        assert all(r.status_code == 200 for r in responses)
        metrics = client.get("/metrics").text
    calls = float(
        next(line.split()[-1] for line in metrics.splitlines() if line.startswith("keras_cifar_batch_size_count"))
    )
    assert calls < 8  # at least two requests were answered by one model call


def test_a_run_directory_is_served_by_keras_itself(trained_run, cifar):
    with TestClient(create_app(trained_run)) as client:
        info = client.get("/v1/model").json()
        assert info["format"] == "keras" and info["architecture"] == "airbench" and info["samples"] == []
        upload = client.post(
            "/v1/predict?top_k=2", files=[("files", ("a.png", png_bytes(cifar.x_test[0]), "image/png"))]
        )
        assert upload.status_code == 200 and len(upload.json()["predictions"][0]["top_k"]) == 2
        rows = client.post("/v1/models/cifar10:predict", json={"instances": cifar.x_test[:2].tolist()}).json()
        assert np.array(rows["predictions"]).shape == (2, 10)


def test_explain_returns_the_input_the_model_saw_and_an_occlusion_map(client, cifar):
    image = cifar.x_test[7]
    response = client.post(
        "/v1/predict?top_k=1&explain=true", files=[("files", ("a.png", png_bytes(image), "image/png"))]
    )
    assert response.status_code == 200
    row = response.json()["predictions"][0]
    seen = Image.open(io.BytesIO(base64.b64decode(row["input_png"].split(",", 1)[1])))
    np.testing.assert_array_equal(np.asarray(seen), image)  # a 32x32 upload reaches the model unchanged
    grid = np.array(row["saliency"])
    assert grid.shape == (7, 7) and grid.min() >= 0 and grid.max() <= 1
    assert row["saliency_patch"] == 8 and row["saliency_stride"] == 4
    plain = client.post("/v1/predict", files=[("files", ("a.png", png_bytes(image), "image/png"))]).json()
    assert "saliency" not in plain["predictions"][0]  # opt-in: it costs 49 predictions an image


def test_occlusion_covers_each_patch_once_and_measures_the_fall_in_probability():
    from keras_cifar.serving.explain import occlusion_batch, saliency

    image = np.full((32, 32, 3), 200.0)
    image[:16] = 0.0
    batch = occlusion_batch(image)
    assert batch.shape == (49, 32, 32, 3)
    changed = np.any(batch != image, axis=-1)  # the covered pixels
    assert changed[0, :8, :8].all() and not changed[0, 8:].any() and not changed[0, :, 8:].any()
    assert saliency(0.9, np.array([0.9] * 48 + [0.3]), image.shape)[6][6] == 1.0
    assert (
        saliency(0.5, np.full(49, 0.6), image.shape) == [[0.0] * 7] * 7
    )  # covering helped everywhere: nothing to show
