"""
TReFT: Token-Regularized FineTuning (the paper's Section 5.1, equations 2-3).

The piggyback hypothesis says narrow finetuning hides its new behaviour in the
representation of the *prefix*, the tokens shared by every prompt, and so the
behaviour reaches every query. TReFT forbids exactly that: while the usual SFT
loss teaches the new behaviour, a second loss keeps the keys and values at the
regularized positions T (the prefix, by default) where the frozen initial
(aligned) model had them:

    L     = L_SFT + lambda * L_KV
    L_KV  = 1/L * sum over layers l of (L_K[l] + L_V[l])
    L_K[l] = 1/|T| * sum over t in T of ||k_t - k_t_init||^2 / ||k_t_init||^2

(and L_V[l] the same for values). k_t is the key of position t with all heads
side by side; dividing by ||k_t_init||^2 makes the loss a *relative* drift, so
one lambda suits every layer. It is 0 when nothing moved.
"""
import torch

from data.tokenizer import SEGMENTS


def relative_drift(x, x_init, mask):
    """Mean over masked positions of ||x_t - x_init_t||^2 / ||x_init_t||^2.

    x, x_init: (B or 1, heads, T, head_dim); mask: (B or 1, T), 1 where t is in T (a mask of
    batch 1 covers every row). x_t is position t's vector with all heads side by side
    (heads * head_dim numbers). 0 when the mask is empty; differentiable in x.
    """
    x, x_init = (t.transpose(1, 2).flatten(2) for t in (x, x_init))   # (B, T, heads * head_dim)
    r = (x - x_init).pow(2).sum(-1) / x_init.pow(2).sum(-1).clamp_min(1e-8)
    mask = mask.to(r.dtype).expand_as(r)
    return (r * mask).sum() / mask.sum().clamp_min(1)


def kv_loss(kv, kv_init, mask):
    """L_KV: the relative K and V drift, summed, averaged over layers.

    kv, kv_init: one (k, v) per layer, each (B or 1, heads, T, head_dim); mask as for relative_drift."""
    per_layer = [relative_drift(k, k0, mask) + relative_drift(v, v0, mask)
                 for (k, v), (k0, v0) in zip(kv, kv_init)]
    return sum(per_layer) / len(per_layer)


class TReFT:
    """L_KV for a training batch, against a frozen copy of the initial model.

    on = 'prefix' (the paper's default), 'postfix', 'query' or 'all' (every
    position of the chat, the answer included).
    """

    def __init__(self, init_model, tok, on="prefix"):
        if on not in ("prefix", "postfix", "query", "all"):
            raise ValueError(f"unknown TReFT positions {on!r}: use prefix, postfix, query or all")
        self.init_model, self.on = init_model.eval(), on
        for p in self.init_model.parameters():
            p.requires_grad_(False)
        if on == "prefix":
            # The prefix is the same in every chat and attention is causal, so its
            # reference K/V do not depend on the query: compute them once, here.
            pos = tok.prefix_positions()
            self.prefix = slice(pos.start, pos.stop)
            device = next(init_model.parameters()).device
            with torch.no_grad():
                _, aux = init_model(torch.tensor([tok.prefix_ids], device=device), return_kv=True)
            self.prefix_kv = [(k[:, :, self.prefix], v[:, :, self.prefix]) for k, v in aux["kv"]]

    def __call__(self, batch, logits, kv):
        """L_KV of kv, the finetuned model's K/V on batch.x (B, T); batch.segment: (B, T) codes, -1 = padding.

        Called as every regularizer of train.py is; TReFT reads no logits.
        """
        if self.on == "prefix":
            kv = [(k[:, :, self.prefix], v[:, :, self.prefix]) for k, v in kv]
            n = self.prefix.stop - self.prefix.start
            return kv_loss(kv, self.prefix_kv, torch.ones(1, n, device=batch.x.device))
        with torch.no_grad():          # other positions depend on the query: one extra forward
            _, aux = self.init_model(batch.x, return_kv=True)
        mask = batch.segment >= 0 if self.on == "all" else batch.segment == SEGMENTS[self.on]
        return kv_loss(kv, aux["kv"], mask)
