"""Building blocks shared by the reference families: norms, RoPE, attention, dense MLPs.

Shapes: x is [B, T, d]; attention works on [B, H, T, hd]. Parameter names say their role
(`attn.q`, `mlp.gate`, ...) because `symopt_core.params.classify` reads them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

__all__ = [
    "Attention",
    "GatedMLP",
    "GeluMLP",
    "RMSNorm",
    "apply_rope",
    "causal_window_mask",
    "rope_tables",
    "sink_attention",
]

Rope = tuple[Tensor, Tensor]


class RMSNorm(nn.Module):
    """y = x / rms(x) · g, with g = weight, or g = 1 + weight when `zero_centered` (Gemma)."""

    def __init__(self, dim: int, eps: float = 1e-6, *, zero_centered: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.zero_centered = zero_centered
        # Gemma stores the gain as an offset from 1, so weight decay pulls it towards 1, not 0.
        self.weight = nn.Parameter(torch.zeros(dim) if zero_centered else torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        gain = 1.0 + self.weight.float() if self.zero_centered else self.weight.float()
        # Normalise in float32 whatever the activation dtype: bf16 sums of squares lose digits.
        return F.rms_norm(x.float(), (x.shape[-1],), gain, self.eps).type_as(x)


def rope_tables(seq_len: int, head_dim: int, theta: float, device: torch.device) -> Rope:
    """cos, sin [T, hd/2] for rotary embeddings: angle(t, i) = t · θ^(-2i/hd)."""
    inv_freq = theta ** -(torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the pairs (x_i, x_{i+hd/2}) of x [B, H, T, hd] (the "half-split" convention of Llama/Qwen)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def causal_window_mask(seq_len: int, window: int | None, device: torch.device) -> Tensor | None:
    """Boolean [T, T] mask (True = attend) letting query t see keys t-window < s <= t.

    None when the window covers the whole sequence: the caller then uses the plain causal path.
    """
    if window is None or window >= seq_len:
        return None
    pos = torch.arange(seq_len, device=device)
    lag = pos[:, None] - pos[None, :]
    return (lag >= 0) & (lag < window)


class Attention(nn.Module):
    """Causal self-attention: GQA, optional per-head QK-norm, RoPE, sliding window, attention sinks.

    With sinks, each head h has a learned logit s_h that joins the softmax denominator only:
    p_ts = exp(a_ts) / (exp(s_h) + Σ_u exp(a_tu)), so a head can attend to "nothing".
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        *,
        bias: bool = False,
        qk_norm: bool = False,
        norm_eps: float = 1e-6,
        zero_centered_norm: bool = False,
        sinks: bool = False,
        window: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.window = window  # None: full causal attention; w: a key at most w-1 tokens back
        self.dropout = dropout
        self.q = nn.Linear(d_model, n_heads * head_dim, bias=bias)
        self.k = nn.Linear(d_model, n_kv_heads * head_dim, bias=bias)
        self.v = nn.Linear(d_model, n_kv_heads * head_dim, bias=bias)
        self.o = nn.Linear(n_heads * head_dim, d_model, bias=bias)
        self.q_norm = RMSNorm(head_dim, norm_eps, zero_centered=zero_centered_norm) if qk_norm else None
        self.k_norm = RMSNorm(head_dim, norm_eps, zero_centered=zero_centered_norm) if qk_norm else None
        self.sinks = nn.Parameter(torch.zeros(n_heads)) if sinks else None
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, rope: Rope | None = None, mask: Tensor | None = None) -> Tensor:
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.v(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)  # per head, over head_dim (Qwen3, Gemma 3)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        p = self.dropout if self.training else 0.0
        if self.sinks is not None:
            y = sink_attention(q, k, v, self.sinks, mask, dropout_p=p)
        else:
            # GQA: query head h reads kv head h // (H / H_kv), as repeat_interleave would give.
            gqa = self.n_kv_heads != self.n_heads
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=p, is_causal=mask is None, enable_gqa=gqa
            )
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.resid_dropout(self.o(y))


def sink_attention(
    q: Tensor, k: Tensor, v: Tensor, sinks: Tensor, mask: Tensor | None, *, dropout_p: float = 0.0
) -> Tensor:
    """Causal attention whose softmax denominator also holds exp(sinks[h]) (gpt-oss).

    q [B, H, T, hd], k and v [B, H_kv, T, hd], sinks [H], mask [T, T] boolean (None: causal).
    SDPA has no extra denominator term, so the softmax is written out here.
    """
    B, H, T, hd = q.shape
    group = H // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    if mask is None:
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    scores = ((q @ k.mT) * hd**-0.5).float().masked_fill(~mask, float("-inf"))
    sink = sinks.float().view(1, H, 1, 1).expand(B, H, T, 1)
    # Softmax over [keys, sink], then drop the sink column: its mass is attention paid to nothing.
    probs = torch.cat([scores, sink], dim=-1).softmax(dim=-1)[..., :-1].type_as(q)
    return F.dropout(probs, dropout_p) @ v


class GatedMLP(nn.Module):
    """down(act(gate x) ⊙ up x): SwiGLU (act = SiLU; Qwen3, OLMoE) or GeGLU (act = tanh-GELU; Gemma 3)."""

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        *,
        activation: Literal["silu", "gelu_tanh"] = "silu",
        bias: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.gate = nn.Linear(d_model, d_ff, bias=bias)
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        g = self.gate(x)
        g = F.silu(g) if self.activation == "silu" else F.gelu(g, approximate="tanh")
        return self.dropout(self.down(g * self.up(x)))


class GeluMLP(nn.Module):
    """proj(GELU(fc x)), the GPT-2 MLP (exact erf GELU, as nanoGPT)."""

    def __init__(self, d_model: int, d_ff: int, *, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, d_ff, bias=bias)
        self.proj = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))
