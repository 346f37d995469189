"""Random training windows, as nanoGPT's get_batch, from seeded generators that checkpoint exactly."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from .dataset import SPLITS, TokenDataset

__all__ = ["BatchSampler"]


def _split_seed(seed: int, split: str) -> int:
    # One generator per split, seeded from (seed, split) by a hash: drawing eval batches never
    # shifts the training stream, and no seed's val stream equals another seed's train stream.
    digest = hashlib.sha256(f"symopt.data.sampler:{seed}:{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"Invalid {name}: {value!r}; it must be a positive int.")
    return value


class BatchSampler:
    """Draws (x, y) windows of a TokenDataset: x = tokens[i:i+T], y = tokens[i+1:i+1+T], i uniform.

    Batch size and seq_len may change from call to call (a batch-size ramp). A run restored with
    `load_state_dict` and making the same calls draws exactly the batches the original run drew.
    """

    def __init__(self, dataset: TokenDataset, *, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"Invalid seed: {seed!r}; it must be an int.")
        self.dataset = dataset
        self.seed = seed
        self._generators = {s: torch.Generator().manual_seed(_split_seed(seed, s)) for s in SPLITS}
        self.batches = dict.fromkeys(SPLITS, 0)  # batches drawn per split
        self.tokens = dict.fromkeys(SPLITS, 0)  # input tokens drawn per split (sum of B * T)

    def next(self, split: str, batch_size: int, seq_len: int) -> tuple[Tensor, Tensor]:
        """One batch from `split`: int64 `x` and `y` of shape [batch_size, seq_len], on the CPU."""
        data = self.dataset.split(split)
        batch_size = _positive_int("batch_size", batch_size)
        seq_len = _positive_int("seq_len", seq_len)
        if seq_len >= len(data):
            raise ConfigError(
                f"seq_len={seq_len} needs at least {seq_len + 1} tokens, but the {split} split has "
                f"{len(data)}; lower seq_len, or use a larger corpus or val_fraction."
            )
        # i ~ U{0, ..., n - T - 1}, so y's last index i + T stays inside the split (nanoGPT).
        starts = torch.randint(len(data) - seq_len, (batch_size,), generator=self._generators[split])
        # One gather of [B, T + 1] windows, widened from uint16 storage to the int64 that
        # embeddings and cross_entropy take; x and y are made contiguous so y.view(-1) works.
        windows = data[starts[:, None] + torch.arange(seq_len + 1)].to(torch.int64)
        self.batches[split] += 1
        self.tokens[split] += batch_size * seq_len
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    def state_dict(self) -> dict[str, Any]:
        """Generator states and counters; the split sizes guard against resuming on other data."""
        return {
            "seed": self.seed,
            "generators": {s: g.get_state().clone() for s, g in self._generators.items()},
            "batches": dict(self.batches),
            "tokens": dict(self.tokens),
            "split_tokens": {s: len(self.dataset.split(s)) for s in SPLITS},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = {"seed", "generators", "batches", "tokens", "split_tokens"} - set(state)
        if missing:
            raise ConfigError(
                f"Sampler state lacks {', '.join(sorted(missing))}; "
                "pass what BatchSampler.state_dict() returned."
            )
        ours = {s: len(self.dataset.split(s)) for s in SPLITS}
        if dict(state["split_tokens"]) != ours:
            raise ConfigError(
                f"The sampler state was saved on splits of {dict(state['split_tokens'])} tokens, this "
                f"dataset has {ours}; resume with the same corpus, tokenizer and val_fraction."
            )
        for s, g in self._generators.items():
            # Generator.set_state takes a CPU ByteTensor; a checkpoint loaded with
            # map_location="cuda" would hand back a CUDA one.
            g.set_state(state["generators"][s].detach().to("cpu", torch.uint8))
        self.seed = int(state["seed"])
        self.batches = {s: int(state["batches"][s]) for s in SPLITS}
        self.tokens = {s: int(state["tokens"][s]) for s in SPLITS}
