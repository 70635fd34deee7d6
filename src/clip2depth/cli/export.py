"""``clip2depth export``: write a model as an ONNX graph (image → metric depth) and check it."""

from __future__ import annotations

import argparse
from pathlib import Path

from clip2depth.cli.options import add_model, add_overwrite, add_pretrained, positive_int

NAME = "export"
HELP = "export a model to ONNX (any batch, height and width) and check it against PyTorch"

MAX_RELATIVE_ERROR = {"fp32": 1e-4, "fp16": 2e-2}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP, description=HELP)
    add_model(p)
    add_pretrained(p)
    p.add_argument("--onnx", required=True, metavar="FILE",
                   help="the .onnx file to write (an existing file is refused without --overwrite)")
    add_overwrite(p)
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 to 20 (default 17)")
    p.add_argument("--fp16", action="store_true",
                   help="store weights and compute in float16 (about half the file); input and output stay float32")
    p.add_argument("--check-sizes", nargs="+", type=positive_int, default=None, metavar="H W",
                   help="input sizes at which onnxruntime is compared with PyTorch, as H W pairs (default: "
                        "14x20 and 22x30 patches and one size that is not a patch multiple, i.e. 224 320 352 480 "
                        "100 130 for 16-px patches); the command fails if any relative error exceeds "
                        f"{MAX_RELATIVE_ERROR['fp32']:g} ({MAX_RELATIVE_ERROR['fp16']:g} with --fp16)")
    return p


def run(args: argparse.Namespace) -> int:
    from clip2depth.errors import Clip2DepthError, ConfigError
    from clip2depth.inference.export import default_sizes, export_onnx, verify_onnx
    from clip2depth.io.outputs import writable_folder
    from clip2depth.models.factory import create_model

    if args.check_sizes is not None and len(args.check_sizes) % 2:
        raise ConfigError(f"--check-sizes takes H W pairs, got {len(args.check_sizes)} numbers")
    onnx = Path(args.onnx)
    if onnx.is_dir():
        raise ConfigError(f"--onnx {onnx} is a folder; pass a file name such as {onnx / 'clip2depth.onnx'}")
    if onnx.exists() and not args.overwrite:
        raise ConfigError(f"--onnx {onnx} already exists; pass --overwrite to replace it, or choose another name")
    writable_folder(onnx.parent, "the folder of --onnx", create=False)
    model = create_model(args.model, pretrained=args.pretrained)
    if args.check_sizes is None:
        sizes = default_sizes(model)
    else:
        sizes = list(zip(args.check_sizes[::2], args.check_sizes[1::2], strict=True))
    precision = "fp16" if args.fp16 else "fp32"
    limit = MAX_RELATIVE_ERROR[precision]
    export_onnx(model, args.onnx, opset=args.opset, fp16=args.fp16)
    errors = verify_onnx(model, args.onnx, sizes)
    print(f"wrote {args.onnx} ({precision}): input 'image' Bx3xHxW RGB in [0, 1] (any H, W), "
          "output 'depth' Bx1xHxW metres at the input size")
    failed = []
    for (h, w), error in errors.items():
        ok = error <= limit
        print(f"  {h}x{w}: max relative error vs PyTorch {error:.2e} {'ok' if ok else 'FAIL'}")
        if not ok:
            failed.append(f"{h}x{w}")
    if failed:
        raise Clip2DepthError(
            f"{args.onnx} was written but its output differs from PyTorch by more than "
            f"{limit:g} at {', '.join(failed)}; do not use it (report the model and sizes)"
        )
    return 0
