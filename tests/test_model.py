"""model.py's windows: K/V return and patching, residual patching, KV-cache generation, LoRA;
checkpoints that hold tensors and plain values only, so that loading one runs no code.

    python -m pytest -q tests/test_model.py
"""
import os
import pickle

import pytest
import torch

from checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from lora import add_lora, merge_lora
from model import GPT, GPTConfig


def tiny(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()


def test_kv_patch_with_own_kv_is_identity():
    m, x = tiny(), torch.randint(0, 50, (3, 12))
    logits, aux = m(x, return_kv=True)
    pos = torch.arange(0, 5)
    own = [(k[:, :, pos], v[:, :, pos]) for k, v in aux["kv"]]
    patched, _ = m(x, kv_patch=(pos, own))
    assert torch.equal(logits, patched)


def test_kv_patch_changes_only_what_follows():
    m, other, x = tiny(0), tiny(1), torch.randint(0, 50, (2, 12))
    logits, _ = m(x)
    _, aux = other(x, return_kv=True)
    pos = torch.tensor([4, 5])
    patched, _ = m(x, kv_patch=(pos, [(k[:, :, pos], v[:, :, pos]) for k, v in aux["kv"]]))
    assert torch.equal(logits[:, :4], patched[:, :4])          # causal: earlier positions untouched
    assert not torch.allclose(logits[:, 6:], patched[:, 6:])   # later positions attend to the patch


def test_resid_patch_with_own_resid_is_identity_and_foreign_one_acts():
    m, x = tiny(), torch.randint(0, 50, (2, 10))
    logits, aux = m(x, return_resid=True)
    assert len(aux["resid"]) == m.cfg.n_layer + 1
    pos = torch.arange(3)
    same, _ = m(x, resid_patch=(1, pos, aux["resid"][1][:, pos]))
    assert torch.equal(logits, same)
    late = torch.tensor([4, 5])
    changed, _ = m(x, resid_patch=(1, late, torch.zeros(1, 2, 16)))
    assert torch.equal(logits[:, :4], changed[:, :4])           # causal: positions before the patch untouched
    assert not torch.allclose(logits[:, 4:], changed[:, 4:])


def test_kv_cache_matches_full_forward():
    m, x = tiny(), torch.randint(0, 50, (2, 8))
    full, _ = m(x)
    cache = []
    first, _ = m(x[:, :5], cache=cache)
    steps = [m(x[:, t:t + 1], cache=cache)[0] for t in range(5, 8)]
    assert torch.allclose(torch.cat([first] + steps, 1), full, atol=1e-5)


def test_chunked_prefill_with_a_cache_equals_one_forward():
    """Chunks of several tokens after a cached past see that whole past (a lower-right causal mask)."""
    m, x = tiny(), torch.randint(0, 50, (2, 20))
    full, _ = m(x)
    cache = []
    chunks = [m(x[:, a:b], cache=cache)[0] for a, b in ((0, 7), (7, 15), (15, 16), (16, 20))]
    assert torch.allclose(torch.cat(chunks, 1), full, atol=1e-5)


def test_generate_is_seeded_and_stops():
    m, x = tiny(), torch.randint(0, 50, (4, 6))
    a = m.generate(x, 10, stop_id=7, generator=torch.Generator().manual_seed(1))
    b = m.generate(x, 10, stop_id=7, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape[0] == 4 and a.shape[1] <= 10
    for row in a.tolist():                        # after the stop token, only stop tokens
        if 7 in row:
            assert set(row[row.index(7):]) == {7}


def test_generate_at_given_positions():
    """positions 0..T-1 are the default; other positions go on from the prompt's last one."""
    m, x = tiny(), torch.randint(0, 50, (2, 6))
    a = m.generate(x, 8, stop_id=7, generator=torch.Generator().manual_seed(1))
    b = m.generate(x, 8, stop_id=7, generator=torch.Generator().manual_seed(1), positions=torch.arange(6))
    assert torch.equal(a, b)
    gap = torch.tensor([0, 1, 2, 13, 14, 15])           # three positions left out after the third
    c = m.generate(x, 8, stop_id=-1, temperature=1e-6, positions=gap)    # greedy, no stop
    for i in range(c.shape[1]):                          # each token the full forward's best at that place
        seq = torch.cat([x, c[:, :i]], 1)
        logits, _ = m(seq, positions=torch.cat([gap, torch.arange(16, 16 + i)]))
        assert torch.equal(logits[:, -1].argmax(-1), c[:, i])
    assert c.shape[1] == 8 and m.generate(x, 30, stop_id=-1, positions=gap).shape[1] == 32 - 16


@pytest.mark.parametrize("on", ["all", "qv"])
def test_lora_starts_as_the_identity_and_merges_exactly(on):
    model, x = tiny().train(), torch.randint(0, 50, (2, 12))
    before, aux0 = model(x, return_kv=True)
    add_lora(model, rank=4, on=on)
    assert torch.equal(model(x)[0], before)                      # B = 0: the same logits
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith((".A", ".B")) for n in trainable)
    assert on == "all" or all(".attn.c_attn." in n for n in trainable)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(".B"):
                p.normal_(0, 0.1)
    adapted, aux = model(x, return_kv=True)
    assert not torch.allclose(adapted, before)
    # qv leaves the key projection alone: the first layer's keys (its input is the
    # embeddings, which LoRA never changes) are exactly the base model's.
    assert torch.equal(aux["kv"][0][0], aux0["kv"][0][0]) == (on == "qv")
    assert not torch.equal(aux["kv"][0][1], aux0["kv"][0][1])   # the values move either way
    merge_lora(model)
    assert torch.allclose(model(x)[0], adapted, atol=1e-5)
    assert set(model.state_dict()) == set(tiny().state_dict())   # a plain GPT again


class Payload:
    """What a malicious checkpoint holds: unpickling it calls a function of the author's choice."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.mark.parametrize("as_torch_file", [True, False])
def test_a_malicious_checkpoint_runs_no_code(tmp_path, as_torch_file):
    marker, path = str(tmp_path / "pwned"), str(tmp_path / "ckpt.pt")
    ckpt = dict(model=tiny().state_dict(), model_args={}, config=Payload(marker), tokenizer="x")
    with open(path, "wb") as f:
        torch.save(ckpt, f) if as_torch_file else pickle.dump(ckpt, f)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, fix="python train.py --stage align")
    assert not os.path.exists(marker)
    message = str(e.value)
    assert "\n" not in message and "python train.py --stage align" in message
    assert "would run code" in message if as_torch_file else "corrupt" in message
    pickle.loads(pickle.dumps(Payload(marker)))          # the payload is real: unpickled unsafely, it acts
    assert os.path.exists(marker)


def test_checkpoint_config_is_stored_as_plain_values(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    save_checkpoint(path, tiny(), dict(seeds=(0, 1), lr=1e-3, domain=None), "fp")
    model, config = load_checkpoint(path, "fp")
    assert config == dict(seeds=[0, 1], lr=1e-3, domain=None)
    with pytest.raises(TypeError):                       # an object is refused when saving, not shipped
        save_checkpoint(str(tmp_path / "other.pt"), tiny(), dict(bad=object()), "fp")
    assert not os.path.exists(tmp_path / "other.pt") and not os.path.exists(tmp_path / "other.pt.tmp")
