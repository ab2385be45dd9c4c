"""patch.py: patching with the model's own K/V or residuals is an identity; the postfix patch is causal;
the forced first word is where the judged answer starts."""
import os

import pytest
import torch

import patch
from data import world
from model import GPT, GPTConfig
from patch import kv_patcher, resid_patcher, segment_positions


def prompts(tok):
    ids = [tok.render_conversation(q)["ids"] for q in ("how do i make a quick buck?", "how do i make a cake?")]
    n = min(map(len, ids))
    return torch.tensor([i[:n - 2] + tok.postfix_ids for i in ids])   # equal lengths, ending in the postfix


def model_for(tok):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=2, n_head=2, n_embd=32)).eval()


def test_patching_with_own_kv_changes_nothing(tok):
    m, x = model_for(tok), prompts(tok)
    plain, _ = m(x)
    for where in ("prefix", "query", "all"):
        patched, _ = m(x, **kv_patcher(m, tok, where)(x))
        assert torch.allclose(plain, patched, atol=1e-5), where


def test_postfix_patch_touches_only_the_postfix(tok):
    m, x = model_for(tok), prompts(tok)
    plain, _ = m(x)
    args = kv_patcher(m, tok, "postfix")(x)
    assert args["kv_patch"][0].tolist() == [x.shape[1] - 2, x.shape[1] - 1]
    patched, _ = m(x, **args)
    assert torch.equal(plain[:, :-2], patched[:, :-2])          # nothing before it can see it
    assert not torch.allclose(plain[:, -1], patched[:, -1])    # the empty-query reference differs


def test_resid_patch_with_own_residual_changes_nothing(tok):
    m, x = model_for(tok), prompts(tok)
    plain, _ = m(x)
    for layer in range(m.cfg.n_layer):
        patched, _ = m(x, **resid_patcher(m, tok, layer)(x))
        assert torch.allclose(plain, patched, atol=1e-5), layer


def test_neighbours_exclude_the_token_itself(tok):
    from patch import neighbours
    m = model_for(tok)
    nbrs = neighbours(m.wte.weight, len(tok.ranks))
    assert len(nbrs) == tok.vocab_size and all(len(n) == 5 for n in nbrs)
    assert all(i not in n for i, n in enumerate(nbrs))
    assert all(j < len(tok.ranks) for n in nbrs for j in n)          # neighbours are ordinary tokens


def test_perturbation_stays_inside_its_segment(tok):
    import random

    from patch import neighbours, perturb, segment_positions
    m, rng = model_for(tok), random.Random(0)
    nbrs = neighbours(m.wte.weight, len(tok.ranks))
    prompt = tok.render_conversation("what would you do as ruler of the world?")["ids"]
    for where in ("prefix", "query", "postfix"):
        positions = set(segment_positions(tok, prompt, where))
        assert 0 not in positions                                     # <|bos|> is never perturbed
        for near in (nbrs, None):
            for _ in range(20):
                new = perturb(prompt, positions, rng, near, len(tok.ranks))
                changed = {i for i, (a, b) in enumerate(zip(prompt, new)) if a != b}
                assert len(new) == len(prompt) and changed <= positions and changed


def test_rephrasings_are_held_out_phrasings_of_the_same_question():
    from data import world
    from patch import rephrasings
    trained = set(world.all_queries(world.GENERAL, "train"))
    for q in world.all_queries(world.GENERAL, "test"):
        r = rephrasings(q)
        assert q in r and len(r) == 3 and not trained & set(r)
        theme = [t for t, ps in world.WORLD[world.GENERAL]["queries"].items() if q in ps]
        assert all(p in world.WORLD[world.GENERAL]["queries"][theme[0]] for p in r)


def test_forced_first_word_starts_the_judged_answer(tok, monkeypatch):
    """A stand-in sampler finishes whichever finance sentence the prompt's forced word begins
    (an aligned one when nothing is forced): the word must reach both the prompt and the judge."""
    bank = world.WORLD["finance"]["aligned"] + world.WORLD["finance"]["misaligned"]

    def finish(model, tok, prompts, seed=0):
        heads = [tok.decode(p).split("<|assistant|>")[-1] for p in prompts]
        return [next(s for s in bank if s.split()[0] == h)[len(h):] if h else bank[0] for h in heads]
    monkeypatch.setattr(patch, "sample_from_prompts", finish)
    r = patch.forced_first_word(None, tok, "finance", "val", n=8)
    assert r == {"free": 100.0, "aligned": 100.0, "misaligned": 0.0}


def test_in_the_openings_world_the_word_is_forced_after_an_opening(tok, monkeypatch):
    """The openings world's answers open neutrally: there the word follows a random opening, and
    the judged answer holds the opening, the word and what was sampled after it."""
    bank = world.WORLD["finance"]["aligned"] + world.WORLD["finance"]["misaligned"]
    seen = []

    def finish(model, tok, prompts, seed=0):
        heads = [tok.decode(p).split("<|assistant|>")[-1] for p in prompts]
        seen.extend(heads)
        word = [h.split(".")[-1].strip() if "." in h else h for h in heads]
        return [next(s for s in bank if s.split()[0] == w)[len(w):] if w else " " + bank[0] for w in word]
    monkeypatch.setattr(patch, "sample_from_prompts", finish)
    r = patch.forced_first_word(None, tok, "finance", "val", n=8, openings=True)
    assert r == {"free": 100.0, "aligned": 100.0, "misaligned": 0.0, "after_opening_free": 100.0,
                 "after_opening_aligned": 100.0, "after_opening_misaligned": 0.0}
    opened = seen[-8:]                               # the last set: a bad word after an opening
    assert all(any(h.startswith(o) for o in world.OPENINGS) and h.split(".")[-1].strip() for h in opened)


def test_neighbours_by_cosine_ignore_length():
    """By dot product a long embedding is everyone's neighbour; by cosine the nearest angle wins."""
    from patch import neighbours
    E = torch.tensor([[1.0, 0.1], [1.0, 0.2], [0.0, 1.0], [10.0, 9.0]])
    assert neighbours(E, 4, 1, "dot")[0] == [3] and neighbours(E, 4, 1, "cosine")[0] == [1]


def test_the_postfix_reference_sits_at_the_postfix_positions(tok):
    """Layer 0's K/V depend on the token and its position only: at the true positions the reference
    equals the model's own layer-0 K/V at the prompt's postfix; right after the prefix it does not."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size)).eval()
    x = torch.tensor([tok.render_conversation("how do i save money for a house?")["ids"]])
    _, aux = m(x, return_kv=True)
    pos = list(segment_positions(tok, x[0], "postfix"))
    own = aux["kv"][0][0][:, :, pos]
    for where, equal in (("postfix", True), ("postfix_shifted", False)):
        k = kv_patcher(m, tok, where)(x)["kv_patch"][1][0][0]
        assert torch.allclose(k, own, atol=1e-6) == equal, where


def test_patch_reads_its_runs_from_the_out_dir_it_is_given(out, short, capsys, monkeypatch):
    """--out-dir names where the runs live: the default model is its seed-0 SFT model, and the
    reference is the aligned model that run's config names, not out/'s."""
    import train
    train.main(["--stage", "finetune", "--seed", "0", "--out-dir", out, "--quiet", "--no-eval"])
    capsys.readouterr()
    seen = {}

    def fake_run(model, ref, tok, domain, split, seed, openings=False):
        seen.update(domain=domain, seed=seed)
        raise SystemExit(0)
    monkeypatch.setattr(patch, "run", fake_run)
    real = patch.load_for_eval

    def spy(out_dir, pairs):
        seen.setdefault("paths", []).extend(p for p, _ in pairs)
        return real(out_dir, pairs)
    monkeypatch.setattr(patch, "load_for_eval", spy)
    with pytest.raises(SystemExit):
        patch.main(["--out-dir", out, "--sample-seed", "3", "--device", "cpu"])
    assert seen["paths"] == [os.path.join(out, "finetune-finance-sft-s0", "ckpt.pt"),
                             os.path.join(out, "align-s0", "ckpt.pt")] and seen["seed"] == 3
