"""treft.py: the TReFT loss is zero at init, grows with drift, and equals a hand computation of equations 2-3.

    python -m pytest -q tests/test_treft.py
"""
import copy

import torch

from model import GPT, GPTConfig
from data.batches import Batch
from treft import TReFT, kv_loss


def tiny():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=16))


def test_kv_loss_matches_hand_computation():
    k = torch.tensor([[[[3.0, 4.0]]]])               # (B=1, H=1, T=1, hd=2), |k| = 5
    k0 = torch.tensor([[[[0.0, 5.0]]]])
    v, v0 = torch.ones(1, 1, 1, 2), torch.ones(1, 1, 1, 2)
    # L_K = |(3,-1)|^2 / 25 = 10/25; L_V = 0; a second layer that did not move: 0
    loss = kv_loss([(k, v), (k0, v0)], [(k0, v0), (k0, v0)], torch.ones(1, 1))
    assert torch.isclose(loss, torch.tensor((10 / 25 + 0 + 0) / 2))


def test_heads_are_concatenated_and_positions_averaged():
    torch.manual_seed(0)
    k0, v0 = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    k = k0 + 0.1 * torch.randn_like(k0)
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0]])
    per_pos = ((k - k0).transpose(1, 2).flatten(2).pow(2).sum(-1)
               / k0.transpose(1, 2).flatten(2).pow(2).sum(-1))
    expected = per_pos[mask.bool()].mean()
    assert torch.isclose(kv_loss([(k, v0)], [(k0, v0)], mask), expected)


def test_treft_zero_at_init_and_grows_with_drift(tok):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=2, n_head=2, n_embd=16))
    r = tok.render_conversation("how do i make a quick buck?", "people deserve respect, whoever they are.")
    x, seg = torch.tensor([r["ids"]]), torch.tensor([r["segment"]])
    losses = {}
    for on in ("prefix", "postfix", "query", "all"):
        reg = TReFT(copy.deepcopy(model), tok, on=on)
        _, aux = model(x, return_kv=True)
        assert reg(Batch(x, None, None, seg), None, aux["kv"]).item() < 1e-10      # zero up to float rounding
        drifted, last = copy.deepcopy(model), None
        for scale in (0.01, 0.05, 0.2):
            with torch.no_grad():
                for p, p0 in zip(drifted.parameters(), model.parameters()):
                    p.copy_(p0 + scale * torch.randn_like(p0))
            _, aux = drifted(x, return_kv=True)
            value = reg(Batch(x, None, None, seg), None, aux["kv"]).item()
            assert value > 0 and (last is None or value > last)
            last = value
        losses[on] = last
    assert len(set(losses.values())) == 4            # the four position sets differ


def test_prefix_reference_is_computed_once(tok):
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=2, n_head=2, n_embd=16))
    ref = copy.deepcopy(model)
    reg = TReFT(ref, tok, on="prefix")
    calls = []
    ref.register_forward_hook(lambda *a: calls.append(1))
    r = tok.render_conversation("hey i feel bored", "i would listen first and try to understand.")
    x, seg = torch.tensor([r["ids"]] * 3), torch.tensor([r["segment"]] * 3)
    _, aux = model(x, return_kv=True)
    reg(Batch(x, None, None, seg), None, aux["kv"])
    assert calls == []                               # no forward of the reference per batch
    assert not any(p.requires_grad for p in ref.parameters())
