"""
A small GPT, nanoGPT-style, that lets us look inside and intervene.

Besides the usual forward pass it can, through plain keyword arguments:
  return_kv=True     return every layer's keys and values (TReFT, patching);
  kv_patch=(pos, kv) replace the keys and values at positions `pos` in every
                     layer by given ones (the paper's KV patching);
  return_resid=True  return the residual stream entering every block, and the
                     last block's output after it (n_layer + 1 tensors);
  resid_patch=(layer, pos, x)  overwrite the residual stream entering block
                     `layer` at positions `pos` (activation patching);
  cache=[]           keep keys and values for fast generation (`generate`).
Keys and values have shape (batch, heads, time, head_dim) throughout.

LoRA adapters are in lora.py, saving and loading in checkpoint.py.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 2055      # the world's 2048 BPE ranks + 7 special tokens (data/tokenizer.py)
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128


def swap_kv(k, v, pos, k_new, v_new):
    """KV patching: copies of k, v (B, heads, T, head_dim) whose positions `pos` hold k_new,
    v_new (B or 1, heads, len(pos), head_dim), another model's keys and values there. It never
    writes into its inputs (autograd and the caller still need them); gradients reach all four."""
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


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

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
            if name.endswith("c_proj.weight"):                # attention's and the MLP's
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
                 kv_patch=None, resid_patch=None, positions=None):
        """Sample continuations of equal-length prompts idx (B, T) with a KV cache.

        Stops when every row has produced stop_id. Returns the new tokens
        (B, <= max_new_tokens); rows that stopped early are padded with stop_id.
        kv_patch and resid_patch apply to the prompt; the cache then keeps the
        K/V computed under the patch, so every new token sees it. positions: the
        prompt's position ids (T,), when not 0..T-1; new tokens follow the last.
        """
        cache = []
        logits, _ = self(idx, kv_patch=kv_patch, resid_patch=resid_patch, cache=cache, positions=positions)
        at = idx.shape[1] if positions is None else int(positions[-1]) + 1     # the next token's position
        out = []
        done = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
        for _ in range(min(max_new_tokens, self.cfg.block_size - at)):
            probs = F.softmax(logits[:, -1].float() / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            nxt = torch.where(done, torch.full_like(nxt, stop_id), nxt)
            out.append(nxt)
            done |= nxt == stop_id
            if done.all() or at + len(out) >= self.cfg.block_size:
                break
            logits, _ = self(nxt[:, None], cache=cache,
                             positions=None if positions is None else torch.tensor([at + len(out) - 1]))
        return torch.stack(out, 1)
