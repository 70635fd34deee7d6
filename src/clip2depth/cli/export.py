"""``clip2depth export``: write a model as an ONNX graph (image → metric depth) and check it."""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "export a model to ONNX (dynamic batch/height/width) and check it against PyTorch"

MAX_RELATIVE_ERROR = 1e-4


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP, description=HELP)
    p.add_argument("--model", required=True, help="preset name, trained-model directory or hf-hub:org/name")
    p.add_argument("--pretrained", default=None,
                   help="CLIP weights (open_clip tag or file); default: what the model directory records, "
                        "random for a preset")
    p.add_argument("--onnx", required=True, metavar="FILE", help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 to 20 (default 17)")
    p.add_argument("--check-sizes", nargs="+", type=int, default=None, metavar="H W",
                   help="input sizes at which onnxruntime is compared with PyTorch, as H W pairs (default: "
                        "14x20 and 22x30 patches, i.e. 224 320 352 480 for 16-px patches); the command fails "
                        f"if any relative error exceeds {MAX_RELATIVE_ERROR:g}")
    return p


def run(args: argparse.Namespace) -> int:
    from clip2depth.errors import Clip2DepthError, ConfigError
    from clip2depth.inference.export import check_size, default_sizes, export_onnx, verify_onnx
    from clip2depth.models.factory import create_model

    if args.check_sizes is not None and len(args.check_sizes) % 2:
        raise ConfigError(f"--check-sizes takes H W pairs, got {len(args.check_sizes)} numbers")
    model = create_model(args.model, pretrained=args.pretrained)
    if args.check_sizes is None:
        sizes = default_sizes(model)
    else:
        pairs = zip(args.check_sizes[::2], args.check_sizes[1::2], strict=True)
        sizes = [check_size(model, pair, "--check-sizes") for pair in pairs]
    export_onnx(model, args.onnx, opset=args.opset)
    errors = verify_onnx(model, args.onnx, sizes)
    print(f"wrote {args.onnx}: input 'image' Bx3xHxW RGB in [0, 1] (H, W multiples of {model.patch_size}), "
          "output 'depth' Bx1xHxW metres")
    failed = []
    for (h, w), error in errors.items():
        ok = error <= MAX_RELATIVE_ERROR
        print(f"  {h}x{w}: max relative error vs PyTorch {error:.2e} {'ok' if ok else 'FAIL'}")
        if not ok:
            failed.append(f"{h}x{w}")
    if failed:
        raise Clip2DepthError(
            f"{args.onnx} was written but its output differs from PyTorch by more than "
            f"{MAX_RELATIVE_ERROR:g} at {', '.join(failed)}; do not use it (report the model and sizes)"
        )
    return 0
