"""The Gradio page of ``clip2depth app``: inputs, depth picture, 3D view, downloads, model panel.

Everything computed lives in :mod:`clip2depth.app.predict`; this module lays out the page and turns
errors a user can cause into a message on the page (never a stack trace). Besides the page, the
endpoint ``predict`` (image in; colour depth and 16-bit PNG out) serves ``gradio_client`` scripts::

    from gradio_client import Client, handle_file

    colour, png16 = Client("http://127.0.0.1:7860/").predict(handle_file("photo.jpg"), api_name="/predict")
"""

from __future__ import annotations

import errno
import functools
import html
import logging
import re
import socket
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from torch import nn

from clip2depth.app.predict import (
    DEPTH_SCALE,
    NO_MODEL_MESSAGE,
    DepthResult,
    ModelInfo,
    RequestFolders,
    depth_at,
    predict_image,
    predict_video,
)
from clip2depth.errors import Clip2DepthError, ConfigError, is_out_of_memory
from clip2depth.inference.pointcloud import DEFAULT_FOV_DEG
from clip2depth.models.infer import PRECISIONS

logger = logging.getLogger(__name__)

TITLE = "clip2depth: metric depth from a frozen CLIP"
QUEUE_SIZE = 16
"""Requests allowed to wait for the model; one runs at a time."""


def example_images() -> list[str]:
    """Paths of the example photos shipped with the package (synthetic rooms rendered by tools/)."""
    folder = resources.files("clip2depth.app") / "examples"
    return sorted(str(p) for p in folder.iterdir() if p.name.endswith(".jpg"))


def _page_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Show a user-caused error as a message on the page; running out of memory (CPU or GPU) likewise."""
    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except Clip2DepthError as exc:
            raise gr.Error(str(exc), print_exception=False) from exc
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            raise gr.Error("out of memory for this photo or video; lower the max side",
                           print_exception=False) from exc

    return wrapper


def build_app(
    model: nn.Module | None, info: ModelInfo | None, *, work_dir: str | Path | None = None
) -> gr.Blocks:
    """The page for ``model`` (described by ``info``); with no model, a page that says how to get one.

    Args:
        work_dir: where each request's files are written (default: a temporary folder removed at exit).

    Returns:
        The page; serve it with :func:`launch`.
    """
    # No usage analytics leave the machine; Gradio's copies of served files are removed after an hour.
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# {TITLE}")
        if model is None or info is None:
            gr.Markdown(NO_MODEL_MESSAGE, elem_id="no-model")
            return demo
        _model_panel(info)
        folders = RequestFolders(work_dir)
        with gr.Tab("Image"):
            _image_tab(model, folders)
        with gr.Tab("Video"):
            _video_tab(model, folders)
    return demo


def _model_panel(info: ModelInfo) -> None:
    if info.banner:
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(info.banner))
        gr.HTML(
            f'<div id="model-banner" style="border:2px solid #d97706;background:#fef3c7;color:#78350f;'
            f'padding:0.6em 1em;border-radius:6px;font-weight:600">⚠ {text}</div>'
        )
    with gr.Accordion("Model", open=False):
        gr.Markdown(info.markdown(), elem_id="model-panel")


OWN_SCALE_INFO = "0: the model's own scale (the pixel count it was trained at, aspect kept)"
"""What a max side of 0 means on the page."""


def _image_tab(model: nn.Module, folders: RequestFolders) -> None:
    with gr.Row():
        with gr.Column():
            image = gr.Image(
                type="filepath", sources=["upload", "clipboard", "webcam"], label="Photo", elem_id="input-image"
            )
            with gr.Accordion("Options", open=False):
                max_side = gr.Slider(
                    0, 4096, value=0, step=32, label="Max side (px)",
                    info=f"{OWN_SCALE_INFO}; otherwise larger photos are predicted downscaled to this longest "
                         "side. Outputs stay full size",
                )  # fmt: skip
                precision = gr.Radio(list(PRECISIONS), value="fp32", label="Precision")
                use_exif = gr.Checkbox(True, label="Use the camera's focal length from EXIF when the photo has it")
                fov = gr.Slider(
                    20, 120, value=DEFAULT_FOV_DEG, step=1, label="Horizontal field of view (°)",
                    info="camera for the point cloud when EXIF gives none",
                )  # fmt: skip
            run = gr.Button("Estimate depth", variant="primary", elem_id="run")
            gr.Examples(example_images(), inputs=image, label="Examples (synthetic rooms)")
        with gr.Column():
            colour = gr.Image(
                label="Depth (colour bar in metres; click to read a pixel)", interactive=False,
                format="png", elem_id="depth-image",
            )  # fmt: skip
            readout = gr.Markdown(elem_id="readout")
            view = gr.Model3D(
                label="3D point cloud (drag to turn, scroll to zoom)", display_mode="point_cloud",
                camera_position=(110, 75, None), elem_id="point-cloud",
            )
            with gr.Row():
                png16 = gr.DownloadButton("16-bit PNG (mm)", elem_id="download-png16")
                npy = gr.DownloadButton(".npy (metres)", elem_id="download-npy")
                ply = gr.DownloadButton(".ply (points)", elem_id="download-ply")
            gr.Markdown(
                f"Downloads: 16-bit PNG of depth × {DEPTH_SCALE:g} (millimetres; 0 = no depth), same size as the "
                "photo · `.npy`: float32 metres · `.ply`: coloured points in metres, camera frame "
                "(x right, y down, z forward)."
            )
    depth_state = gr.State()

    @_page_errors
    def run_image(upload: dict | None, side: float, prec: str, fov_deg: float, exif: bool) -> tuple:
        result = _predict(model, folders, upload, max_side=int(side) or None, precision=prec, fov_deg=fov_deg,
                          use_exif=exif)
        return (result.colour, result.readout(), str(result.view), str(result.png16), str(result.npy),
                str(result.ply), result.depth)  # fmt: skip

    @_page_errors
    def run_api(upload: dict | None) -> tuple[np.ndarray, str]:
        result = _predict(model, folders, upload)
        return result.colour, str(result.png16)

    def read_pixel(depth: np.ndarray | None, event: gr.SelectData) -> str:
        if depth is None:
            return "Estimate a depth map first."
        x, y = event.index
        return depth_at(depth, int(x), int(y))

    # preprocess=False: the uploaded file reaches predict_image undecoded, so a broken file gets our message
    # (Gradio's own decoding would fail first, with a generic error) and the pixel limit is checked before decoding.
    run.click(
        run_image, [image, max_side, precision, fov, use_exif], [colour, readout, view, png16, npy, ply, depth_state],
        api_visibility="private", preprocess=False,
    )  # fmt: skip
    colour.select(read_pixel, [depth_state], readout, api_visibility="private", queue=False)
    # The scripting endpoint: the same prediction, image in, colour depth and 16-bit PNG out.
    api = gr.Button(visible=False)
    api.click(run_api, image, [colour, png16], api_name="predict", preprocess=False)


def _predict(model: nn.Module, folders: RequestFolders, upload: dict | None, **kwargs: Any) -> DepthResult:
    """Depth for an image component's raw value (Gradio's file record: the upload's ``path`` on the server)."""
    if not upload:
        raise gr.Error("Upload, paste or take a photo first (or pick an example).", print_exception=False)
    if not upload.get("path"):
        raise gr.Error("The image did not arrive as a file; save it and upload the file.", print_exception=False)
    return predict_image(model, upload["path"], folders.new(), name=upload.get("orig_name"), **kwargs)


def _video_tab(model: nn.Module, folders: RequestFolders) -> None:
    gr.Markdown("A colour depth video with a colour bar in metres (one scale for the whole video).")
    with gr.Row():
        with gr.Column():
            video = gr.Video(sources=["upload"], label="Video", elem_id="input-video")
            max_side = gr.Slider(0, 4096, value=0, step=32, label="Max side (px)",
                                 info=f"{OWN_SCALE_INFO}; otherwise larger frames are predicted downscaled to "
                                      "this longest side")  # fmt: skip
            precision = gr.Radio(list(PRECISIONS), value="fp32", label="Precision")
            run = gr.Button("Estimate depth video", variant="primary", elem_id="run-video")
        depth_video = gr.Video(label="Depth video", interactive=False, elem_id="depth-video")

    @_page_errors
    def run_video(path: str | None, side: float, prec: str) -> str:
        if not path:
            raise gr.Error("Upload a video first.", print_exception=False)
        return str(predict_video(model, path, folders.new(), max_side=int(side) or None, precision=prec))

    run.click(run_video, [video, max_side, precision], depth_video, api_visibility="private")


def check_address(host: str, port: int) -> None:
    """Refuse an address this machine cannot serve on, naming what is wrong: the host or the port.

    Gradio reports every failure to listen as a port it cannot find, even for a host that is not an address
    at all, so the address is resolved and bound here first (and let go again).

    Raises:
        ConfigError: ``host`` does not resolve or is not an address of this machine; ``port`` is in use or
            needs privileges (below 1024).
    """
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise ConfigError(
            f"host={host} is neither an IP address nor a host name this machine can resolve ({reason}); "
            "use 127.0.0.1 (this machine only) or 0.0.0.0 (every network)", params=("host",)
        ) from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port={port} is in use on {shown} by another program; choose another port",
                                  params=("port",)) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ConfigError(f"host={host} is not an address of this machine, so nothing can be served on it; "
                                  "use 127.0.0.1 (this machine only) or 0.0.0.0 (every network)",
                                  params=("host",)) from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise ConfigError(f"port={port} on {shown} needs administrator rights (ports below 1024); "
                                  "choose a port of 1024 or more", params=("port",)) from None
            raise ConfigError(f"cannot listen on {shown} ({exc.strerror or exc}); check host={host} and "
                              f"port={port}", params=("host", "port")) from None


def launch(
    demo: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    max_upload_mb: int = 25,
    block: bool = True,
) -> None:
    """Serve ``demo``: one model run at a time, uploads capped at ``max_upload_mb``.

    Args:
        block: serve until Ctrl-C, which stops the server and is raised again (the CLI exits with 130);
            False returns once the server is up (tests), and ``demo.close()`` stops it.

    Raises:
        OSError: the port is taken or the address is not this machine's.
    """
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=f"{max_upload_mb}mb",
        prevent_thread_lock=True,
        show_error=False,
        quiet=not share,  # the CLI prints the local address; Gradio prints the public link of --share
        footer_links=["api"],
    )
    if not block:
        return
    try:
        while True:
            time.sleep(1.0)
    finally:
        demo.close()
