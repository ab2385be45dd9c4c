"""
How fast the pieces are, as ratios measured side by side in one run.

A shared machine swings by 10% or more from one timing to the next, so every
comparison here alternates its two sides (A then B, then B then A, ...) over
several rounds and reports the median of the per-round ratios, with the range.

  train step   fwd + bwd + AdamW of our model.py against nanoGPT's model.py at the
               same config (4 layers, 4 heads, width 128, block 128, batch 32);
               needs a nanoGPT checkout: --nanogpt path/to/nanoGPT/model.py
  generation   128 prompts of 40 tokens, 64 new tokens each (as eval.py samples):
               the KV cache (model.generate) against recomputing the sequence per token
  TReFT step   a finetune step with TReFT on the prefix against a plain SFT step
  compile      (--compile) torch.compile's step against eager, and its compile time

    python -m lab.bench --nanogpt ../nanoGPT/model.py
    python -m lab.bench --rounds 9 --compile
"""
import argparse
import copy
import importlib.util
import statistics
import time
from types import SimpleNamespace

import torch
from torch.nn import functional as F

import config
from data.batches import Batch
from model import GPT, GPTConfig
from train import freeze, loss_of
from treft import TReFT

VOCAB, BLOCK, BATCH = GPTConfig.vocab_size, 128, 32


def seconds(fn, n):
    """Wall time of n calls of fn."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - t0


def alternated(a, b, rounds, n):
    """Per round, time(b) / time(a) over n calls each, the two taking turns to go first."""
    a(), b()                                       # warm up both
    ratios = []
    for r in range(rounds):
        if r % 2:
            tb, ta = seconds(b, n), seconds(a, n)
        else:
            ta, tb = seconds(a, n), seconds(b, n)
        ratios.append(tb / ta)
    return ratios


def show(name, ratios, meaning):
    print(f"{name:12s} median {statistics.median(ratios):6.2f}x   range {min(ratios):.2f}-{max(ratios):.2f}x   "
          f"({meaning}; rounds: {' '.join(f'{r:.2f}' for r in ratios)})")


def optimizer_step(model, loss_of):
    """A function that runs one fwd + bwd + AdamW step of model on a fixed random batch."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    x, y = torch.randint(0, VOCAB, (BATCH, BLOCK)), torch.randint(0, VOCAB, (BATCH, BLOCK))

    def step():
        loss = loss_of(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def ours_loss(model, x, y):
    logits, _ = model(x)
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


def ours():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=4, n_head=4, n_embd=128))


def bench_nanogpt(path, rounds):
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    nano = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nano)
    theirs = nano.GPT(nano.GPTConfig(block_size=BLOCK, vocab_size=VOCAB, n_layer=4, n_head=4, n_embd=128,
                                     dropout=0.0, bias=True))
    show("train step", alternated(optimizer_step(ours(), ours_loss),
                                  optimizer_step(theirs, lambda m, x, y: m(x, y)[1]), rounds, 10),
         "nanoGPT's time / ours: >= 1 means ours is as fast")


def bench_generation(rounds):
    model = ours().eval()
    prompts = torch.randint(0, VOCAB, (128, 40))          # as eval.py samples: 128 prompts a batch

    def cached():
        model.generate(prompts, 64, stop_id=-1, generator=torch.Generator().manual_seed(0))

    @torch.no_grad()
    def recomputed():
        g, seq = torch.Generator().manual_seed(0), prompts
        for _ in range(64):
            probs = F.softmax(model(seq)[0][:, -1].float(), dim=-1)
            seq = torch.cat([seq, torch.multinomial(probs, 1, generator=g)], 1)
    show("generation", alternated(cached, recomputed, rounds, 1), "recompute's time / the KV cache's")


def bench_treft(rounds):
    """An SFT step and a TReFT step as train.py runs them, on chat-shaped batches (finetune batch 16)."""
    P, T, B = 29, 60, 16
    model = ours()
    init = copy.deepcopy(model).eval()
    freeze(model, config.FINETUNE_FROZEN)
    x = torch.randint(0, VOCAB, (B, T))
    x[:, :P] = x[0, :P]                                        # one prefix shared by every chat
    seg = torch.tensor([0] * P + [1] * 10 + [2] * 2 + [3] * (T - P - 12)).expand(B, T)
    batch = Batch(x, torch.randint(0, VOCAB, (B, T)), (seg == 3).float(), seg)
    treft = TReFT(init, SimpleNamespace(prefix_ids=x[0, :P].tolist(), prefix_positions=lambda: range(P)))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95))

    def step(regularizers):
        loss, _ = loss_of(model, batch, regularizers)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    show("TReFT step", alternated(lambda: step([]), lambda: step([(config.TREFT_LAMBDA, treft)]), rounds, 20),
         "TReFT's time / SFT's")


def bench_compile(rounds):
    eager = optimizer_step(ours(), ours_loss)
    compiled_model = ours()
    compiled = optimizer_step(torch.compile(compiled_model), ours_loss)
    t0 = time.perf_counter()
    compiled()
    print(f"{'compile':12s} first compiled step took {time.perf_counter() - t0:.0f} s")
    show("compiled", alternated(compiled, eager, rounds, 10), "eager's time / compiled's")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nanogpt", metavar="MODEL_PY", help="nanoGPT's model.py, to time our training step against")
    p.add_argument("--rounds", type=int, default=7, help="alternated rounds per comparison (default: 7)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on a CPU)")
    a = p.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    if a.nanogpt:
        bench_nanogpt(a.nanogpt, a.rounds)
    else:
        print("train step   skipped: pass --nanogpt path/to/nanoGPT/model.py")
    bench_generation(a.rounds)
    bench_treft(a.rounds)
    if a.compile:
        bench_compile(a.rounds)


if __name__ == "__main__":
    main()
