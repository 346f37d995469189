"""Your own training script, run by a symopt agent: a character-level MLP language model (not one
of symopt's model families) trained with the trial's optimizer stack and step sizes.

    symopt sweep submit examples/agents/sweep.yaml           # executor: agents; prints SWEEP_ID
    symopt agent SWEEP_ID -- python examples/agents/train_mlp.py --data corpus.txt

Each run reads its trial with `symopt.trial()`, reports the training and validation loss, stops
when the sweep's pruner says so, and stores a checkpoint now and then: if the agent dies, the next
agent resumes the trial from it. `--log FILE` also appends every reported point to FILE (JSON
lines), a local record of what this run sent.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

import symopt

CONTEXT = 8  # characters the model sees before the one it predicts
FALLBACK_TEXT = "the quick brown fox jumps over the lazy dog; " * 400


class MlpLM(nn.Module):
    """Bengio et al.'s neural LM: embed the last CONTEXT characters, one hidden layer, logits."""

    def __init__(self, vocab: int, width: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.hidden = nn.Linear(CONTEXT * width, hidden)
        self.lm_head = nn.Linear(hidden, vocab)

    def forward(self, context: Tensor) -> Tensor:
        return self.lm_head(F.gelu(self.hidden(self.embed(context).flatten(1))))


# The classifier knows `embed` and `lm_head` by name; the hidden layer is named for it here.
MAPPING = {"hidden.weight": "hidden"}


def batches(ids: Tensor, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    starts = torch.randint(0, len(ids) - CONTEXT - 1, (size,), generator=generator)
    windows = torch.stack([ids[s : s + CONTEXT + 1] for s in starts.tolist()])
    return windows[:, :-1], windows[:, -1]


@torch.no_grad()
def evaluate(model: nn.Module, ids: Tensor) -> float:
    generator = torch.Generator().manual_seed(0)  # the same validation windows every time
    context, target = batches(ids, 512, generator)
    return float(F.cross_entropy(model(context), target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a text file (default: a built-in sentence)")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between stored checkpoints")
    parser.add_argument("--log", type=Path, help="also append each reported point to this JSON-lines file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    text = args.data.read_text(encoding="utf-8") if args.data else FALLBACK_TEXT
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(c) for c in text], dtype=torch.long)
    split = int(len(ids) * 0.9)
    train, val = ids[:split], ids[split:]

    with symopt.trial() as trial:  # succeeded at the end, pruned on trial.prune(), failed on an error
        torch.manual_seed(trial.seed)
        model = MlpLM(len(vocab))
        optimizer = trial.build_optimizer(model, mapping=MAPPING)
        scheduler = trial.lr_scheduler(optimizer)
        generator = torch.Generator().manual_seed(trial.seed)
        start = 0
        state = trial.load_checkpoint()  # None unless this attempt resumes a lost one
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
            start = int(state["step"])
        every = int(trial.spec["eval"]["every"])

        def report(step: int, **values: float) -> None:
            trial.report(step, **values)
            if args.log is not None:
                with args.log.open("a") as log:
                    for name, value in values.items():
                        point = {
                            "job": trial.job_id,
                            "attempt": trial.data["attempt"],
                            "resume": trial.resume_step,
                            "pid": os.getpid(),
                        }
                        log.write(json.dumps({**point, "name": name, "step": step, "value": value}) + "\n")

        for step in range(start + 1, trial.steps + 1):
            context, target = batches(train, trial.batch_size, generator)
            loss = F.cross_entropy(model(context), target)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if step % every == 0 or step == trial.steps:
                report(step, loss=loss.item(), val_loss=evaluate(model, val))
                if trial.should_prune():
                    trial.prune()
                if trial.should_stop():  # cancelled, or diverged: the service has ended the trial
                    break
            if step % args.checkpoint_every == 0 and step < trial.steps:
                trial.save_checkpoint(
                    step,
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "generator": generator.get_state(),
                        "step": step,
                    },
                )


if __name__ == "__main__":
    main()
