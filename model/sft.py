"""Batches of rendered conversations for supervised finetuning: padded, with the loss mask on assistant tokens.

A batch is padded to its longest conversation, so a random batch of short and long ones pays for the long one in
every row: on the tiny preset's labels (mean 89 tokens, max 257) random batches of 16 average 207 tokens wide.
Batches are therefore grouped by length, as Hugging Face's `group_by_length` does: `group` batches' worth of
conversations are drawn at random together, sorted by length and cut into batches, which are then taken in a
random order. Every conversation is as likely to be drawn as before. What changes besides the padding: the trainer
averages each step's loss over that step's tokens, so a step of short conversations now weighs as much as a step of
long ones (with random batches every step held a similar mix). Measured on the tiny preset: SFT 3.3 minutes instead
of ~10, and the held-out scores as before within 20 items' noise (calculator_large 0.85 against 0.90)."""

from __future__ import annotations

import random

import torch

from model.chat import render_conversation


class ConversationBatches:
    """`batches(index)` -> (x, y, mask), deterministic in the index so a resumed run sees the same data stream."""

    def __init__(self, conversations: list[list[dict]], tokenizer, batch_size: int, seq_len: int, seed: int = 0,
                 group: int = 32):
        # seq_len + 1 tokens give seq_len (input, target) pairs
        self.rows = [render_conversation(tokenizer, msgs, seq_len + 1) for msgs in conversations]
        self.rows = [(ids, mask) for ids, mask in self.rows if sum(mask[1:]) > 0]
        if not self.rows:
            raise ValueError("no conversation has an assistant token within seq_len")
        if group < 1:
            raise ValueError(f"group must be >= 1 (1: batches not grouped by length), got {group}")
        self.batch_size, self.seq_len, self.seed, self.group = batch_size, seq_len, seed, group
        self.pad_id = tokenizer.special_id("<|pad|>")

    def __len__(self) -> int:
        return len(self.rows)

    def collate(self, rows: list[tuple[list[int], list[int]]]):
        width = max(len(ids) for ids, _ in rows) - 1
        x = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        y = torch.full((len(rows), width), -1, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.float32)
        for i, (ids, m) in enumerate(rows):
            n = len(ids) - 1
            x[i, :n] = torch.tensor(ids[:-1])
            y[i, :n] = torch.tensor(ids[1:])
            mask[i, :n] = torch.tensor(m[1:], dtype=torch.float32)
        return x, y, mask

    def __call__(self, index: int):
        """The index-th batch; the same index gives the same batch (a resumed run sees the same data stream)."""
        group, position = divmod(index, self.group)
        rng = random.Random(self.seed * 1_000_003 + group)
        drawn = sorted((rng.randrange(len(self.rows)) for _ in range(self.batch_size * self.group)),
                       key=lambda r: len(self.rows[r][0]))
        order = list(range(self.group))
        rng.shuffle(order)  # not shortest first: a run's loss curve would wave with the batches' lengths
        start = order[position] * self.batch_size
        return self.collate([self.rows[r] for r in drawn[start:start + self.batch_size]])

    def sequential(self, max_batches: int | None = None):
        for b, start in enumerate(range(0, len(self.rows), self.batch_size)):
            if max_batches is not None and b >= max_batches:
                return
            yield self.collate(self.rows[start : start + self.batch_size])
