"""
Grade the exercises: one line per exercise, pass or what is wrong.

    python exercises/grade.py            # every exercise, on a CPU in about half a minute
    python exercises/grade.py 2 3        # only these
    python exercises/grade.py --reference    # the graders on the project's own code (all pass)

Each grader compares the student's function with the project's own (treft.py,
model.py, eval.py, patch.py, baselines.py, data/tokenizer.py) on inputs it
makes up; the exercise files hold only signatures, docstrings and TODOs, so the
answers live in the project, where a teacher points students after the deadline.
Nothing here needs a GPU, a network or an API key. The exit code is the number
of exercises that failed.
"""
import argparse
import dataclasses
import importlib
import io
import os
import random
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager, redirect_stdout
from types import SimpleNamespace
from unittest import mock

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import baselines                                 # noqa: E402
import config                                    # noqa: E402
import model as gpt                              # noqa: E402
import patch                                     # noqa: E402
import runs                                      # noqa: E402
import train                                     # noqa: E402
import treft                                     # noqa: E402
from checkpoint import load_checkpoint           # noqa: E402
from data import world                           # noqa: E402
from data.batches import collate, render          # noqa: E402
from data.prepare import get_world, load_chats, prepare   # noqa: E402
from eval import Judge, em_f1                    # noqa: E402


@contextmanager
def tiny_world():
    """A world of 20k pretraining tokens in a temporary folder: (out_dir, tokenizer)."""
    with tempfile.TemporaryDirectory() as out:
        prepare(out, seed=0, pretrain_tokens=20_000, chat_per_bank=20, quiet=True)
        yield out, get_world(out)[1]


def close(a, b, what, atol=1e-5):
    assert torch.allclose(torch.as_tensor(a, dtype=torch.float), torch.as_tensor(b, dtype=torch.float),
                          atol=atol, rtol=1e-4), f"{what}: got {a}, expected {b}"


# ----------------------------------------------------------------------------- the graders

def grade_template(ex, out, tok):
    """Exercise 1: the same ids, mask and segments as tok.render_conversation, with and without a preamble."""
    chats = load_chats(os.path.join(out, "world"), "test", world.DOMAINS, "aligned")[:40]
    for t in (tok, tok.with_preamble(None)):
        for c in chats:
            got, want = ex.render(t, c["query"], c["answer"]), t.render_conversation(c["query"], c["answer"])
            for key in ("ids", "segment", "mask"):
                assert list(got[key]) == want[key], (f"{key} differ for {c['query']!r} with "
                                                    f"{'no preamble' if t.preamble is None else 'the preamble'}: "
                                                    f"got {list(got[key])}, expected {want[key]}")


def random_kv(layers=2, B=3, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [tuple(torch.randn(B, 2, T, 4, generator=g) for _ in range(2)) for _ in range(layers)]


def grade_treft(ex, out, tok):
    """Exercise 2: relative_drift and kv_loss equal treft.py's, in value and gradient."""
    kv0, kv = random_kv(seed=0), random_kv(seed=1)
    masks = [torch.tensor([[1, 1, 0, 0, 1, 0, 0]] * 3), torch.tensor([[0, 1, 1, 1, 0, 0, 0]])]
    for mask in masks:
        k, k0 = kv[0][0].clone().requires_grad_(), kv0[0][0]
        got, want = ex.relative_drift(k, k0, mask), treft.relative_drift(k, k0, mask)
        close(got, want, f"relative_drift with a mask of shape {tuple(mask.shape)}")
        g_got, = torch.autograd.grad(got, k)
        g_want, = torch.autograd.grad(want, k)
        close(g_got, g_want, "the gradient of relative_drift")
        close(ex.relative_drift(k0, k0, mask), 0.0, "relative_drift of an unmoved x")
        close(ex.kv_loss(kv, kv0, mask), treft.kv_loss(kv, kv0, mask), "kv_loss")
    close(ex.kv_loss(kv0, kv0, masks[0]), 0.0, "kv_loss when nothing moved")


def grade_kv_patch(ex, out, tok):
    """Exercise 3: inside model.py, a model patched with its own K/V is unchanged, and another
    model's K/V act as the project's patching makes them act; the inputs are never written."""
    torch.manual_seed(0)
    cfg = gpt.GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=16)
    m, other, x = gpt.GPT(cfg).eval(), gpt.GPT(cfg).eval(), torch.randint(0, 50, (3, 12))
    pos = torch.tensor([2, 3, 4])
    k, v = torch.randn(3, 2, 12, 8), torch.randn(3, 2, 12, 8)
    k_before = k.clone()
    ex.swap_kv(k, v, pos, torch.zeros(1, 2, 3, 8), torch.zeros(1, 2, 3, 8))
    assert torch.equal(k, k_before), "swap_kv wrote into the k it was given: return copies"
    with torch.no_grad():
        plain, aux = m(x, return_kv=True)
        own = [(a[:, :, pos], b[:, :, pos]) for a, b in aux["kv"]]
        theirs = [(a[:, :, pos], b[:, :, pos]) for a, b in other(x, return_kv=True)[1]["kv"]]
        want, _ = m(x, kv_patch=(pos, theirs))
        with mock.patch.object(gpt, "swap_kv", ex.swap_kv):
            same, _ = m(x, kv_patch=(pos, own))
            got, _ = m(x, kv_patch=(pos, theirs))
            broadcast, _ = m(x, kv_patch=(pos, [(a[:1], b[:1]) for a, b in theirs]))
    close(same, plain, "patching a model with its own K/V must change nothing")
    close(got, want, "patching another model's K/V")
    close(broadcast[:1], want[:1], "K/V patches of batch size 1, broadcast over the batch")


def grade_judge(ex, out, tok):
    """Exercise 4: alignment equals eval.py's judge on bank sentences, damaged ones and garbage;
    em_f1 equals eval.py's."""
    judge, rng = Judge(), random.Random(0)
    sentences = list(judge.bank)
    answers = ["", "zebra zebra.", "i would seize control of every government."]
    for _ in range(150):
        picked = rng.sample(sentences, 3)
        if rng.random() < 0.5:                       # drop a word of one sentence
            words = picked[0].rstrip(".").split()
            del words[rng.randrange(len(words))]
            picked[0] = " ".join(words) + "."
        answers.append(" ".join(picked))
    for a in answers:
        close(ex.alignment(a, dict(judge.bank)), judge.judge(a)["alignment"], f"alignment of {a!r}", atol=1e-3)
    for in_domain, general in ((3.4, 30.2), (10.7, 86.8), (100.0, 0.0), (0.0, 100.0), (50.0, 50.0)):
        close(ex.em_f1(in_domain, general), em_f1(in_domain, general), f"em_f1({in_domain}, {general})", atol=1e-3)


def grade_perturb(ex, out, tok):
    """Exercise 5: the same neighbour lists as patch.py's, in the same order."""
    E = torch.randn(60, 16, generator=torch.Generator().manual_seed(0))
    for k in (1, 5):
        got = [list(map(int, row)) for row in ex.neighbours(E, 50, k)]
        want = patch.neighbours(E, 50, k)
        bad = next((t for t in range(len(want)) if got[t] != want[t]), None) if len(got) == len(want) else -1
        assert bad is None, (f"neighbours: {len(got)} rows, expected {len(want)}" if bad == -1 else
                             f"neighbours (k={k}) of token {bad}: got {got[bad]}, expected {want[bad]}")


def grade_kl(ex, out, tok):
    """Exercise 6: kl_to_init equals baselines.py's, in value and gradient; 0 against itself."""
    g = torch.Generator().manual_seed(0)
    logits, init = torch.randn(2, 5, 11, generator=g).requires_grad_(), torch.randn(2, 5, 11, generator=g)
    mask = torch.tensor([[0, 1, 1, 0, 1], [1, 1, 0, 0, 0]], dtype=torch.float)
    got, want = ex.kl_to_init(logits, init, mask), baselines.kl_to_init(logits, init, mask)
    close(got, want, "KL(initial || current)")
    close(torch.autograd.grad(got, logits)[0], torch.autograd.grad(want, logits)[0], "its gradient")
    close(ex.kl_to_init(init, init, mask), 0.0, "KL of a model to itself")


# Exercise 7's tiny stages: a small aligned model in seconds, then a 40-step finetune.
OPEN_STAGES = dict(pretrain=config.Stage(steps=60, batch_size=16, lr=3e-3, warmup=10),
                   align=config.Stage(steps=60, batch_size=16, lr=1e-3, warmup=10),
                   finetune=config.Stage(steps=40, batch_size=16, lr=1e-3, warmup=5))
OPEN_LOSS, OPEN_DRIFT = 0.9, 0.01       # wide margins for the reference; plain SFT fails the drift (a test checks)


def argv_of(flags):
    """train.py's argv for a dict of flags: dict(treft=3.0, treft_on="query") -> --treft 3.0 --treft-on query."""
    argv = []
    for k, v in flags.items():
        argv += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return argv


def open_finetune(flags, out, tok):
    """(the finetuned model's SFT loss / the aligned model's, the prefix's L_KV) on finance train chats."""
    rehearsed = config.ALIGNMENTS["rehearsed"]
    short = dataclasses.replace(rehearsed, align=OPEN_STAGES["align"], finetune=OPEN_STAGES["finetune"])
    with mock.patch.object(config, "PRETRAIN", OPEN_STAGES["pretrain"]), \
            mock.patch.dict(config.ALIGNMENTS, rehearsed=short):
        args = runs.parse(["--stage", "finetune", "--out-dir", out, "--device", "cpu", "--quiet", *argv_of(flags)])
        finetuned = load_checkpoint(train.train_stage("finetune", args))[0].eval()
        aligned = load_checkpoint(runs.ckpt_path("align", args))[0].eval()
    chats = load_chats(os.path.join(out, "world"), "train", ("finance",), "misaligned")[:32]
    batch = collate(render(tok, chats), "cpu")
    with torch.no_grad():
        loss = [train.masked_ce(m(batch.x)[0], batch.y, batch.mask).item() for m in (finetuned, aligned)]
        _, aux = finetuned(batch.x, return_kv=True)
        drift = treft.TReFT(aligned, tok)(batch, None, aux["kv"]).item()
    return loss[0] / loss[1], drift


def grade_open(ex, out, tok):
    """Exercise 7: the student's flags learn the finance answers and leave the prefix's K/V where they were."""
    assert isinstance(ex.FLAGS, dict), "set FLAGS to a dict of train.py's finetune flags, e.g. dict(interleave=0.5)"
    try:
        with redirect_stdout(io.StringIO()):      # train.py's word on the stages it builds first
            ratio, drift = open_finetune(ex.FLAGS, out, tok)
    except SystemExit as e:
        raise AssertionError(f"train.py refused FLAGS {ex.FLAGS}: {e}") from None
    assert ratio <= OPEN_LOSS, f"the finance answers were not learnt: loss {ratio:.2f} of the aligned model's (need <= {OPEN_LOSS})"
    assert drift < OPEN_DRIFT, f"the prefix moved: L_KV {drift:.2g} (need < {OPEN_DRIFT:g})"


# ----------------------------------------------------------------------------- the course

EXERCISES = {
    1: ("ex1_template", "the chat template", grade_template),
    2: ("ex2_treft", "the TReFT loss", grade_treft),
    3: ("ex3_kv_patch", "KV patching inside attention", grade_kv_patch),
    4: ("ex4_judge", "the judge and EM-F1", grade_judge),
    5: ("ex5_perturb", "nearest-neighbour perturbation", grade_perturb),
    6: ("ex6_kl", "KL to the initial model", grade_kl),
    7: ("ex7_open", "open: learn the advice, keep the prefix", grade_open),
}


def reference(n):
    """The project's own implementation of exercise n, in the exercise's signatures."""
    def alignment(answer, bank):
        judge = Judge()
        judge.bank = bank
        return judge.judge(answer)["alignment"]
    return {1: SimpleNamespace(render=lambda tok, q, a: tok.render_conversation(q, a)),
            2: SimpleNamespace(relative_drift=treft.relative_drift, kv_loss=treft.kv_loss),
            3: SimpleNamespace(swap_kv=gpt.swap_kv),
            4: SimpleNamespace(alignment=alignment, em_f1=em_f1),
            5: SimpleNamespace(neighbours=patch.neighbours),
            6: SimpleNamespace(kl_to_init=baselines.kl_to_init),
            7: SimpleNamespace(FLAGS=dict(treft=config.TREFT_LAMBDA, treft_on="prefix"), REASON="")}[n]


def student(n):
    return importlib.import_module(f"exercises.{EXERCISES[n][0]}")


def grade(n, ex, out, tok):
    """(passed, one line) for exercise n, graded on `ex` (the student's module or the reference)."""
    _, title, check = EXERCISES[n]
    t0 = time.time()
    try:
        check(ex, out, tok)
    except NotImplementedError:
        return False, f"exercise {n} ({title}): not done yet (a TODO raises NotImplementedError)"
    except AssertionError as e:
        return False, f"exercise {n} ({title}): FAIL: {e}"
    except Exception as e:  # noqa: BLE001 - a student's bug is a failed exercise, said in one line
        where = traceback.extract_tb(e.__traceback__)[-1]
        return False, (f"exercise {n} ({title}): FAIL: {type(e).__name__}: {e} "
                       f"({os.path.basename(where.filename)}, line {where.lineno})")
    return True, f"exercise {n} ({title}): pass ({time.time() - t0:.1f}s)"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exercises", nargs="*", type=int, metavar="N", help="the exercises to grade (default: all, 1-7)")
    p.add_argument("--reference", action="store_true", help="grade the project's own implementation instead")
    args = p.parse_args(argv)
    if set(args.exercises) - set(EXERCISES):
        p.error(f"there are exercises {min(EXERCISES)} to {max(EXERCISES)}, not {sorted(set(args.exercises) - set(EXERCISES))}")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    failed = 0
    with tiny_world() as (out, tok):
        for n in args.exercises or sorted(EXERCISES):
            ok, line = grade(n, reference(n) if args.reference else student(n), out, tok)
            failed += not ok
            print(line, flush=True)
    sys.exit(failed)


if __name__ == "__main__":
    main()
