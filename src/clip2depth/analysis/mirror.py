"""What the learned mirror is: its nearest words, its agreement with prompts, where it changes depth.

Four views of a trained model's text side (``clip2depth inspect-mirror``; ``docs/analyses.md``):

(a) :func:`nearest_tokens` — for every mirror row, the closest entries of CLIP's token-embedding table
    (cosine similarity; the mirror lives in that space, in place of subword embeddings).
(b) :func:`prompt_similarities` — cosine similarity between the mirror's query ``q`` and CLIP's text
    feature of each prompt of a panel, the paper's target prompt among them.
(c) :func:`conditioning_maps` — where the conditioning matters: ``Δ = |log d_q − log d_ref|`` per pixel,
    where ``d_ref`` is the depth the same decoder gives with ``q`` replaced by a reference text feature
    (default: CLIP's feature of the empty prompt ``""``, i.e. "no words", which keeps the decoder's FiLM
    input a genuine CLIP text feature while removing every content the mirror learned).
(d) :func:`convergence` — (a)–(c) summarised across training checkpoints.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from clip2depth.errors import ConfigError
from clip2depth.io.colour import colorize_depth
from clip2depth.io.figures import figure, save_png
from clip2depth.models.checkpoint import is_model_dir, load_trained_state, read_model_dir
from clip2depth.models.config import PAPER_PROMPT
from clip2depth.models.infer import image_tensor, predict_depth
from clip2depth.models.model import Clip2Depth
from clip2depth.models.text_towers import load_tokenizer

logger = logging.getLogger(__name__)

PROMPT_PANEL: tuple[str, ...] = (
    PAPER_PROMPT,
    "",
    "a photo",
    "depth",
    "distance",
    "near",
    "far",
    "close to the camera",
    "far from the camera",
    "a human",
    "a window",
    "a wall",
    "the floor",
    "a table",
    "a room",
)
"""Prompts whose text features ``q`` is compared with (the paper's target prompt first)."""

REFERENCES = ("empty", "language")
"""Reference queries for the conditioning maps: the empty prompt, or the paper's prompt."""


def _require_conditioned(model: Clip2Depth) -> None:
    if not isinstance(model, Clip2Depth) or model.prompt_encoder.mode == "none":
        raise ConfigError("inspect-mirror needs a CLIP2Depth model conditioned on a prompt (prompt_mode mirror, "
                          "concat or language); this one has no text conditioning")


def _tokenizer(model: Clip2Depth) -> Any:
    return _cached_tokenizer(model.config.clip_model)


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(clip_model: str) -> Any:
    return load_tokenizer(clip_model, purpose="inspect-mirror")  # reads the vocabulary: ~0.3 s a time


@torch.no_grad()
def nearest_tokens(model: Clip2Depth, k: int = 5) -> list[dict[str, Any]]:
    """The ``k`` vocabulary tokens nearest (cosine) to each mirror row; [] when there is no mirror.

    Returns one dict per row: ``row``, ``norm`` (the row's L2 norm) and ``tokens`` — a list of
    ``{"token", "id", "cos"}``, nearest first. Tokens are decoded with CLIP's tokenizer (a trailing
    space marks a word end).
    """
    mirror = model.prompt_encoder.mirror
    if mirror is None:
        return []
    vocab = model.prompt_encoder.token_embedding.weight.float()
    m = mirror.detach().float()
    cos = F.normalize(m, dim=-1) @ F.normalize(vocab, dim=-1).T
    values, ids = cos.topk(k, dim=-1)
    tokenizer = _tokenizer(model)
    decode = getattr(tokenizer, "decode", None) or tokenizer.tokenizer.decode
    rows = []
    for r in range(m.shape[0]):
        tokens = [{"token": decode([int(i)]), "id": int(i), "cos": float(v)}
                  for v, i in zip(values[r].tolist(), ids[r].tolist(), strict=True)]
        rows.append({"row": r, "norm": float(m[r].norm()), "tokens": tokens})
    return rows


@torch.no_grad()
def text_features(model: Clip2Depth, prompts: Sequence[str]) -> torch.Tensor:
    """CLIP's ``encode_text`` of each prompt (P×Q), computed with the model's own frozen text tower."""
    tokens = _tokenizer(model)(list(prompts)).to(model.device)
    return model.prompt_encoder.encode_tokens(tokens).float()


@torch.no_grad()
def prompt_similarities(model: Clip2Depth, prompts: Sequence[str] = PROMPT_PANEL) -> dict[str, float]:
    """Cosine similarity between the model's query ``q`` and the text feature of each prompt."""
    _require_conditioned(model)
    q = model.prompt_encoder.compute_query().float()
    cos = F.normalize(text_features(model, prompts), dim=-1) @ F.normalize(q, dim=-1)[0]
    return {p: float(c) for p, c in zip(prompts, cos.tolist(), strict=True)}


def reference_query(model: Clip2Depth, reference: str) -> torch.Tensor:
    """The 1×Q query that stands for "no learned conditioning" (see :data:`REFERENCES`)."""
    if reference not in REFERENCES:
        raise ConfigError(f"unknown reference {reference!r}; choose one of {', '.join(REFERENCES)}")
    prompt = "" if reference == "empty" else PAPER_PROMPT
    return text_features(model, [prompt])


class _QueryStack(torch.nn.Module):
    """A model whose channels are the depth under each query, sharing one image-encoder pass (B×Q×H×W)."""

    def __init__(self, model: Clip2Depth, queries: list[torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.queries = queries
        self.patch_size = model.patch_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.model.image_encoder(images)
        return torch.cat([self.model.decoder(features, q) for q in self.queries], dim=1)


@torch.no_grad()
def _depth_with_query(model: Clip2Depth, image: torch.Tensor, queries: list[torch.Tensor]) -> list[np.ndarray]:
    """Depth (H×W metres at the image's size) of one 3×H×W image under each query, sharing the encoder pass."""
    depth = predict_depth(_QueryStack(model, queries), image[None].to(model.device), native=True)
    return [d.cpu().numpy() for d in depth[0]]


def conditioning_maps(model: Clip2Depth, images: Sequence[np.ndarray], *, reference: str = "empty"
                      ) -> list[dict[str, Any]]:
    """Per image: ``depth`` (learned ``q``), ``reference_depth`` and ``delta = |log depth − log reference_depth|``.

    Args:
        images: H×W×3 float RGB in [0, 1].

    Returns:
        dicts with the three H×W arrays plus ``mean_delta`` and ``p95_delta`` (95th percentile).
    """
    _require_conditioned(model)
    model.eval()
    q = model.prompt_encoder.compute_query()
    q_ref = reference_query(model, reference)
    out = []
    for image in images:
        depth, ref = _depth_with_query(model, image_tensor(image), [q, q_ref])
        delta = np.abs(np.log(depth) - np.log(ref))
        out.append({"depth": depth, "reference_depth": ref, "delta": delta,
                    "mean_delta": float(delta.mean()), "p95_delta": float(np.percentile(delta, 95))})
    return out


# ------------------------------------------------------------------------------------------ checkpoints


def checkpoint_step(directory: str | Path) -> int | None:
    """Training step of a model directory: ``config.json`` ``step`` or ``best.step``, the resume state,
    or the last number in the directory name (``step-000400``); None when none says."""
    directory = Path(directory)
    config = read_model_dir(directory)
    for value in (config.get("step"), (config.get("best") or {}).get("step")):
        if isinstance(value, int):
            return value
    resume = directory / "resume.json"
    if resume.is_file():
        try:
            return int(json.loads(resume.read_text())["state"]["step"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    numbers = re.findall(r"\d+", directory.name)
    return int(numbers[-1]) if numbers else None


def expand_checkpoints(paths: Sequence[str | Path]) -> list[Path]:
    """Model directories named or found below ``paths`` (e.g. a run folder), ordered by step, one per
    step (``best/``, ``last/`` and a saved step of one run are the same state when their steps agree)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if is_model_dir(path):
            found.append(path)
        elif path.is_dir():
            children = sorted(c.parent for c in path.rglob("config.json")
                              if is_model_dir(c.parent) and not c.parent.name.endswith((".partial", ".old")))
            if not children:
                raise ConfigError(f"--checkpoints {path}: no model directory (config.json) inside")
            found += children
        else:
            raise ConfigError(f"--checkpoints {path}: no such model directory")
    unique: dict[Any, Path] = {}
    for path in found:
        step = checkpoint_step(path)
        unique.setdefault(str(path.resolve()) if step is None else step, path)
    steps = {p: checkpoint_step(p) for p in unique.values()}
    return sorted(unique.values(), key=lambda p: (steps[p] is None, steps[p] or 0, str(p)))


@torch.no_grad()
def convergence(
    model: Clip2Depth,
    checkpoints: Sequence[str | Path],
    images: Sequence[np.ndarray],
    *,
    prompts: Sequence[str] = PROMPT_PANEL,
    reference: str = "empty",
) -> list[dict[str, Any]]:
    """(a)–(c) at each checkpoint, relative to ``model`` (the final state).

    Each checkpoint is loaded into ``model`` itself (CLIP is built once), whose own trained state is
    put back afterwards. Per
    checkpoint: ``step``, ``path``, ``prompt_cos`` (dict, :func:`prompt_similarities`), ``q_cos_final``
    (cosine of its ``q`` with the final ``q``), ``mirror_rms`` (RMS of the mirror entries),
    ``mirror_change`` (``‖M − M_final‖ / ‖M_final‖``), ``top1_agreement`` (share of mirror rows whose
    nearest token equals the final one's) and ``mean_delta`` (mean of :func:`conditioning_maps` deltas).
    """
    _require_conditioned(model)
    paths = expand_checkpoints(checkpoints)
    for path in paths:
        if read_model_dir(path)["model"] != model.config.to_dict():
            raise ConfigError(f"checkpoint {path} has another architecture than the model under inspection "
                              "(pass checkpoints of the same run)")
    final_q = F.normalize(model.prompt_encoder.compute_query().float(), dim=-1)[0]
    final_mirror = None if model.prompt_encoder.mirror is None else model.prompt_encoder.mirror.detach().clone()
    final_top1 = [r["tokens"][0]["id"] for r in nearest_tokens(model, k=1)]
    final_state = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    rows = []
    try:
        for path in paths:
            load_trained_state(model, path, read_model_dir(path).get("weights_sha256"))
            q = F.normalize(model.prompt_encoder.compute_query().float(), dim=-1)[0]
            row: dict[str, Any] = {"step": checkpoint_step(path), "path": str(path),
                                   "prompt_cos": prompt_similarities(model, prompts),
                                   "q_cos_final": float(q @ final_q)}
            if final_mirror is not None:
                mirror = model.prompt_encoder.mirror.detach()
                row["mirror_rms"] = float(mirror.float().pow(2).mean().sqrt())
                row["mirror_change"] = float((mirror - final_mirror).norm() / final_mirror.norm().clamp_min(1e-12))
                top1 = [r["tokens"][0]["id"] for r in nearest_tokens(model, k=1)]
                row["top1_agreement"] = float(np.mean([a == b for a, b in zip(top1, final_top1, strict=True)]))
            maps = conditioning_maps(model, images, reference=reference) if images else []
            row["mean_delta"] = float(np.mean([m["mean_delta"] for m in maps])) if maps else math.nan
            rows.append(row)
    finally:
        targets = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        for name, value in final_state.items():
            targets[name].copy_(value)
    return rows


# ------------------------------------------------------------------------------------------ reports


def plot_overlays(images: Sequence[np.ndarray], maps: Sequence[dict[str, Any]], path: str | Path, *,
                  names: Sequence[str] | None = None, reference: str = "empty") -> None:
    """One row per image: the image, depth with ``q``, depth with the reference, Δ over the image."""
    n = len(images)
    fig = figure(12, 2.6 * n + 0.4, dpi=80)  # photo-like panels: keep the PNG small
    axes = fig.subplots(n, 4, squeeze=False)
    ref_label = '"" (empty prompt)' if reference == "empty" else "the paper's prompt"
    for i, (image, m) in enumerate(zip(images, maps, strict=True)):
        lo = float(min(m["depth"].min(), m["reference_depth"].min()))
        hi = float(max(m["depth"].max(), m["reference_depth"].max()))
        axes[i, 0].imshow(image, interpolation="nearest")
        axes[i, 0].set_title(names[i] if names else f"image {i}", fontsize=8)
        axes[i, 1].imshow(colorize_depth(m["depth"], vmin=lo, vmax=hi), interpolation="nearest")
        axes[i, 1].set_title(f"depth, learned q ({lo:.1f}–{hi:.1f} m)", fontsize=8)
        axes[i, 2].imshow(colorize_depth(m["reference_depth"], vmin=lo, vmax=hi), interpolation="nearest")
        axes[i, 2].set_title(f"depth, q = {ref_label}", fontsize=8)
        axes[i, 3].imshow(image.mean(axis=-1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        shown = axes[i, 3].imshow(m["delta"], cmap="inferno", alpha=0.65, interpolation="nearest")
        axes[i, 3].set_title(f"|Δ log depth|, mean {m['mean_delta']:.3f}", fontsize=8)
        fig.colorbar(shown, ax=axes[i, 3], fraction=0.046, pad=0.02)
        for ax in axes[i]:
            ax.set_axis_off()
    save_png(fig, path)


def plot_convergence(rows: Sequence[dict[str, Any]], path: str | Path, *, prompts: Sequence[str]) -> None:
    """Across checkpoints: q's similarity to a few prompts, distance to the final mirror, Δ strength."""
    from matplotlib.ticker import MaxNLocator

    steps = [r["step"] if r["step"] is not None else i for i, r in enumerate(rows)]
    fig = figure(11, 7)
    ax = fig.subplots(2, 2)
    for prompt in prompts:
        ax[0, 0].plot(steps, [r["prompt_cos"][prompt] for r in rows], marker=".",
                      label=repr(prompt) if len(prompt) < 30 else repr(prompt[:27] + "..."))
    ax[0, 0].set_title("cos(q, text feature of prompt)", fontsize=9)
    ax[0, 0].legend(fontsize=7)
    ax[0, 1].plot(steps, [r["q_cos_final"] for r in rows], marker=".", label="cos(q, final q)")
    if "mirror_change" in rows[0]:
        ax[0, 1].plot(steps, [r["mirror_change"] for r in rows], marker=".", label="‖M − M_final‖ / ‖M_final‖")
        ax[1, 1].plot(steps, [r["top1_agreement"] for r in rows], marker=".", color="C2")
    ax[1, 1].set_title("rows whose nearest token is the final one's", fontsize=9)
    ax[0, 1].set_title("distance to the final state", fontsize=9)
    ax[0, 1].legend(fontsize=7)
    ax[1, 0].plot(steps, [r["mean_delta"] for r in rows], marker=".", color="C3")
    ax[1, 0].set_title("mean |Δ log depth| against the reference query", fontsize=9)
    for a in ax.flat:
        a.set_xlabel("step")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    save_png(fig, path)


def _cell(token: str) -> str:
    # A table cell: pipes and backticks would break the markdown; a lone space stays visible as '␣'.
    return (token.strip() or "␣").replace("|", "\\|").replace("`", "'")


def tokens_markdown(model_name: str, tokens: list[dict[str, Any]], similarities: dict[str, float],
                    maps: Sequence[dict[str, Any]], names: Sequence[str], convergence_rows: Sequence[dict[str, Any]],
                    *, reference: str) -> str:
    """The human-readable report: nearest tokens per mirror row, prompt similarities, map strengths."""
    lines = [f"# Mirror of {model_name}", ""]
    if tokens:
        lines += ["## Nearest vocabulary tokens per mirror row (cosine in the token-embedding space)", "",
                  "| row | norm | nearest tokens (cos) |", "|---:|---:|---|"]
        for r in tokens:
            cells = ", ".join(f"`{_cell(t['token'])}` ({t['cos']:.2f})" for t in r["tokens"])
            lines.append(f"| {r['row']} | {r['norm']:.3f} | {cells} |")
    else:
        lines += ["This model has no mirror (prompt_mode language): no token table."]
    lines += ["", "## Cosine similarity of q with CLIP text features", "", "| prompt | cos |", "|---|---:|"]
    for prompt, cos in sorted(similarities.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {prompt!r} | {cos:.3f} |")
    if maps:
        lines += ["", f"## Where the conditioning matters (reference: {reference})", "",
                  "| image | mean abs Δ log depth | 95th percentile |", "|---|---:|---:|"]
        for name, m in zip(names, maps, strict=True):
            lines.append(f"| {name} | {m['mean_delta']:.4f} | {m['p95_delta']:.4f} |")
    if convergence_rows:
        lines += ["", "## Convergence across checkpoints", "",
                  f"| step | cos(q, {PAPER_PROMPT!r}) | cos(q, final q) | mirror change | top-1 agreement | "
                  "mean Δ |", "|---:|---:|---:|---:|---:|---:|"]
        for r in convergence_rows:
            cells = [r["prompt_cos"][PAPER_PROMPT], r["q_cos_final"], r.get("mirror_change", math.nan),
                     r.get("top1_agreement", math.nan), r["mean_delta"]]
            lines.append(f"| {r['step']} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"
