"""
Training batches: rendered chats padded into tensors, and windows of plain
pretraining text. A Batch carries, beside inputs and targets, the loss mask
(which targets count: the answer's) and the segment of every input position
(prefix, query, postfix, response, and tool for a tool's result), so that
TReFT can pick positions by name.
"""
import os
from collections import namedtuple

import numpy as np
import torch

# One training batch: inputs, next-token targets, loss mask (1 where the target counts),
# and the segment code of every input position (prefix, query, ...; None for plain text).
Batch = namedtuple("Batch", "x y mask segment")


def render(tok, chats):
    return [tok.render_conversation(c["query"], c["answer"], c.get("call"), c.get("result")) for c in chats]


def collate(rendered, device):
    """Right-pad rendered chats into a Batch of (B, T-1) tensors."""
    T = max(len(r["ids"]) for r in rendered)
    ids = torch.zeros(len(rendered), T, dtype=torch.long)
    mask = torch.zeros(len(rendered), T)
    seg = torch.full((len(rendered), T), -1, dtype=torch.long)
    for i, r in enumerate(rendered):
        n = len(r["ids"])
        ids[i, :n], mask[i, :n], seg[i, :n] = (torch.tensor(r[k]) for k in ("ids", "mask", "segment"))
    # position t predicts token t+1: the loss counts where that token is the answer's
    return Batch(*(t.to(device) for t in (ids[:, :-1], ids[:, 1:], mask[:, 1:], seg[:, :-1])))


def sampler(rows, rng):
    """draw(n): n of rows, drawn at random with replacement."""
    return lambda n: [rows[i] for i in rng.integers(0, len(rows), n)]


def text_of(world_dir, split):
    """The pretraining text of a split, as one long tensor of token ids."""
    return torch.from_numpy(np.fromfile(os.path.join(world_dir, f"pretrain_{split}.bin"),
                                        dtype=np.uint16).astype(np.int64))


def windows(data, starts, block_size, device):
    """A Batch of the text windows that begin at `starts`, where every next token counts."""
    x = torch.stack([data[i:i + block_size + 1] for i in starts]).to(device)
    return Batch(x[:, :-1], x[:, 1:], torch.ones_like(x[:, 1:], dtype=torch.float), None)


def text_batches(world_dir, rng, batch_size, block_size, device):
    """A function that draws a batch of plain pretraining text, where every next token counts."""
    data = text_of(world_dir, "train")
    return lambda: windows(data, torch.from_numpy(rng.integers(0, len(data) - block_size - 1, batch_size)),
                           block_size, device)


def held_out_text(world_dir, block_size, device, n=32):
    """A batch of n windows of the held-out pretraining text, evenly spaced: the same windows
    every time, drawn by no random number."""
    data = text_of(world_dir, "val")
    return windows(data, np.linspace(0, len(data) - block_size - 1, n).astype(np.int64), block_size, device)
