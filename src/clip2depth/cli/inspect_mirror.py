"""``clip2depth inspect-mirror``: what a trained mirror has learned, and how it got there."""

from __future__ import annotations

import argparse

from clip2depth.cli.options import (
    add_device,
    add_model,
    add_out,
    add_overwrite,
    add_pretrained,
    add_synthetic,
    add_synthetic_scene,
    positive_int,
)

NAME = "inspect-mirror"
HELP = "nearest words of the mirror, its similarity to prompts, where it changes depth, across checkpoints"

OUTPUTS = ("mirror.json", "tokens.md", "overlays.png", "convergence.png")
"""What ``inspect-mirror`` writes into ``--out``."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME, help=HELP,
        description=HELP + ". Writes mirror.json, tokens.md, overlays.png and (with --checkpoints) "
                           "convergence.png; definitions in docs/analyses.md.",
    )
    add_model(p)
    add_pretrained(p)
    p.add_argument("--images", nargs="+", default=None, metavar="INPUT",
                   help="images, folders or glob patterns for the maps (default: --synthetic scenes)")
    add_synthetic(p, default=4, unset="4 validation scenes, without --images")
    add_synthetic_scene(p)
    p.add_argument("--max-images", type=positive_int, default=6, help="use at most this many images (default 6)")
    p.add_argument("--checkpoints", nargs="+", default=None, metavar="DIR",
                   help="model directories of the same run at several steps, or run folders to search "
                        "(e.g. runs/x); adds the convergence table and convergence.png")
    p.add_argument("--reference", default="empty", choices=["empty", "language"],
                   help="query that replaces q for the maps: CLIP's feature of the empty prompt (default) "
                        "or of the paper's prompt")
    p.add_argument("--prompts", nargs="+", default=[], metavar="TEXT", help="more prompts to compare q with")
    p.add_argument("--top-k", type=positive_int, default=5, help="nearest tokens listed per mirror row (default 5)")
    add_out(p, default="runs/inspect-mirror")
    add_overwrite(p)
    add_device(p)
    return p


def _load_images(args: argparse.Namespace) -> tuple[list, list[str]]:
    import numpy as np

    from clip2depth.errors import DataError
    from clip2depth.io.images import load_image
    from clip2depth.io.inputs import expand_inputs, is_image_path

    if args.images:
        paths, problems = expand_inputs(args.images)
        paths = [p for p in paths if is_image_path(p)][: args.max_images]
        if not paths:
            raise DataError(f"--images matched no image ({'; '.join(f'{i}: {r}' for i, r in problems)})")
        return [load_image(p).astype(np.float32) / 255.0 for p in paths], [p.name for p in paths]
    from clip2depth.data import SyntheticDataset

    dataset = SyntheticDataset("val", size=tuple(args.synthetic_size), length=min(args.synthetic, args.max_images),
                               seed=args.seed)
    samples = [dataset[i] for i in range(len(dataset))]
    return [s["image"].permute(1, 2, 0).numpy() for s in samples], [s["name"] for s in samples]


def run(args: argparse.Namespace) -> int:
    from clip2depth.analysis.mirror import (
        PROMPT_PANEL,
        conditioning_maps,
        convergence,
        nearest_tokens,
        plot_convergence,
        plot_overlays,
        prompt_similarities,
        tokens_markdown,
    )
    from clip2depth.io.atomic import atomic_path, atomic_write_json
    from clip2depth.io.outputs import claim_output_dir
    from clip2depth.models.config import PAPER_PROMPT
    from clip2depth.models.factory import create_model, resolve_device

    images, names = _load_images(args)
    out = claim_output_dir(args.out, OUTPUTS, overwrite=args.overwrite)
    model = create_model(args.model, pretrained=args.pretrained, device=resolve_device(args.device))
    prompts = list(dict.fromkeys([*PROMPT_PANEL, *args.prompts]))
    similarities = prompt_similarities(model, prompts)  # refuses models without text conditioning
    tokens = nearest_tokens(model, k=args.top_k)
    maps = conditioning_maps(model, images, reference=args.reference)
    rows = convergence(model, args.checkpoints, images, prompts=prompts, reference=args.reference) \
        if args.checkpoints else []

    report = {
        "model": args.model,
        "prompt_mode": model.config.prompt_mode,
        "mirror_length": model.config.mirror_length if tokens else None,
        "reference": args.reference,
        "tokens": tokens,
        "prompt_similarity": similarities,
        "maps": [{"image": n, "mean_delta": m["mean_delta"], "p95_delta": m["p95_delta"]}
                 for n, m in zip(names, maps, strict=True)],
        "convergence": rows,
    }
    atomic_write_json(out / "mirror.json", report)
    with atomic_path(out / "tokens.md") as tmp:
        tmp.write_text(tokens_markdown(args.model, tokens, similarities, maps, names, rows, reference=args.reference))
    plot_overlays(images, maps, out / "overlays.png", names=names, reference=args.reference)
    written = ["mirror.json", "tokens.md", "overlays.png"]
    if rows:
        shown = [PAPER_PROMPT, "", "a human", "a window", "far"]
        plot_convergence(rows, out / "convergence.png", prompts=[p for p in shown if p in similarities])
        written.append("convergence.png")

    top = max(similarities, key=similarities.get)
    print(f"q of {args.model} ({model.config.prompt_mode}): cos with {PAPER_PROMPT!r} = "
          f"{similarities[PAPER_PROMPT]:.3f}; most similar prompt {top!r} ({similarities[top]:.3f})")
    print(f"mean |Δ log depth| against the {args.reference} reference over {len(maps)} images: "
          f"{sum(m['mean_delta'] for m in maps) / len(maps):.4f}")
    if rows:
        print(f"{len(rows)} checkpoints compared (steps {', '.join(str(r['step']) for r in rows)})")
    print(f"results in {out}/ ({', '.join(written)})")
    return 0
