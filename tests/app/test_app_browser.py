"""The web app served for real: a headless Chromium uses the page, ``gradio_client`` calls ``predict``.

Chromium is Debian's ``chromium`` package (``make test`` installs it when it can), driven through
Playwright's Python API with ``executable_path``: Playwright's own browser download is not needed.
The same code makes the README screenshot::

    python tests/app/test_app_browser.py docs/figures/app.png [--model demo_out/best]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the web app needs the app extra: pip install 'clip2depth[app]'")

from clip2depth.app.predict import describe_model  # noqa: E402
from clip2depth.app.ui import build_app, example_images, launch  # noqa: E402
from clip2depth.io.depth import load_depth_png16  # noqa: E402
from clip2depth.models.factory import create_model  # noqa: E402

CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome")
PAGE_TIMEOUT_MS = 30_000


def find_chromium() -> str | None:
    """Path of a Chromium binary (Debian's package first), or None."""
    for name in CHROMIUM_CANDIDATES:
        path = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)
        if path:
            return path
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(model_source: str):
    """Serve the app for ``model_source`` on a free local port; yields its URL."""
    model = create_model(model_source)
    with tempfile.TemporaryDirectory() as work:
        demo = build_app(model, describe_model(model, model_source), work_dir=work)
        port = _free_port()
        launch(demo, port=port, block=False)
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            demo.close()


@contextmanager
def browser_page(chromium: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--use-gl=swiftshader"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100}, accept_downloads=True)
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def estimate_depth(page, url: str, image: str | Path) -> np.ndarray:
    """Open the page, upload ``image``, press the button; wait for the depth image and the 3D view.

    Returns:
        The colour depth image shown, H×W'×3 uint8.
    """
    page.goto(url)
    page.locator("#input-image input[type=file]").set_input_files(str(image))
    page.locator("#input-image img").first.wait_for()  # the upload has arrived
    page.locator("#run").click()
    shown = page.locator("#depth-image img").first
    shown.wait_for()
    wait_for_point_cloud(page)
    png = page.request.get(shown.get_attribute("src")).body()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def wait_for_point_cloud(page, timeout_s: float = 20.0) -> None:
    """Wait until the 3D viewer's canvas shows a coloured cloud (an empty viewer has a few hundred shades at most)."""
    canvas = page.locator("#point-cloud canvas").first
    canvas.wait_for()
    for _ in range(int(timeout_s / 0.5)):
        shot = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"))
        if len(np.unique(shot.reshape(-1, 3), axis=0)) > 1000:
            return
        page.wait_for_timeout(500)
    raise AssertionError("the 3D view stayed empty")


def screenshot(page, path: Path, attempts: int = 20) -> None:
    """Save a screenshot of the page once the 3D view shows up in it (WebGL can lag behind the page)."""
    box = page.locator("#point-cloud canvas").first.bounding_box()
    for _ in range(attempts):
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
        x, y, w, h = (int(box[k]) for k in ("x", "y", "width", "height"))
        if len(np.unique(shot[y : y + h, x : x + w].reshape(-1, 3), axis=0)) > 1000:
            break
        page.wait_for_timeout(500)
    Image.fromarray(shot).save(path)


def download_png16(page, target: Path) -> Path:
    with page.expect_download() as info:
        page.locator("#download-png16").click()
    info.value.save_as(target)
    return target


# ------------------------------------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def app_url(model_dir):
    with serve(str(model_dir)) as url:
        yield url


@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium found: install Debian's package (apt-get install -y chromium) or run `make test` "
                    "as root, which installs it")  # fmt: skip
    return path


def _photo(path: Path, size: tuple[int, int] = (150, 100)) -> Path:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    Image.fromarray(np.stack([xx % 256, yy % 256, (xx * yy) % 256], axis=2).astype(np.uint8)).save(path)
    return path


def test_browser_upload_shows_depth_3d_view_and_downloads_png16(app_url, model_dir, chromium, tmp_path):
    photo = _photo(tmp_path / "photo.png", size=(150, 100))
    with browser_page(chromium) as page:
        colour = estimate_depth(page, app_url, photo)
        assert colour.shape[0] == 100 and colour.shape[1] > 150  # the image plus its colour bar
        assert colour[:, :150].std() > 0 and len(np.unique(colour[:, :150].reshape(-1, 3), axis=0)) > 10
        assert "m** nearest" not in page.content()  # Markdown rendered, not shown raw
        assert "nearest" in page.locator("#readout").inner_text()

        png16 = download_png16(page, tmp_path / "downloaded.png")
        with Image.open(png16) as image:
            assert image.size == (150, 100) and image.mode.startswith("I;16")
        expected = create_model(str(model_dir)).infer(photo)  # what the library says for this photo
        np.testing.assert_allclose(load_depth_png16(png16), expected, atol=0.5e-3 + 1e-5)  # millimetres, rounded

        box = page.locator("#depth-image img").first.bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.5)
        page.get_by_text("Depth at pixel").wait_for()
        assert " m" in page.locator("#readout").inner_text()
        screenshot(page, tmp_path / "app.png")
    with Image.open(tmp_path / "app.png") as shot:  # the docs figure: the page drawn, not a blank one (a few shades)
        pixels = np.asarray(shot.convert("RGB"))
    assert pixels.shape[1] == 1280 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000


def test_browser_bad_file_gives_a_message_not_a_trace(app_url, chromium, tmp_path):
    fake = tmp_path / "broken.png"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with browser_page(chromium) as page:
        page.goto(app_url)
        page.locator("#input-image input[type=file]").set_input_files(str(fake))
        page.locator("#run").click()
        page.get_by_text("cannot be read as an image").first.wait_for()
        assert "Traceback" not in page.content()


def test_browser_video_tab_writes_a_depth_video(app_url, chromium, tmp_path):
    pytest.importorskip("av", reason="videos need PyAV: pip install 'clip2depth[video]'")
    from clip2depth.io.video import VideoWriter, video_info

    clip = tmp_path / "walk.mp4"
    with VideoWriter(clip, fps=10, size=(64, 48)) as writer:
        for i in range(5):
            writer.write(np.full((48, 64, 3), 40 * i, dtype=np.uint8))
    with browser_page(chromium) as page:
        page.goto(app_url)
        page.get_by_role("tab", name="Video").click()
        page.locator("#input-video input[type=file]").set_input_files(str(clip))
        page.locator("#input-video video").first.wait_for()
        page.locator("#run-video").click()
        shown = page.locator("#depth-video video").first
        shown.wait_for()
        (tmp_path / "depth.mp4").write_bytes(page.request.get(shown.get_attribute("src")).body())
    info = video_info(tmp_path / "depth.mp4")
    assert info.height == 48 and info.width > 64  # the frames plus a colour bar in metres


def test_gradio_client_predict_endpoint(app_url, tmp_path):
    from gradio_client import Client, handle_file

    photo = _photo(tmp_path / "photo.png", size=(96, 64))
    client = Client(app_url, verbose=False)
    assert list(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == ["/predict"]
    colour, png16 = client.predict(handle_file(str(photo)), api_name="/predict")
    with Image.open(colour) as image:
        assert image.height == 64 and image.width > 96
    with Image.open(png16) as image:
        assert image.size == (96, 64) and image.mode.startswith("I;16")


def test_gradio_client_bad_file_gets_the_message(app_url, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    fake = tmp_path / "broken.jpg"
    fake.write_bytes(b"not an image")
    with pytest.raises(AppError, match="cannot be read as an image"):
        Client(app_url, verbose=False).predict(handle_file(str(fake)), api_name="/predict")


# ------------------------------------------------------------------------------------------------ screenshot


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshot of the web app after estimating an example's depth.")
    parser.add_argument("out", type=Path, help="PNG to write, e.g. docs/figures/app.png")
    parser.add_argument("--model", default="tiny", help="model to serve (default: the untrained tiny preset)")
    parser.add_argument("--image", default=None, help="photo to upload (default: the first shipped example)")
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no Chromium found; apt-get install -y chromium")
    with serve(args.model) as url, browser_page(chromium) as page:
        estimate_depth(page, url, args.image or example_images()[0])
        screenshot(page, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
