"""``clip2depth info``: parameter counts and FLOPs of a model."""

from __future__ import annotations

import argparse
import json

from clip2depth.cli.options import add_model, add_pretrained, add_size

NAME = "info"
HELP = ("parameter counts (trainable vs frozen, per module), the model's processing size and GFLOPs per image "
        "(at that size unless --size is given)")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP, description=HELP)
    add_model(p, default="clip2depth-vit-b-16")
    add_pretrained(p)
    add_size(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def run(args: argparse.Namespace) -> int:
    from clip2depth.models.factory import create_model
    from clip2depth.models.infer import network_size
    from clip2depth.models.profiling import count_flops, count_parameters, parameter_table

    model = create_model(args.model, pretrained=args.pretrained)
    p = model.patch_size
    own = model.processing_size
    h, w = network_size(*own, p, size=args.size)  # --size, else the model's own scale; rounded as predict does
    trainable, frozen = count_parameters(model)
    result = {
        "model": args.model,
        "clip_model": model.config.clip_model,
        "processing_size": list(own),
        "size": [h, w],
        "trainable": trainable,
        "frozen": frozen,
        "modules": parameter_table(model),
        "gflops": count_flops(model, h, w),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"model {args.model} (CLIP {model.config.clip_model}), processing size {own[0]}x{own[1]} (images are "
          f"predicted at its pixel count, aspect kept), patch {p}; FLOPs at input {h}x{w}")
    print(f"{'module':<16}{'trainable':>14}{'frozen':>16}")
    for name, counts in result["modules"].items():
        print(f"{name:<16}{counts['trainable']:>14,}{counts['frozen']:>16,}")
    print(f"{'total':<16}{trainable:>14,}{frozen:>16,}")
    g = result["gflops"]
    print(f"GFLOPs per image: {g['per_image']:.2f} (image encoder {g['image_encoder']:.2f}, "
          f"decoder {g['decoder']:.2f}); query once per step: {g['query_once']:.2f}")
    return 0
