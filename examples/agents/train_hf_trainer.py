"""Your own transformers `Trainer` script, run by a symopt agent: a tiny Qwen3-style causal LM built
from a config (random weights: nothing is downloaded), trained on the characters of a text file.

    symopt sweep submit my_sweep.yaml                        # executor: agents; prints SWEEP_ID
    symopt agent SWEEP_ID -- python examples/agents/train_hf_trainer.py --data corpus.txt

The sweep is one like examples/agents/sweep.yaml with `data: {seq_len: 64}`: the script trains on
windows of the trial's `data.seq_len` characters, so that the pruner's resource (tokens) counts
what it trains on. Each run reads its trial with `symopt.trial()`, trains with the trial's
optimizer stack, step sizes and schedule, and leaves reporting to `symopt.SymoptCallback`: the
training loss and step size at every log, the evaluation loss as val_loss, and an early stop
when the sweep's pruner says so.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import Qwen3Config, Qwen3ForCausalLM, Trainer, TrainingArguments

import symopt
from symopt import SymoptCallback

FALLBACK_TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
    "of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season "
    "of Light, it was the season of Darkness.\n"
) * 60

# Characters as token ids: printable ASCII (32-126) and the newline; anything else reads as '?'.
VOCAB = 96
NEWLINE = VOCAB - 1


def encode(text: str) -> torch.Tensor:
    def token(char: str) -> int:
        code = ord(char)
        if char == "\n":
            return NEWLINE
        return code - 32 if 32 <= code < 127 else ord("?") - 32

    return torch.tensor([token(c) for c in text], dtype=torch.long)


class Windows(Dataset[dict[str, torch.Tensor]]):
    """The first `count` (default: all) consecutive windows of `seq_len` tokens; the model shifts
    the labels itself."""

    def __init__(self, ids: torch.Tensor, seq_len: int, count: int | None = None) -> None:
        self.ids, self.seq_len = ids, seq_len
        self.count = min(count or len(ids), len(ids) // seq_len)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        window = self.ids[index * self.seq_len : (index + 1) * self.seq_len]
        return {"input_ids": window, "labels": window}


def tiny_model(seq_len: int) -> Qwen3ForCausalLM:
    config = Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=max(128, seq_len),
        tie_word_embeddings=False,  # the embedding and the LM head each get their own class's rule
    )
    return Qwen3ForCausalLM(config)


def trial_arguments(trial: symopt.Trial, output: str) -> TrainingArguments:
    """The Trainer's arguments for the trial: its steps, batch size, seed and evaluation interval."""
    return TrainingArguments(
        output_dir=output,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        eval_strategy="steps",
        eval_steps=int(trial.spec["eval"]["every"]),
        logging_steps=int(trial.spec["log_every"]),
        max_steps=trial.steps,
        per_device_train_batch_size=trial.batch_size,
        per_device_eval_batch_size=trial.batch_size,
        seed=trial.seed,
        disable_tqdm=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a text file (default: a built-in paragraph)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a tiny model: more threads only contend with the machine's other agents
    ids = encode(args.data.read_text(encoding="utf-8") if args.data else FALLBACK_TEXT)
    split = int(len(ids) * 0.9)

    with symopt.trial() as trial:  # succeeded at the end, pruned by the callback, failed on an error
        torch.manual_seed(trial.seed)
        seq_len = int(trial.spec["data"]["seq_len"])
        model = tiny_model(seq_len)
        optimizer = trial.build_optimizer(model)  # the trial's optimizer stack and step sizes
        evaluation = trial.spec["eval"]
        with tempfile.TemporaryDirectory() as output:  # Trainer wants one; nothing is saved to it
            training = trial_arguments(trial, output)
            trainer = Trainer(
                model,
                training,
                train_dataset=Windows(ids[:split], seq_len),
                eval_dataset=Windows(ids[split:], seq_len, int(evaluation["batches"]) * trial.batch_size),
                # The trial's own schedule (warmup, then its decay) over its steps.
                optimizers=(optimizer, trial.lr_scheduler(optimizer)),
                callbacks=[SymoptCallback(trial)],
            )
            trainer.train()


if __name__ == "__main__":
    main()
