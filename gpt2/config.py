"""GPT-2 hyper-parameters: one dataclass, named exactly as Hugging Face's `config.json` names them.

Shapes used throughout the package (said once, here):
    B  batch size          T  sequence length (tokens)      V  vocabulary size
    C  model width (n_embd)  nh number of heads           hs head size = C // nh
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# The four published checkpoints (OpenAI, 2019). Everything else is shared.
PUBLISHED = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M parameters
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 350M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
}


@dataclass
class GPTConfig:
    vocab_size: int = 50257  # GPT-2 BPE: 50,000 merges + 256 bytes + <|endoftext|>
    n_positions: int = 1024  # context length: rows of the learned position embedding
    n_embd: int = 768  # model width C
    n_layer: int = 12  # number of transformer blocks
    n_head: int = 12  # attention heads per block; n_embd must divide evenly
    dropout: float = 0.0  # one rate for embeddings, attention probabilities and residuals
    layer_norm_epsilon: float = 1e-5  # GPT-2's LayerNorm epsilon

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPTConfig: n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                "pick a width that is a multiple of the number of heads"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_name(cls, name: str, **overrides) -> "GPTConfig":
        """The shape of a published checkpoint, e.g. `GPTConfig.from_name("gpt2")`."""
        if name not in PUBLISHED:
            raise ValueError(f"unknown GPT-2 model {name!r}; the published ones are: {', '.join(PUBLISHED)}")
        return cls(**{**PUBLISHED[name], **overrides})

    @classmethod
    def from_hf_dict(cls, d: dict) -> "GPTConfig":
        """Read a Hugging Face GPT-2 `config.json` (extra keys are ignored; absent ones take defaults)."""
        if d.get("model_type", "gpt2") != "gpt2":
            raise ValueError(f"config.json describes model_type={d.get('model_type')!r}, not 'gpt2'")
        for key, expected in (("activation_function", "gelu_new"), ("scale_attn_weights", True),
                              ("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False)):
            if key in d and d[key] != expected:
                raise ValueError(f"config.json sets {key}={d[key]!r}; this GPT-2 implements only {key}={expected!r}")
        if d.get("n_inner") not in (None, 4 * d.get("n_embd", cls.n_embd)):
            raise ValueError(f"config.json sets n_inner={d['n_inner']}; this GPT-2 implements only the 4x MLP")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in fields}
        kwargs.setdefault("dropout", d.get("resid_pdrop", 0.0) if "dropout" not in d else d["dropout"])
        return cls(**kwargs)

    def to_hf_dict(self) -> dict:
        """A `config.json` that `transformers.GPT2LMHeadModel.from_pretrained` accepts."""
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_ctx": self.n_positions,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_inner": None,
            "activation_function": "gelu_new",
            "resid_pdrop": self.dropout,
            "embd_pdrop": self.dropout,
            "attn_pdrop": self.dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_range": 0.02,
            "bos_token_id": 50256,
            "eos_token_id": 50256,
            "tie_word_embeddings": True,
        }
