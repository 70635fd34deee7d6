"""``clip2depth app``: serve the web app (upload a photo, see and download its depth, turn the point cloud)."""

from __future__ import annotations

import argparse
import logging

from clip2depth.cli.options import add_device, add_model, add_pretrained, port, positive_int
from clip2depth.errors import ConfigError

NAME = "app"
HELP = "web app: depth, point cloud and downloads for photos and videos in the browser (needs clip2depth[app])"

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME, help=HELP,
        description=HELP + ". Without --model it serves demo_out/best (from `make demo`) if present, "
                           "else a page that says how to get a model.",
    )  # fmt: skip
    add_model(p, unset="demo_out/best, from `make demo`")
    add_pretrained(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network)")
    p.add_argument("--port", type=port, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    add_device(p)
    p.add_argument("--max-upload-mb", type=positive_int, default=None, help="largest upload accepted (default 25)")
    return p


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise ConfigError("the web app needs Gradio: pip install 'clip2depth[app]'") from exc
    from clip2depth.app.predict import MAX_UPLOAD_MB, default_model_source, describe_model
    from clip2depth.app.ui import build_app, check_address, launch
    from clip2depth.models.factory import create_model, resolve_device

    check_address(args.host, args.port)  # before the (slow) model load
    max_upload_mb = MAX_UPLOAD_MB if args.max_upload_mb is None else args.max_upload_mb
    source = default_model_source(args.model)
    model = info = None
    if source is None:
        logger.warning("no model: pass --model or run `make demo` first; the page explains how")
    else:
        model = create_model(source, pretrained=args.pretrained, device=resolve_device(args.device))
        info = describe_model(model, source)
        if info.banner:
            logger.warning(info.banner)
    demo = build_app(model, info)
    print(f"clip2depth app serving {source or 'no model'} on http://{args.host}:{args.port} (Ctrl-C stops)")
    try:
        launch(demo, host=args.host, port=args.port, share=args.share, max_upload_mb=max_upload_mb)
    except OSError as exc:  # taken since check_address, or refused for a reason it could not see
        raise ConfigError(f"cannot listen on {args.host}:{args.port} ({exc}); check --host and --port") from exc
    return 0
