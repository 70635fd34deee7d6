"""The text side: the learnable mirror (or a language prompt) through CLIP's frozen text encoder."""

from __future__ import annotations

import torch
from open_clip.transformer import text_global_pool
from torch import nn

from clip2depth.errors import ConfigError
from clip2depth.models.text_towers import (
    PLACEHOLDER_ID,
    SequenceLayout,
    load_tokenizer,
    mirror_layout,
    pooled_position,
    text_tower_of,
)


class PromptEncoder(nn.Module):
    """Produces the query vector ``q`` that FiLM-modulates the decoder.

    Modes (docs/method.md#the-model):

    - ``mirror``: ``M`` (L×width, the only trainable part) laid out like the words of a tokenized text
      (CLIP: ``[SOT, M, EOT]``; SigLIP: ``M`` then padding to the full context) + positional embedding,
      through the frozen text transformer with its family's mask (causal for CLIP), ``ln_final``, the
      family's pooled position (CLIP: EOT; SigLIP: last), ``text_projection``.
    - ``language``: the tokenized natural-language prompt through the tower's unmodified ``encode_text``.
    - ``concat``: ``[specials, frozen subword embeddings of the prompt, M, specials]``.
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
        tower = text_tower_of(clip)
        self.mode = mode
        self.pool_type = tower.pool_type
        self.eos_id = tower.eos_id
        self.token_embedding = tower.token_embedding
        self.positional_embedding = tower.positional_embedding
        self.transformer = tower.transformer
        self.ln_final = tower.ln_final
        self.text_projection = tower.text_projection
        self.register_buffer("attn_mask", tower.attn_mask, persistent=False)
        for module in (self.token_embedding, self.transformer, self.ln_final):
            for p in module.parameters():
                p.requires_grad_(False)
        for p in (self.positional_embedding, self.text_projection):
            if isinstance(p, nn.Parameter):
                p.requires_grad_(False)
        if isinstance(self.text_projection, nn.Linear):
            self.text_projection.requires_grad_(False)

        width = int(self.token_embedding.weight.shape[1])
        # Only a prompt needs the tokenizer (which may need an extra package); the mirror needs the layout.
        words: list[int] = []
        tokens = word_ids = None
        if mode in ("language", "concat"):
            tokenizer = load_tokenizer(tokenizer_name, purpose=f"prompt_mode {mode!r}")
            layout = SequenceLayout.from_tokenizer(tokenizer)
            tokens = tokenizer([prompt])  # 1 × context
            words = layout.words(tokens[0])
            word_ids = torch.tensor(words, dtype=torch.long)
        elif mode == "mirror":
            layout = mirror_layout(tokenizer_name)
        self.register_buffer("prompt_tokens", tokens, persistent=False)
        self.register_buffer("prompt_word_ids", word_ids, persistent=False)

        self.mirror: nn.Parameter | None = None
        if mode in ("mirror", "concat"):
            inner = (words if mode == "concat" else []) + [PLACEHOLDER_ID] * mirror_length
            template = torch.tensor(layout.template(inner), dtype=torch.long)
            pooled = pooled_position(template, self.pool_type, self.eos_id)
            # Under a causal mask nothing after the pooled position can change it: those positions never run.
            length = pooled + 1 if self.attn_mask is not None else len(template)
            template = template[:length]
            first = len(layout.prefix_ids)
            free = slice(first + (len(words) if mode == "concat" else 0), first + len(inner))
            if pooled < free.stop - 1 and self.attn_mask is not None:
                raise ConfigError(f"this text tower pools position {pooled}, which a causal mask hides the mirror from")
            self.register_buffer("prefix_ids", template[: free.start].clone(), persistent=False)
            self.register_buffer("suffix_ids", template[free.stop :].clone(), persistent=False)
            self.pooled_index = pooled
            self.mirror = nn.Parameter(torch.randn(mirror_length, width) * mirror_init_std)
        projection = self.text_projection
        if projection is None:
            self.query_dim = width
        elif isinstance(projection, nn.Linear):
            self.query_dim = int(projection.out_features)
        else:
            self.query_dim = int(projection.shape[1])
        self._cache_key: tuple | None = None
        self._cache: torch.Tensor | None = None

    def train(self, mode: bool = True) -> PromptEncoder:
        super().train(mode)
        for module in (self.transformer, self.ln_final, self.token_embedding):
            module.eval()
        return self

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection

    def encode_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Run a 1×n×width embedding sequence, laid out like a tokenized text, through the frozen tower.

        The family's mask applies; the feature at the pooled position is projected, shape 1×query_dim.
        """
        n = embeddings.shape[1]
        cast = self.transformer.get_cast_dtype() if hasattr(self.transformer, "get_cast_dtype") else torch.float32
        x = embeddings.to(cast) + self.positional_embedding[:n].to(cast)
        mask = self.attn_mask[:n, :n] if self.attn_mask is not None else None
        x = self.transformer(x, attn_mask=mask)
        x = self.ln_final(x)
        return self._project(x[:, self.pooled_index])

    def compute_query(self) -> torch.Tensor | None:
        """The query ``q`` (1×query_dim), or ``None`` in mode ``none``; never cached."""
        if self.mode == "none":
            return None
        if self.mode == "language":
            with torch.no_grad():
                return self.encode_tokens(self.prompt_tokens)
        prefix = self.token_embedding(self.prefix_ids).unsqueeze(0)
        suffix = self.token_embedding(self.suffix_ids).unsqueeze(0)
        return self.encode_embeddings(torch.cat([prefix, self.mirror.unsqueeze(0).to(prefix.dtype), suffix], dim=1))

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The tower's ``encode_text`` on B×context token ids (its own mask and pooling), B×query_dim."""
        cast = self.transformer.get_cast_dtype() if hasattr(self.transformer, "get_cast_dtype") else torch.float32
        x = self.token_embedding(tokens).to(cast) + self.positional_embedding.to(cast)
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        return self._project(text_global_pool(x, tokens, self.pool_type, eos_token_id=self.eos_id))

    def forward(self) -> torch.Tensor | None:
        """The query; cached when no gradient is wanted, recomputed whenever the mirror changed."""
        if self.mode == "none":
            return None
        if torch.is_grad_enabled() and self.mirror is not None and self.mirror.requires_grad:
            return self.compute_query()
        ref = self.mirror if self.mirror is not None else self.prompt_tokens
        key = (self.mode, id(ref), ref._version, ref.device, ref.dtype)
        if self._cache is None or self._cache_key != key:
            with torch.no_grad():
                self._cache = self.compute_query()
            self._cache_key = key
        return self._cache
