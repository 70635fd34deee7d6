"""One view of every open_clip text-tower family, so the mirror can enter any of them.

open_clip builds its text side in two shapes: a ``CLIP`` holds the text modules itself, a
``CustomTextCLIP`` (SigLIP, EVA-CLIP, MobileCLIP, ...) holds a ``TextTransformer`` as ``.text``. The
families differ in their attention mask (causal for OpenAI CLIP; bidirectional for SigLIP and
MobileCLIP) and in which position they pool (the highest token id = EOT for CLIP, the last of the
padded context for SigLIP, a given EOS id for some). :class:`TextTower` reads these from the built
tower, and :class:`SequenceLayout` reads from the tokenizer where the special tokens and the padding
go, so that a sequence of embeddings laid out like a tokenized text gives exactly ``encode_text``.

The mirror itself needs no tokenizer, only that layout: :func:`mirror_layout` takes it from the model's
configuration where the tokenizer would need an extra package (SigLIP 2's Gemma tokenizer needs
``transformers``), so only the ``language`` and ``concat`` prompt modes need :func:`load_tokenizer`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import open_clip
import torch
from open_clip.transformer import TextTransformer, text_global_pool
from torch import nn

from clip2depth.errors import ConfigError

logger = logging.getLogger(__name__)

PLACEHOLDER_ID = -1  # template id of a position filled with free embeddings (never EOT, EOS or padding)
TOKENIZER_EXTRA = "clip2depth[siglip]"
"""The extra that installs ``transformers``, which open_clip's Hugging Face tokenizers (SigLIP's) need."""
GEMMA_EOS_ID = 1
"""End of text in the Gemma vocabulary of SigLIP 2 (0 pads, 2 begins a text but SigLIP 2 does not use it)."""
_CLIP_TEXT_ATTRS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")


@dataclass
class TextTower:
    """The frozen modules of a text tower and how its family masks and pools.

    ``attn_mask`` is the family's additive mask (context×context causal mask, or ``None`` for
    bidirectional towers); ``pool_type`` is open_clip's (``argmax``, ``eos``, ``first``, ``last``).
    """

    token_embedding: nn.Embedding
    positional_embedding: nn.Parameter
    transformer: nn.Module
    ln_final: nn.Module
    text_projection: nn.Module | nn.Parameter | None
    attn_mask: torch.Tensor | None
    pool_type: str
    eos_id: int | None


def text_tower_of(clip: nn.Module) -> TextTower:
    """The :class:`TextTower` of an open_clip model; :class:`ConfigError` for towers the mirror cannot enter."""
    text = getattr(clip, "text", None)
    if text is None:
        missing = [a for a in _CLIP_TEXT_ATTRS if not hasattr(clip, a)]
        if missing:
            raise ConfigError(
                f"{type(clip).__name__} has no open_clip text tower (missing {', '.join(missing)}); "
                "CLIP2Depth needs an open_clip CLIP with its own text transformer"
            )
        tower = TextTower(
            token_embedding=clip.token_embedding, positional_embedding=clip.positional_embedding,
            transformer=clip.transformer, ln_final=clip.ln_final, text_projection=clip.text_projection,
            attn_mask=clip.attn_mask, pool_type=clip.text_pool_type, eos_id=getattr(clip, "text_eos_id", None),
        )
    elif isinstance(text, TextTransformer):
        if text.cls_emb is not None or text.use_pad_mask:
            raise ConfigError(
                "this CLIP's text transformer appends a class token or masks padding (the CoCa family); "
                "the mirror supports CLIP, SigLIP, EVA-CLIP, MobileCLIP and ConvNeXt CLIP text towers"
            )
        tower = TextTower(
            token_embedding=text.token_embedding, positional_embedding=text.positional_embedding,
            transformer=text.transformer, ln_final=text.ln_final, text_projection=text.text_projection,
            attn_mask=text.attn_mask, pool_type=text.pool_type, eos_id=text.eos_id,
        )
    else:
        raise _hugging_face_text_error(f"this CLIP's text tower is a {type(text).__name__}")
    if tower.pool_type not in ("argmax", "eos", "first", "last"):
        raise ConfigError(f"text pooling {tower.pool_type!r} of this CLIP gives no single text feature")
    return tower


def refuse_hugging_face_text(model_name: str, text_cfg: dict) -> None:
    """Refuse, before anything is built, a CLIP whose open_clip ``text_cfg`` names a Hugging Face text model.

    open_clip would need ``transformers`` to build it and then the mirror could not enter it anyway, so the
    family is named instead of a missing package.
    """
    if text_cfg.get("hf_model_name"):
        raise _hugging_face_text_error(f"CLIP {model_name} has a Hugging Face text tower ({text_cfg['hf_model_name']})")


def _hugging_face_text_error(what: str) -> ConfigError:
    return ConfigError(
        f"{what}; clip2depth does not support CLIPs with Hugging Face text towers (such as the XLM-RoBERTa "
        "and NLLB CLIPs): the mirror enters only open_clip's own text transformers (CLIP, SigLIP, EVA-CLIP, "
        "MobileCLIP, ConvNeXt CLIPs). Pick one of those models"
    )


@dataclass(frozen=True)
class SequenceLayout:
    """Where a tokenizer puts special tokens and padding around the words of a text.

    A tokenized text is ``prefix + words + suffix + padding`` up to ``context_length`` (CLIP:
    ``[SOT] + words + [EOT] + 0…``; SigLIP: words, its own end token if any, then padding).
    """

    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    pad_id: int
    context_length: int

    @classmethod
    def from_tokenizer(cls, tokenizer: Callable[[list[str]], torch.Tensor]) -> SequenceLayout:
        """Read the layout from what ``tokenizer`` makes of an empty text."""
        empty = [int(t) for t in tokenizer([""])[0]]
        pad_id = empty[-1]
        core = _strip_padding(empty, pad_id)
        # Which specials precede the words: the part of the empty text that a real text starts with too.
        probe = _strip_padding([int(t) for t in tokenizer(["a"])[0]], pad_id)
        prefix = 0
        while prefix < len(core) and prefix < len(probe) and core[prefix] == probe[prefix]:
            prefix += 1
        return cls(tuple(core[:prefix]), tuple(core[prefix:]), pad_id, len(empty))

    def words(self, token_ids: torch.Tensor) -> list[int]:
        """The word ids of one tokenized text (1-D), without specials and padding."""
        core = _strip_padding([int(t) for t in token_ids], self.pad_id)
        end = len(core) - len(self.suffix_ids)
        if tuple(core[: len(self.prefix_ids)]) != self.prefix_ids or tuple(core[end:]) != self.suffix_ids:
            raise ConfigError("the prompt does not fit the text encoder's context; use a shorter prompt")
        return core[len(self.prefix_ids):end]

    def template(self, inner: list[int]) -> list[int]:
        """``prefix + inner + suffix + padding``: the full-context token ids around ``inner``."""
        ids = [*self.prefix_ids, *inner, *self.suffix_ids]
        if len(ids) > self.context_length:
            raise ConfigError(
                f"the text sequence needs {len(ids)} positions but the text encoder has {self.context_length}; "
                "use a shorter mirror_length or prompt"
            )
        return ids + [self.pad_id] * (self.context_length - len(ids))


def _strip_padding(ids: list[int], pad_id: int) -> list[int]:
    end = len(ids)
    while end and ids[end - 1] == pad_id:
        end -= 1
    return ids[:end]


def pooled_position(template: torch.Tensor, pool_type: str, eos_id: int | None) -> int:
    """The position a tower pools for a (1-D) token-id template, by open_clip's own pooling rule."""
    positions = torch.arange(template.shape[0], dtype=torch.float32).view(1, -1, 1)
    return int(text_global_pool(positions, template.unsqueeze(0), pool_type, eos_token_id=eos_id)[0, 0])


Tokenizer = Callable[[list[str]], torch.Tensor]
"""open_clip's tokenizer interface: texts → N×context token ids."""


def load_tokenizer(name: str, *, purpose: str) -> Tokenizer:
    """open_clip's tokenizer for the CLIP ``name`` (a :class:`~clip2depth.models.clip_backbone.ClipBundle`'s
    ``tokenizer_name``); ``purpose`` says what needs it, for the error.

    Raises:
        ConfigError: the tokenizer needs ``transformers`` and it is not installed (naming the extra), or its
            files cannot be fetched from the Hugging Face Hub.
    """
    try:
        return open_clip.get_tokenizer(name)
    except ImportError as exc:
        raise ConfigError(
            f"{purpose} needs the tokenizer of CLIP {name}, which needs the transformers package ({exc}): "
            f"pip install '{TOKENIZER_EXTRA}'"
        ) from exc
    except OSError as exc:  # Hugging Face tokenizer files neither cached nor reachable
        raise ConfigError(
            f"{purpose} needs the tokenizer of CLIP {name}, which could not be loaded ({exc}); connect to the "
            "Hugging Face Hub once so that it is cached"
        ) from exc


def mirror_layout(tokenizer_name: str) -> SequenceLayout:
    """The sequence layout the mirror is placed in, for the CLIP whose tokenizer is ``tokenizer_name``.

    SigLIP 2 (open_clip's ``hf_tokenizer_name`` names a SigLIP 2 tokenizer, the rule open_clip itself uses to
    pick the Gemma vocabulary): words, then end of text (:data:`GEMMA_EOS_ID`), then padding with the text
    config's ``pad_id`` up to its ``context_length``; no ``transformers`` needed, nothing downloaded. Every
    other family: read from its tokenizer (:func:`load_tokenizer`).
    """
    text_cfg = (open_clip.get_model_config(tokenizer_name) or {}).get("text_cfg") or {}
    if "siglip2" in str(text_cfg.get("hf_tokenizer_name", "")).lower():
        return SequenceLayout(
            prefix_ids=(), suffix_ids=(GEMMA_EOS_ID,), pad_id=int(text_cfg.get("pad_id", 0)),
            context_length=int(text_cfg["context_length"]),
        )
    return SequenceLayout.from_tokenizer(load_tokenizer(tokenizer_name, purpose="the mirror's sequence layout"))
