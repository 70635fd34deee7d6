"""The backbone table: every backbone preset's size, cost and CPU speed against its own full image encoder.

For each preset (random weights: sizes and timings do not depend on them) this prints one Markdown row:

- family: the image tower (open_clip ViT or the timm class) and the text tower's mask and pooling;
- the open_clip pretrained tag the preset names;
- frozen and trainable parameters (``clip2depth.models.profiling.count_parameters``);
- GFLOPs per image at ``--size`` (``count_flops``: image encoder up to the deepest used level + decoder);
- the CPU inference ratio: ``model(x)`` with the query cached (image encoder + decoder) over the same
  CLIP's full ``encode_image`` (every block, final norm, pooling, projection) at the same size, the
  median over ``--repeats`` rounds of the ratio within a round (each round runs both, interleaved, so
  load from other processes that drifts between rounds cancels out).

The full encoder of a timm tower is the same tower run to its end (its trunk accepts any size); the
open_clip ViT is rebuilt for the size (``force_image_size``), as ``benchmarks/speed.py`` does.
Tokenizers that open_clip fetches from the Hugging Face Hub (SigLIP 2's) cannot be loaded offline:
their rows use the CLIP BPE tokenizer with the tower's context length instead, which changes token
ids only, not any size or cost (the row says so).

Example (about 15 minutes on 2 shared CPU cores)::

    python benchmarks/backbones.py --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import open_clip
import torch

from clip2depth.models.clip_backbone import build_clip, register_clip_configs, resolve_quick_gelu
from clip2depth.models.config import load_preset
from clip2depth.models.model import Clip2Depth
from clip2depth.models.profiling import count_flops, count_parameters
from clip2depth.models.timm_image_encoder import TimmImageEncoder

logger = logging.getLogger("backbones")

PRESETS = (
    "clip2depth-vit-b-16",
    "clip2depth-siglip2-b-16",
    "clip2depth-eva02-b-16",
    "clip2depth-mobileclip-s1",
    "clip2depth-convnext-base-w",
)


def offline_tokenizer_name(clip_model: str, workdir: Path) -> tuple[str, bool]:
    """``clip_model``, or a stand-in config name whose tokenizer is CLIP's BPE at the same context length."""
    try:
        open_clip.get_tokenizer(clip_model)
        return clip_model, False
    except (ImportError, OSError, ValueError) as exc:
        logger.warning("tokenizer of %s unavailable offline (%s): using CLIP BPE", clip_model, exc)
    config = copy.deepcopy(open_clip.get_model_config(clip_model))
    config["text_cfg"].pop("hf_tokenizer_name", None)
    config["text_cfg"].pop("tokenizer_kwargs", None)
    name = "bench-bpe-" + str(abs(hash(clip_model)))  # no "siglip" in it: open_clip picks tokenizers by name
    (workdir / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(workdir / f"{name}.json")
    return name, True


def full_encoder(model, bundle, height: int, width: int):
    """The CLIP's complete ``encode_image`` at ``height``×``width``."""
    if isinstance(model.image_encoder, TimmImageEncoder):
        return bundle.model.encode_image
    cfg = model.config
    quick_gelu = resolve_quick_gelu(cfg.clip_model, cfg.clip_pretrained, cfg.clip_quick_gelu)
    clip = open_clip.create_model(cfg.clip_model, force_quick_gelu=quick_gelu, force_image_size=(height, width))
    return clip.eval().requires_grad_(False).encode_image


def family(model) -> str:
    encoder, text = model.image_encoder, model.prompt_encoder
    tower = type(encoder.trunk).__name__ if isinstance(encoder, TimmImageEncoder) else "open_clip ViT"
    mask = "causal" if text.attn_mask is not None else "bidirectional"
    return f"{tower} (strides {sorted(set(encoder.strides))}); text {mask}, {text.pool_type} pooling"


def timed(fn) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        fn()
    return time.perf_counter() - start


def row(name: str, args: argparse.Namespace, workdir: Path) -> str:
    config = load_preset(name)
    bundle = build_clip(config.clip_model, weights=None, reference_tag=config.clip_pretrained,
                        seed=config.clip_init_seed)
    bundle.tokenizer_name, stand_in = offline_tokenizer_name(config.clip_model, workdir)
    model = Clip2Depth.assemble(config, bundle)
    trainable, frozen = count_parameters(model)
    h, w = args.size
    gflops = count_flops(model, h, w)["per_image"]
    reference = full_encoder(model, bundle, h, w)
    x = torch.rand(1, 3, h, w)
    model.query()  # cached from here on, as at inference
    ratios = []
    for i in range(args.warmup + args.repeats):
        ours, full = timed(lambda: model(x)), timed(lambda: reference(x))
        if i >= args.warmup:
            ratios.append(ours / full)
        logger.info("%s round %d: ours %.2f s, full encode_image %.2f s", name, i, ours, full)
    note = " (CLIP BPE tokenizer stand-in)" if stand_in else ""
    return (f"| `{name}` | {config.clip_model}: {family(model)} | `{config.clip_pretrained}`{note} | "
            f"{frozen / 1e6:.1f} M | {trainable / 1e6:.2f} M | {gflops:.1f} | {statistics.median(ratios):.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--size", type=int, nargs=2, default=(416, 544), metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logger.setLevel(logging.INFO)
    torch.set_num_threads(args.threads)
    register_clip_configs()
    print(f"Random weights, CPU, {args.threads} thread(s), {args.size[0]}x{args.size[1]}, median of "
          f"{args.repeats} rounds after {args.warmup} warm-up.\n")
    print("| preset | family | open_clip tag | frozen | trainable | GFLOPs/image | CPU time vs full encoder |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.presets:
            print(row(name, args, Path(workdir)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
