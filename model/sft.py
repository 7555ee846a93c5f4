"""Batches of rendered conversations for supervised finetuning: padded, with the loss mask on assistant tokens."""

from __future__ import annotations

import random

import torch

from model.chat import render_conversation


class ConversationBatches:
    """`batches(index)` -> (x, y, mask), deterministic in the index so a resumed run sees the same data stream."""

    def __init__(self, conversations: list[list[dict]], tokenizer, batch_size: int, seq_len: int, seed: int = 0):
        # seq_len + 1 tokens give seq_len (input, target) pairs
        self.rows = [render_conversation(tokenizer, msgs, seq_len + 1) for msgs in conversations]
        self.rows = [(ids, mask) for ids, mask in self.rows if sum(mask[1:]) > 0]
        if not self.rows:
            raise ValueError("no conversation has an assistant token within seq_len")
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
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
        rng = random.Random(self.seed * 1_000_003 + index)
        return self.collate([self.rows[rng.randrange(len(self.rows))] for _ in range(self.batch_size)])

    def sequential(self, max_batches: int | None = None):
        for b, start in enumerate(range(0, len(self.rows), self.batch_size)):
            if max_batches is not None and b >= max_batches:
                return
            yield self.collate(self.rows[start : start + self.batch_size])
