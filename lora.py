"""
LoRA (Hu et al. 2021), the paper's main finetuning setting: the pretrained
weight W stays frozen and only a low-rank update B A is learnt. B starts at
zero, so a freshly wrapped model computes exactly what the base did.

    python train.py --stage finetune --lora-rank 8 [--lora-on qv] [--treft]
"""
import math

import torch
import torch.nn as nn

class LoRALinear(nn.Module):
    """y = W x + b + (alpha / r) * B A x, with W and b frozen.

    rows (optional): which outputs the update may change; the others keep W's.
    """

    def __init__(self, base, rank, alpha=None, rows=None):
        super().__init__()
        self.base, self.scale = base, (alpha or 2 * rank) / rank
        for p in base.parameters():
            p.requires_grad_(False)
        self.A = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))
        rows = torch.ones(base.out_features) if rows is None else rows.float()
        self.register_buffer("rows", rows[:, None], persistent=False)

    def forward(self, x):
        return self.base(x) + (x @ self.A.T @ (self.B * self.rows).T) * self.scale

    def merged(self):
        """A plain nn.Linear with the update folded into its weight."""
        with torch.no_grad():
            self.base.weight += self.scale * ((self.B * self.rows) @ self.A)
        return self.base


# Where the adapters go. "all": every projection of attention and MLP (our default).
# "qv": only the attention's queries and values, as in the LoRA paper and the default
# of common LoRA libraries for Llama. c_attn computes q, k and v side by side, so "qv"
# adapts c_attn on its q and v rows and leaves its k rows as they were.
LORA_TARGETS = ("all", "qv")


def lora_targets(model, on="all"):
    """(module, attribute name, rows the update may change or None for all) in every block."""
    for b in model.blocks:
        if on == "qv":
            C = b.attn.c_proj.in_features
            rows = torch.ones(3 * C, dtype=torch.bool)
            rows[C:2 * C] = False                     # c_attn's outputs are q | k | v: not k
            yield b.attn, "c_attn", rows
        else:
            yield from ((b.attn, "c_attn", None), (b.attn, "c_proj", None), (b.mlp, "c_fc", None), (b.mlp, "c_proj", None))


def add_lora(model, rank, on="all"):
    """Freeze every weight of model, then wrap its projections (`on`) in trainable LoRA adapters."""
    if on not in LORA_TARGETS:
        raise ValueError(f"unknown LoRA targets {on!r}: use one of {', '.join(LORA_TARGETS)}")
    for p in model.parameters():
        p.requires_grad_(False)
    for parent, name, rows in lora_targets(model, on):
        setattr(parent, name, LoRALinear(getattr(parent, name), rank, rows=rows))
    return model


def merge_lora(model):
    """Fold every adapter into its weight: the model is a plain GPT again, saved as one."""
    for parent, name, _ in lora_targets(model):
        if isinstance(getattr(parent, name), LoRALinear):
            setattr(parent, name, getattr(parent, name).merged())
    return model


