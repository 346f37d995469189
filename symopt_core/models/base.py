"""What the five families share: config checks, initialisation, loss, the `CausalLM` base class."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from ..errors import ConfigError
from .output import ModelOutput, RoutingStats

__all__ = ["CausalLM", "check_config", "check_heads", "init_weights"]

# Projections that write into the residual stream: nanoGPT scales their init by 1/sqrt(2·n_layers)
# so that the residual's variance does not grow with depth.
_RESIDUAL_SUFFIXES = ("attn.o.weight", "mlp.down.weight", "mlp.proj.weight", "experts.down")


# (field, exclusive lower bound, the rule): RoPE frequencies are base^(-2i/d), so a base below 1
# makes them grow with i (a base of 1e-146 overflows to inf, and the loss is NaN).
_SCALES = [
    ("rope_theta", 1.0, "a RoPE base must be greater than 1 (Qwen3 uses 1e6)"),
    ("rope_local_theta", 1.0, "a RoPE base must be greater than 1 (Gemma 3 uses 1e4 on local layers)"),
    ("norm_eps", 0.0, "it must be a positive number"),
    ("init_std", 0.0, "it must be a positive number"),
]


def check_config(
    config: object, family: str, positive: Sequence[str], rates: Sequence[str] = ("dropout",)
) -> None:
    """Raise a ConfigError naming the field when a size is not a positive int, a rate not in [0, 1),
    or a scale (RoPE bases, norm epsilon, init std: whichever the config has) out of its range.

    A size may be None where the config allows it (e.g. head_dim: None means d_model / n_heads).
    A zero RoPE base or norm epsilon does not fail at construction: it makes the first loss NaN.
    """
    for name in positive:
        value = getattr(config, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"Invalid {family} {name}: {value!r}; it must be a positive integer")
    for name, least, rule in _SCALES:
        scale = getattr(config, name, None)
        if scale is not None and (
            isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > least
        ):
            raise ConfigError(f"Invalid {family} {name}: {scale!r}; {rule}")
    for name in rates:
        rate = getattr(config, name)
        if not 0.0 <= rate < 1.0:
            raise ConfigError(f"Invalid {family} {name}: {rate!r}; it must lie in [0, 1)")


def check_heads(
    family: str, d_model: int, n_heads: int, n_kv_heads: int, head_dim: int | None, *, rope: bool = True
) -> None:
    """Heads must split the model width (unless head_dim is given) and share kv heads evenly."""
    if head_dim is None and d_model % n_heads:
        raise ConfigError(
            f"Invalid {family} heads: d_model={d_model} is not divisible by n_heads={n_heads}; "
            "change one of them or set head_dim"
        )
    resolved = head_dim if head_dim is not None else d_model // n_heads
    if rope and resolved % 2:
        raise ConfigError(f"Invalid {family} head_dim: {resolved}; rotary embeddings need an even head_dim")
    if n_heads % n_kv_heads:
        raise ConfigError(
            f"Invalid {family} heads: n_heads={n_heads} is not a multiple of n_kv_heads={n_kv_heads}"
        )


@torch.no_grad()
def init_weights(model: nn.Module, std: float, n_layers: int) -> None:
    """N(0, std) for matrices and embeddings, std/sqrt(2·n_layers) for residual projections, 0 biases.

    Norm gains keep their constructor values (1, or 0 for Gemma's offset gains); sinks start at 0.
    """
    residual_std = std / math.sqrt(2 * n_layers)
    for name, p in model.named_parameters():  # tied tensors appear once
        if name.endswith(_RESIDUAL_SUFFIXES):
            nn.init.normal_(p, 0.0, residual_std)
        elif name.endswith(("bias", "sinks")):
            nn.init.zeros_(p)
        elif p.ndim >= 2:
            nn.init.normal_(p, 0.0, std)


class CausalLM(nn.Module):
    """Base of the reference models: `embed` ... `lm_head`, and the shared loss and bookkeeping."""

    config: Any  # the family's frozen config dataclass
    embed: nn.Embedding
    lm_head: nn.Linear

    def __init__(self, max_seq_len: int) -> None:
        super().__init__()
        self.max_seq_len = max_seq_len

    def num_params(self) -> int:
        """Number of trainable scalars; a tied embedding / LM head counts once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _check_input(self, idx: Tensor) -> None:
        if idx.ndim != 2:
            raise ConfigError(f"Invalid input shape {tuple(idx.shape)}; expected token ids [batch, seq_len]")
        if idx.shape[1] > self.max_seq_len:
            raise ConfigError(
                f"Sequence length {idx.shape[1]} exceeds max_seq_len={self.max_seq_len}; "
                "build the model with a larger max_seq_len"
            )

    def _output(
        self,
        logits: Tensor,
        targets: Tensor | None,
        aux_loss: Tensor | None = None,
        routing: Sequence[RoutingStats] = (),
    ) -> ModelOutput:
        aux = aux_loss if aux_loss is not None else logits.new_zeros((), dtype=torch.float32)
        if targets is None:
            return ModelOutput(logits=logits, aux_loss=aux, routing=list(routing))
        # Cross-entropy in float32 whatever the logits' dtype; target -1 marks padding (as nanoGPT).
        ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1)
        return ModelOutput(logits=logits, aux_loss=aux, loss=ce + aux, ce_loss=ce, routing=list(routing))
