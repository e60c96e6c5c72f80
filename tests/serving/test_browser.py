"""The web page in a real browser: Debian's Chromium, headless, driven by Playwright against a live server."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        message = "Chromium not found (apt-get install chromium, or set CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def server(exported):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_cifar.serve", "--model", str(exported), "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        assert process.poll() is None, process.stdout.read()
    yield url
    process.terminate()
    process.wait(30)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone-sized window
        page.goto(server)
        page.wait_for_selector("#model-info[data-state=ready]")
        yield page
        browser.close()


def test_uploading_an_image_shows_the_api_label(page, server, cifar, tmp_path):
    picture = tmp_path / "photo.jpg"
    Image.fromarray(cifar.x_test[3]).resize((200, 150)).save(picture, quality=90)
    expected = httpx.post(
        f"{server}/v1/predict", files=[("files", ("photo.jpg", picture.read_bytes(), "image/jpeg"))]
    ).json()["predictions"][0]["top_k"][0]["label"]
    page.set_input_files("#file-input", str(picture))
    card = page.wait_for_selector("[data-testid=result][data-status=done]")
    assert card.query_selector(".top1-label").inner_text() == expected
    assert card.get_attribute("data-label") == expected
    assert len(card.query_selector_all("li.bar")) == 5
    assert "Done in" in page.inner_text("#status")
    assert "airbench" in page.inner_text("#model-info")
    # Why: the 32x32 input as the model saw it, and the occlusion map drawn from the server's grid.
    seen = card.query_selector("[data-testid=model-input]")
    assert page.evaluate("(img) => img.complete && img.naturalWidth", seen) == 32
    painted = page.wait_for_function(
        "(c) => { const d = c.getContext('2d').getImageData(0, 0, 32, 32).data;"
        " return d.some((v, i) => i % 4 === 0 && v > 0) && d[3] === 255; }",
        arg=card.query_selector("[data-testid=saliency]"),
    )
    assert painted
    # Phone width: nothing scrolls sideways.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_a_sample_is_one_click_and_a_bad_file_shows_its_error(page, tmp_path):
    page.click("#clear-button")
    page.click("button.sample[aria-label='Classify sample: cat']")
    card = page.wait_for_selector("[data-testid=result][data-status=done]")
    assert card.query_selector(".top1-label").inner_text()
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    page.set_input_files("#file-input", str(bad))
    error = page.wait_for_selector("[data-testid=result][data-status=error] [data-testid=error]")
    assert "not an image" in error.inner_text()
