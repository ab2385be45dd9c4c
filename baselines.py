"""
The baselines TReFT is measured against (the paper's Table 3), side by side.

Each is one way to keep a narrow finetune from spreading:

  interleaving     mix aligned chats of the retain-only domains into every batch
                   (a batch function, `interleaved`)
  KL to init       add lambda * KL(initial || current) of the next-token
                   distributions, on the batch's own answers or on retain chats
  weight anchoring add lambda * the squared distance of the weights to their
                   values before the first step (L2 to init)

A diagnostic beside them, not a baseline (findings chapter 19):

  last block held  add lambda * the relative drift of the last block's output at the
                   answer positions from the initial model's (HoldLastOutput)

The penalties are *regularizers*: objects called as reg(batch, logits, kv)
that return a scalar loss, exactly as TReFT is (treft.py). train.py adds
lambda * reg(...) of each to the SFT loss and knows nothing else about them.
"""
import torch
from torch.nn import functional as F

from treft import relative_drift


def interleaved(draw_train, draw_retain, batch_size, share):
    """A batch function whose batches are (1 - share) finetune chats and `share` retain chats."""
    n_mix = round(share * batch_size)
    return lambda: draw_train(batch_size - n_mix) + draw_retain(n_mix)


def kl_to_init(logits, init_logits, mask):
    """KL(initial || current) of the next-token distributions, mean over the masked positions.

    logits, init_logits: (B, T, vocab), of any float dtype; mask: (B, T) of 0/1. A float32
    scalar, 0 when the mask is empty, differentiable in logits."""
    logp, logq = F.log_softmax(init_logits.float(), -1), F.log_softmax(logits.float(), -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp_min(1)


class KLToInit:
    """KL to the frozen initial model, on this batch's answers, or (retain_batch given) on a
    fresh batch of retain chats, which costs one more forward of the model being trained."""

    def __init__(self, model, init_model, retain_batch=None):
        self.model, self.init_model, self.retain_batch = model, init_model, retain_batch

    def __call__(self, batch, logits, kv):
        x, mask = batch.x, batch.mask
        if self.retain_batch is not None:
            retain = self.retain_batch()
            x, mask = retain.x, retain.mask
            logits, _ = self.model(x)
        with torch.no_grad():
            init_logits, _ = self.init_model(x)
        return kl_to_init(logits, init_logits, mask)


def l2_to_init(params, init_params):
    """Squared distance of the trained parameters to their values before the first step."""
    return sum((p - p0).pow(2).sum() for p, p0 in zip(params, init_params))


class L2ToInit:
    """Weight anchoring: the squared distance of `params` to what they were when this was made."""

    def __init__(self, params):
        self.params, self.init_params = params, [p.detach().clone() for p in params]

    def __call__(self, batch, logits, kv):
        return l2_to_init(self.params, self.init_params)


class HoldLastOutput:
    """The residual stream after the last block, held at the answer positions (batch.mask) where
    the initial model had it, as TReFT's relative drift. That output is what the final LayerNorm
    and the head read to predict each answer token, and no key or value carries it: TReFT on every
    position holds every K/V and leaves it free. One more forward of the model being trained, since
    a regularizer is handed the logits and K/V only."""

    def __init__(self, model, init_model):
        self.model, self.init_model = model, init_model

    def __call__(self, batch, logits, kv):
        _, aux = self.model(batch.x, return_resid=True)
        with torch.no_grad():
            _, aux0 = self.init_model(batch.x, return_resid=True)
        out, out0 = aux["resid"][-1], aux0["resid"][-1]             # (B, T, n_embd)
        return relative_drift(out.unsqueeze(1), out0.unsqueeze(1), batch.mask)
