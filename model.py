"""
A small GPT, nanoGPT-style, that lets us look inside and intervene.

Besides the usual forward pass it can, through plain keyword arguments:
  return_kv=True     return every layer's keys and values (TReFT, patching);
  kv_patch=(pos, kv) replace the keys and values at positions `pos` in every
                     layer by given ones (the paper's KV patching);
  return_resid=True  return the residual stream entering every block;
  resid_patch=(layer, pos, x)  overwrite the residual stream entering block
                     `layer` at positions `pos` (activation patching);
  cache=[]           keep keys and values for fast generation (`generate`).
Keys and values have shape (batch, heads, time, head_dim) throughout.
"""
import json
import math
import os
import pickle
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from common import atomic_write


@dataclass
class GPTConfig:
    vocab_size: int = 2053
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128


def swap_kv(k, v, pos, k_new, v_new):
    """KV patching: copies of k, v (B, heads, T, head_dim) whose positions `pos` hold k_new,
    v_new (B or 1, heads, len(pos), head_dim), another model's keys and values there."""
    k, v = k.clone(), v.clone()
    k[:, :, pos], v[:, :, pos] = k_new.to(k.dtype), v_new.to(v.dtype)
    return k, v


def causal(T, past, device):
    """SDPA's mask for T new queries after `past` cached keys: new token i sees the past and
    new tokens 0..i. SDPA's own is_causal aligns its triangle to the top left (query i sees
    keys 0..i only), right when there is no past, wrong for a chunk after a cache."""
    if past == 0 or T == 1:          # no past, or one token that may see all of it
        return dict(is_causal=T > 1)
    return dict(attn_mask=torch.ones(T, past + T, dtype=torch.bool, device=device).tril(past))


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x, kv_patch=None, layer_cache=None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if kv_patch is not None:             # swap in another model's K/V at some positions
            k, v = swap_kv(k, v, *kv_patch)
        kv = (k, v)                          # this step's keys and values, as used
        if layer_cache is not None:          # generation: prepend the cached past
            if layer_cache:
                k, v = torch.cat([layer_cache[0], k], 2), torch.cat([layer_cache[1], v], 2)
            layer_cache[:] = [k, v]
        y = F.scaled_dot_product_attention(q, k, v, **causal(T, k.shape[2] - T, x.device))
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)), kv


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(),
                                 nn.Linear(4 * cfg.n_embd, cfg.n_embd))

    def forward(self, x, kv_patch=None, layer_cache=None):
        a, kv = self.attn(self.ln_1(x), kv_patch, layer_cache)
        x = x + a
        return x + self.mlp(self.ln_2(x)), kv


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight          # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():         # GPT-2's scaled residual init
            if name.endswith("c_proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx, *, kv_patch=None, resid_patch=None, cache=None, positions=None,
                return_kv=False, return_resid=False):
        """Logits (B, T, vocab) and a dict with 'kv' and/or 'resid' when asked for.

        kv_patch = (positions, [(k, v) for each layer]), each k, v of shape
        (B or 1, heads, len(positions), head_dim). resid_patch = (layer,
        positions, x) with x of shape (B or 1, len(positions), n_embd).
        cache: a list, empty before the prompt, reused for each next token.
        positions: the position of each token (T,), when it is not 0, 1, ... (patch.py builds
        K/V for a segment at the place it has in a longer prompt).
        """
        B, T = idx.shape
        past = cache[0][0].shape[2] if cache else 0
        if past + T > self.cfg.block_size:
            raise ValueError(f"sequence of {past + T} tokens exceeds block_size {self.cfg.block_size}")
        if cache is not None and not cache:
            cache.extend([] for _ in self.blocks)
        pos = torch.arange(past, past + T, device=idx.device) if positions is None else positions.to(idx.device)
        x = self.wte(idx) + self.wpe(pos)
        kvs, resid = [], []
        for i, block in enumerate(self.blocks):
            if resid_patch is not None and resid_patch[0] == i:
                x = x.clone()
                x[:, resid_patch[1]] = resid_patch[2].to(x.dtype)
            resid.append(x)
            patch = None if kv_patch is None else (kv_patch[0], *kv_patch[1][i])
            x, kv = block(x, patch, None if cache is None else cache[i])
            kvs.append(kv)
        logits = self.lm_head(self.ln_f(x))
        aux = {}
        if return_kv:
            aux["kv"] = kvs
        if return_resid:
            aux["resid"] = resid + [x]
        return logits, aux

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, stop_id, temperature=1.0, generator=None,
                 kv_patch=None, resid_patch=None):
        """Sample continuations of equal-length prompts idx (B, T) with a KV cache.

        Stops when every row has produced stop_id. Returns the new tokens
        (B, <= max_new_tokens); rows that stopped early are padded with stop_id.
        kv_patch and resid_patch apply to the prompt; the cache then keeps the
        K/V computed under the patch, so every new token sees it.
        """
        cache = []
        logits, _ = self(idx, kv_patch=kv_patch, resid_patch=resid_patch, cache=cache)
        out = []
        done = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
        for _ in range(min(max_new_tokens, self.cfg.block_size - idx.shape[1])):
            probs = F.softmax(logits[:, -1].float() / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            nxt = torch.where(done, torch.full_like(nxt, stop_id), nxt)
            out.append(nxt)
            done |= nxt == stop_id
            if done.all() or idx.shape[1] + len(out) >= self.cfg.block_size:
                break
            logits, _ = self(nxt[:, None], cache=cache)
        return torch.stack(out, 1)


# ---------------------------------------------------------------------------
# LoRA (Hu et al. 2021), the paper's main finetuning setting: the pretrained
# weight W stays frozen and only a low-rank update B A is learnt. B starts at
# zero, so a freshly wrapped model computes exactly what the base did.

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
            yield from ((b.attn, "c_attn", None), (b.attn, "c_proj", None), (b.mlp, "0", None), (b.mlp, "2", None))


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


# ---------------------------------------------------------------------------
# Checkpoints: weights + model shape + the run's config + tokenizer fingerprint,
# nothing else. They are read with torch.load(weights_only=True), which rebuilds
# tensors and plain values only, so a checkpoint from anyone cannot run code.

def save_checkpoint(path, model, config, tokenizer_fingerprint):
    """Write atomically: a half-written file never replaces a good one. The config is stored
    as JSON would hold it (dicts, lists, strings, numbers), so the safe loader reads it."""
    plain = json.loads(json.dumps(config))
    ckpt = dict(model=model.state_dict(), model_args=asdict(model.cfg), config=plain, tokenizer=tokenizer_fingerprint)
    atomic_write(path, lambda f: torch.save(ckpt, f), mode="wb")


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or does not fit; the message says what to run."""


def read_checkpoint(path, fix):
    """The checkpoint's dict, read safely; CheckpointError if it is not one of ours."""
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}; run `{fix}` to make it")
    try:
        with warnings.catch_warnings():      # a file that is not ours needs no advice on pickle protocols
            warnings.simplefilter("ignore", UserWarning)
            ck = torch.load(path, map_location="cpu", weights_only=True)
        if not (isinstance(ck, dict) and {"model", "model_args", "config"} <= ck.keys()):
            raise KeyError("a key of ours")
        GPTConfig(**ck["model_args"])                  # the shape it claims is a GPT's
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):      # the safe loader met a Python object to build: code it would run
            raise CheckpointError(f"checkpoint {path} holds Python objects that would run code when loaded: "
                                  f"refused, none of it ran; train your own with `{fix}`") from None
        raise CheckpointError(f"checkpoint {path} is corrupt or not ours (not tensors and plain values); "
                              f"delete it and run `{fix}`") from None
    except Exception as e:  # noqa: BLE001 - any other failure to read means the same thing
        raise CheckpointError(f"checkpoint {path} is corrupt or not ours ({type(e).__name__}); "
                              f"delete it and run `{fix}`") from None
    return ck


def load_checkpoint(path, tokenizer_fingerprint=None, fix="python train.py --stage pretrain", world_dir=None):
    """Returns (model, config). Raises CheckpointError with a one-line explanation.

    With tokenizer_fingerprint, the checkpoint must have been trained in that world
    (the one in world_dir, for the message)."""
    ck = read_checkpoint(path, fix)
    if tokenizer_fingerprint is not None and ck.get("tokenizer") != tokenizer_fingerprint:
        theirs = ck["config"].get("out_dir") if isinstance(ck["config"], dict) else None
        hint = f"pass --out-dir {theirs}, where it was trained" if theirs else "pass the --out-dir it was trained in"
        raise CheckpointError(f"checkpoint {path} was trained in another world (tokenizer {ck.get('tokenizer')}) "
                              f"than {world_dir or 'the current one'} (tokenizer {tokenizer_fingerprint}); {hint}")
    model = GPT(GPTConfig(**ck["model_args"]))
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError:
        raise CheckpointError(f"checkpoint {path} does not fit its model shape; "
                              f"delete it and run `{fix}`") from None
    return model, ck["config"]
