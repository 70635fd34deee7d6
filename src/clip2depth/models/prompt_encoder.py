"""The text side: the learnable mirror (or a language prompt) through CLIP's frozen text encoder."""

from __future__ import annotations

import open_clip
import torch
from torch import nn

from clip2depth.errors import ConfigError


class PromptEncoder(nn.Module):
    """Produces the query vector ``q`` that FiLM-modulates the decoder.

    Modes (docs/method.md#the-model):

    - ``mirror``: ``[SOT, M, EOT]`` + positional embedding through the frozen text transformer (causal
      mask), ``ln_final``, EOT position, ``text_projection``. ``M`` (L×width) is the only trainable part.
    - ``language``: the tokenized natural-language prompt through the unmodified ``encode_text``.
    - ``concat``: ``[SOT, frozen subword embeddings of the prompt, M, EOT]``.
    - ``none``: no text conditioning (``forward`` returns ``None``).

    ``q`` does not depend on the image. In eval mode it is cached and recomputed only when the mirror
    changes (its identity, version counter, device or dtype), so the cache can never go stale.
    """

    def __init__(
        self,
        clip: nn.Module,
        *,
        mode: str,
        mirror_length: int,
        mirror_init_std: float,
        prompt: str,
        tokenizer_name: str,
    ) -> None:
        super().__init__()
        for attr in ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection"):
            if not hasattr(clip, attr):
                raise ConfigError(
                    f"{type(clip).__name__} has no standard CLIP text tower (missing {attr}); "
                    "CLIP2Depth needs an open_clip CLIP with its own text transformer"
                )
        self.mode = mode
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
        for module in (self.token_embedding, self.transformer, self.ln_final):
            for p in module.parameters():
                p.requires_grad_(False)
        for p in (self.positional_embedding, self.text_projection):
            if isinstance(p, nn.Parameter):
                p.requires_grad_(False)
        if isinstance(self.text_projection, nn.Linear):
            self.text_projection.requires_grad_(False)

        context = int(self.positional_embedding.shape[0])
        width = int(self.token_embedding.weight.shape[1])
        tokens = open_clip.get_tokenizer(tokenizer_name)([prompt])  # 1 × context
        eot_pos = int(tokens.argmax(dim=-1))
        self.register_buffer("prompt_tokens", tokens, persistent=False)
        self.register_buffer("sot_eot_ids", tokens[0, [0, eot_pos]].clone(), persistent=False)
        self.register_buffer("prompt_word_ids", tokens[0, 1:eot_pos].clone(), persistent=False)

        self.mirror: nn.Parameter | None = None
        if mode in ("mirror", "concat"):
            length = 2 + mirror_length + (eot_pos - 1 if mode == "concat" else 0)
            if length > context:
                raise ConfigError(
                    f"the {mode} sequence needs {length} positions but the text encoder has {context}; "
                    "use a shorter mirror_length or prompt"
                )
            self.mirror = nn.Parameter(torch.randn(mirror_length, width) * mirror_init_std)
        self.query_dim = int(
            self.text_projection.out_features
            if isinstance(self.text_projection, nn.Linear)
            else self.text_projection.shape[1]
        )
        self._cache_key: tuple | None = None
        self._cache: torch.Tensor | None = None

    def train(self, mode: bool = True) -> PromptEncoder:
        super().train(mode)
        for module in (self.transformer, self.ln_final, self.token_embedding):
            module.eval()
        return self

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection

    def encode_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Run a 1×n×width embedding sequence (SOT ... EOT) through the frozen text encoder.

        Returns the projected feature at the last (EOT) position, shape 1×query_dim.
        """
        n = embeddings.shape[1]
        cast = self.transformer.get_cast_dtype() if hasattr(self.transformer, "get_cast_dtype") else torch.float32
        x = embeddings.to(cast) + self.positional_embedding[:n].to(cast)
        mask = self.attn_mask[:n, :n] if self.attn_mask is not None else None
        x = self.transformer(x, attn_mask=mask)
        x = self.ln_final(x)
        return self._project(x[:, -1])

    def compute_query(self) -> torch.Tensor | None:
        """The query ``q`` (1×query_dim), or ``None`` in mode ``none``; never cached."""
        if self.mode == "none":
            return None
        if self.mode == "language":
            with torch.no_grad():
                return self.encode_tokens(self.prompt_tokens)
        sot, eot = self.token_embedding(self.sot_eot_ids).unsqueeze(0).split(1, dim=1)
        parts = [sot]
        if self.mode == "concat":
            parts.append(self.token_embedding(self.prompt_word_ids).unsqueeze(0))
        parts += [self.mirror.unsqueeze(0).to(sot.dtype), eot]
        return self.encode_embeddings(torch.cat(parts, dim=1))

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """CLIP's ``encode_text`` (unnormalised) of P×context token ids → P×query_dim, with the frozen modules."""
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        return self._project(x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)])

    def forward(self) -> torch.Tensor | None:
        """The query; cached when no gradient is wanted, recomputed whenever the mirror changed."""
        if torch.is_grad_enabled() and self.mirror is not None and self.mirror.requires_grad:
            return self.compute_query()
        ref = self.mirror if self.mirror is not None else self.sot_eot_ids
        key = (self.mode, id(ref), ref._version, ref.device, ref.dtype)
        if self._cache is None or self._cache_key != key:
            with torch.no_grad():
                self._cache = self.compute_query()
            self._cache_key = key
        return self._cache
