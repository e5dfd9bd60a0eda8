"""Train MUT3, a cell defined only by its equation file, on the adding problem with PyTorch.

The adding problem (Hochreiter & Schmidhuber 1997): each step sees a random number in [0, 1) and
a marker, 1 at two random steps and 0 elsewhere; the target is the sum of the two marked
numbers. Always answering the mean, 1, scores a mean squared error of 1/6 ~ 0.167; a model that
learnt the task scores far less.

    python examples/train_mut3.py [--steps 400] [--length 20]

The recurrent layer is codegen.torch.RNN: its forward and backward are cellgen's generated
kernels for the equations in examples/mut3.py; the rest is ordinary PyTorch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import codegen.torch

HERE = Path(__file__).resolve().parent


def adding_batch(batch: int, length: int, generator: torch.Generator):
    """x (T, B, 2) and the targets (B,)."""
    values = torch.rand(length, batch, generator=generator)
    marks = torch.zeros(length, batch)
    for b in range(batch):
        first, second = torch.randperm(length, generator=generator)[:2]
        marks[first, b] = marks[second, b] = 1.0
    return torch.stack([values, marks], dim=2), (values * marks).sum(dim=0)


def train(steps: int = 400, length: int = 20, hidden: int = 32, seed: int = 0) -> list[float]:
    """Adam on fresh batches; returns the loss of every step."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    rnn = codegen.torch.RNN(HERE / "mut3.py", input_size=2, hidden_size=hidden, backend="c")
    head = torch.nn.Linear(hidden, 1)
    optimizer = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-2)
    losses = []
    for _ in range(steps):
        x, target = adding_batch(64, length, generator)
        ys, _ = rnn(x)
        loss = torch.nn.functional.mse_loss(head(ys[-1]).squeeze(1), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--length", type=int, default=20)
    args = parser.parse_args()
    losses = train(args.steps, args.length)
    for step in range(0, len(losses), max(1, len(losses) // 10)):
        print(f"step {step:4d}  loss {losses[step]:.4f}")
    last = sum(losses[-20:]) / len(losses[-20:])
    print(f"mean loss of the last 20 steps: {last:.4f} (answering the mean scores 0.167)")


if __name__ == "__main__":
    main()
