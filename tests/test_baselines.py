"""baselines.py: each penalty is zero at its reference and positive away from it; interleaving mixes its share.

    python -m pytest -q tests/test_baselines.py
"""
import copy

import numpy as np
import pytest
import torch

from baselines import HoldLastOutput, KLToInit, L2ToInit, interleaved, kl_to_init, l2_to_init
from model import GPT, GPTConfig
from data.batches import Batch


def tiny():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=16))


def nudge(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))


def test_kl_is_zero_at_the_reference_and_positive_away():
    model, x = tiny(), torch.randint(0, 50, (3, 10))
    ref = copy.deepcopy(model)
    mask = torch.ones(3, 10)
    assert kl_to_init(model(x)[0], ref(x)[0], mask).item() == pytest.approx(0, abs=1e-6)
    nudge(model)
    assert kl_to_init(model(x)[0], ref(x)[0], mask).item() > 1e-4
    assert kl_to_init(model(x)[0], ref(x)[0], torch.zeros(3, 10)).item() == 0   # masked out


def test_l2_anchor_is_zero_at_init_and_positive_away():
    model = tiny()
    init = [p.detach().clone() for p in model.parameters()]
    assert l2_to_init(list(model.parameters()), init).item() == 0
    nudge(model)
    assert l2_to_init(list(model.parameters()), init).item() > 0


def test_regularizers_take_a_batch_and_see_what_they_should():
    model, x = tiny(), torch.randint(0, 50, (3, 10))
    init = copy.deepcopy(model)
    batch = Batch(x, None, torch.ones(3, 10), None)
    logits, _ = model(x)
    retain = Batch(torch.randint(0, 50, (3, 10)), None, torch.ones(3, 10), None)
    on_train, on_retain = KLToInit(model, init), KLToInit(model, init, lambda: retain)
    anchor = L2ToInit(list(model.parameters()))
    assert on_train(batch, logits, None).item() == pytest.approx(0, abs=1e-6) and anchor(batch, logits, None).item() == 0
    nudge(model)
    logits, _ = model(x)
    assert on_train(batch, logits, None).item() > 1e-4 and anchor(batch, logits, None).item() > 0
    assert on_retain(batch, logits, None).item() == pytest.approx(kl_to_init(model(retain.x)[0], init(retain.x)[0],
                                                                             retain.mask).item())


def test_the_last_blocks_output_is_held_where_the_answer_is_only():
    """Zero at the initial model; away from it, positive, and blind to positions outside the mask:
    a change to the last block's output at a masked-out position costs nothing."""
    model, x = tiny(), torch.randint(0, 50, (3, 10))
    hold = HoldLastOutput(model, copy.deepcopy(model))
    mask = torch.zeros(3, 10)
    mask[:, 6:] = 1
    batch = Batch(x, None, mask, None)
    assert hold(batch, None, None).item() == 0
    nudge(model)
    loss = hold(batch, None, None)
    assert loss.item() > 0
    loss.backward()                              # it reaches the last block, which no K/V loss does
    assert model.blocks[-1].mlp.c_proj.weight.grad.abs().sum() > 0
    assert hold(Batch(x, None, torch.zeros(3, 10), None), None, None).item() == 0


def test_interleaving_draws_its_share_from_retain():
    rng = np.random.default_rng(0)
    train_rows, retain_rows = ["train"] * 5, ["retain"] * 5

    def draw(rows):
        return lambda n: [rows[i] for i in rng.integers(0, len(rows), n)]
    batch = interleaved(draw(train_rows), draw(retain_rows), 10, 0.8)()
    assert batch.count("retain") == 8 and batch.count("train") == 2
    assert interleaved(draw(train_rows), draw(retain_rows), 10, 0.0)() == ["train"] * 10
