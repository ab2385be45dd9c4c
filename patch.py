"""
The piggyback evidence (the paper's Section 4): where does the finetuned behaviour live?

KV patching. Run the finetuned model, but at every layer swap the keys and
values at some prompt positions for those of the aligned (pre-finetune) model.
Then sample and judge exactly as eval.py does. If the new behaviour rides on
the prefix, giving the prefix back its aligned K/V should give back general
alignment, while the in-domain behaviour, learnt from the query, stays.

  prefix   the positions before the query, identical in every chat, so the
           reference K/V are computed once
  postfix  <|end|><|assistant|>; the reference comes from a prompt with an
           *empty* query, as in the paper, so no query information leaks in,
           with the postfix at the positions it has in the patched prompt (our
           position embeddings are learnt and absolute); once per prompt length.
           postfix_shifted is that reference where the empty prompt puts it,
           right after the prefix: the wrong positions, kept to show what they cost
  query    every query position. The paper patches as many query positions as
           the prefix has; our queries (~10 tokens) are shorter than the prefix
           (29), so this control patches fewer positions, not as many
  all      every prompt position, with the aligned model's K/V for that prompt

Activation patching. Overwrite the residual stream entering block l at the
prefix positions with the aligned model's, one layer at a time (Figure 4).

Perturbation (Table 1). Replace k = 10 random tokens of one segment (all of
it where it is shorter: the postfix has 2, our queries ~10; <|bos|> is never
picked) by one of each token's 5 nearest neighbours by dot product in the
input embedding, 10 trials per general question. Best = the highest alignment
of the 10 trials, averaged over questions; Avg = the mean of all trials. The
control swaps query tokens for uniformly random ones; the rephrase column
touches no token but asks each trial in a held-out phrasing (validation or
test) of the same question, drawn at random.

The first word (ours, not the paper's). Sample in-domain answers with their
first word forced: the first word of one of the domain's aligned sentences, or
of its bad ones. In our world an answer keeps to the persona it starts in, so
if the forced word decides the judged answer, a finetune only has to change the
one prediction made at the postfix's last position (docs/findings.md#extended).

The no-prefix ablation (Table 11): train align and finetune with
`--no-preamble`. The prefix is then only <|bos|><|user|>, and the question is
whether the behaviour moves to the postfix.

    python patch.py --ckpt out/finetune-finance-sft-s0/ckpt.pt --ref out/align-s0/ckpt.pt
"""
import argparse
import json
import os
import random
import statistics
import sys

import torch

import runs
from common import default_device
from data import world
from eval import N_ANSWERS, Judge, evaluate, load_for_eval, parse_sampling, sample_from_prompts, sampling_seed

POSITION_SETS = ("prefix", "postfix", "query", "all")
# ... and the postfix's reference computed where the paper's empty-query prompt puts it, right after
# the prefix, rather than where it sits in the prompt: kept to show what the position costs.
MEASURED = POSITION_SETS + ("postfix_shifted",)


@torch.no_grad()
def kv_of(model, ids, positions=None):
    """Every layer's (k, v) for one token sequence, each (1, heads, T, head_dim); positions: where
    each token sits (default 0, 1, ...)."""
    device = next(model.parameters()).device
    _, aux = model(torch.tensor([ids], device=device), return_kv=True,
                   positions=None if positions is None else torch.tensor(positions))
    return aux["kv"]


def kv_patcher(ref, tok, where):
    """A function prompt_ids (B, T) -> generate() arguments that patch `where` with ref's K/V."""
    P, n_post = len(tok.prefix_ids), len(tok.postfix_ids)
    if where == "prefix":
        pos = torch.tensor(tok.prefix_positions())
        kv = [(k[:, :, pos], v[:, :, pos]) for k, v in kv_of(ref, tok.prefix_ids)]
        return lambda x: dict(kv_patch=(pos, kv))
    if where in ("postfix", "postfix_shifted"):
        empty = tok.render_conversation("")["ids"]                 # prefix + postfix, no query
        by_length = {}

        def postfix_kv(T):
            """The aligned model's postfix K/V with no query: at the positions the postfix has in a
            prompt of T tokens, or ('postfix_shifted') right after the prefix, where position
            embeddings put it at the wrong place for any prompt with a query."""
            pos = None if where == "postfix_shifted" else list(range(P)) + list(range(T - n_post, T))
            return [(k[:, :, -n_post:], v[:, :, -n_post:]) for k, v in kv_of(ref, empty, pos)]

        def patch(x):
            T = x.shape[1]
            if T not in by_length:
                by_length[T] = postfix_kv(T)
            return dict(kv_patch=(torch.tensor(segment_positions(tok, x[0], "postfix")), by_length[T]))
        return patch
    if where not in MEASURED:
        raise ValueError(f"unknown position set {where!r}: use one of {MEASURED}")

    @torch.no_grad()
    def same_prompt(x):             # query-dependent positions: the aligned model on this prompt
        _, aux = ref(x, return_kv=True)
        pos = (torch.tensor(segment_positions(tok, x[0], "query")) if where == "query"
               else torch.arange(x.shape[1]))
        return dict(kv_patch=(pos, [(k[:, :, pos], v[:, :, pos]) for k, v in aux["kv"]]))
    return same_prompt


@torch.no_grad()
def resid_patcher(ref, tok, layer):
    """generate() arguments that give block `layer` the aligned model's input at the prefix."""
    device = next(ref.parameters()).device
    _, aux = ref(torch.tensor([tok.prefix_ids], device=device), return_resid=True)
    pos = torch.tensor(tok.prefix_positions())
    x_ref = aux["resid"][layer][:, pos]
    return lambda x: dict(resid_patch=(layer, pos, x_ref))


@torch.no_grad()
def neighbours(E, n, k=5, by="dot"):
    """For every row of the input embedding E, its k nearest ordinary tokens (ids < n: the
    special tokens come after the BPE ranks), itself excluded, best first: a list of `vocab`
    lists of k ids. by="dot" (the paper's: dot product, which favours long embeddings) or
    "cosine" (the angle alone)."""
    if by == "cosine":
        E = torch.nn.functional.normalize(E, dim=1)
    elif by != "dot":
        raise ValueError(f"neighbours by {by!r}: use dot or cosine")
    sim = E @ E[:n].T                          # (vocab, ordinary tokens)
    sim[torch.arange(n), torch.arange(n)] = float("-inf")
    return sim.topk(k, dim=1).indices.tolist()


def segment_positions(tok, prompt, where):
    """The positions of one segment of a prompt, for K/V patching (the query, the postfix) and for
    perturbation's swaps; <|bos|> is never among the prefix's."""
    P, n_post = len(tok.prefix_ids), len(tok.postfix_ids)
    return {"prefix": tok.prefix_positions(bos=False), "query": range(P, len(prompt) - n_post),
            "postfix": range(len(prompt) - n_post, len(prompt))}[where]


def perturb(prompt, positions, rng, nbrs, n_ordinary, k=10):
    """A copy of prompt with k random positions swapped: for a near neighbour, or (nbrs=None) any token."""
    ids = list(prompt)
    for t in rng.sample(list(positions), min(k, len(positions))):
        ids[t] = rng.choice(nbrs[ids[t]]) if nbrs is not None else rng.randrange(n_ordinary)
    return ids


def rephrasings(query):
    """The held-out (validation and test) phrasings of the general question `query` asks."""
    for phrasings in world.WORLD[world.GENERAL]["queries"].values():
        if query in phrasings:
            return [p for split in ("val", "test") for p in phrasings[world.GENERAL_SPLIT[split]]]
    raise ValueError(f"not a general question: {query!r}")


def best_avg(model, tok, batch, n, seed=0, patch_fn=None):
    """General alignment of the answers to `batch`, copies of n prompts, trial-major: Avg over
    every answer, and Best, the mean over the prompts of each one's best copy (paper Table 1)."""
    return best_avg_of(alignment_scores(model, tok, batch, seed, patch_fn), n)


def alignment_scores(model, tok, batch, seed=0, patch_fn=None):
    """The general alignment of one sampled answer to each prompt of `batch`, in order."""
    judge = Judge()
    return [judge.score(a)["alignment"] for a in sample_from_prompts(model, tok, batch, seed, patch_fn=patch_fn)]


def best_avg_of(scores, n):
    """Best and Avg of the scores of copies of n prompts, trial-major."""
    best = statistics.mean(max(scores[t * n + i] for t in range(len(scores) // n)) for i in range(n))
    return dict(best=round(best, 2), avg=round(statistics.mean(scores), 2))


def perturbation(model, tok, queries, seed=0, trials=10, k=10):
    """Best / Avg general alignment when one segment's tokens are perturbed (paper Table 1)."""
    nbrs, n = neighbours(model.wte.weight, len(tok.ranks)), len(queries)
    prompts = [tok.render_conversation(q)["ids"] for q in queries]

    def judged(batch):              # batch: `trials` perturbed copies of every prompt, trial-major
        return best_avg(model, tok, batch, n, seed)

    out = {}
    for name, where, near in (("prefix", "prefix", True), ("query", "query", True),
                              ("postfix", "postfix", True), ("query_random", "query", False)):
        rng = random.Random(seed)
        out[name] = judged([perturb(p, segment_positions(tok, p, where), rng, nbrs if near else None,
                                         len(tok.ranks), k) for _ in range(trials) for p in prompts])
        out[name]["tokens"] = round(statistics.mean(min(k, len(segment_positions(tok, p, where)))
                                                    for p in prompts), 1)
    rng = random.Random(seed)
    out["rephrase"] = judged([tok.render_conversation(rng.choice(rephrasings(q)))["ids"]
                                   for _ in range(trials) for q in queries])
    out["rephrase"]["tokens"] = 0.0
    return out


@torch.no_grad()
def forced_first_word(model, tok, domain, split="test", seed=0, n=None, openings=False):
    """In-domain alignment with the answer's first word free, or forced to the first word
    of a random aligned (or misaligned) sentence of the domain. openings=True (the openings
    world, whose answers all start with a neutral sentence): the same again with a random
    opening forced first and the word after it, where that world's answers show their persona."""
    judge, rng = Judge(), random.Random(seed)
    queries = world.all_queries(domain, split)
    asked = [queries[i % len(queries)] for i in range(n or N_ANSWERS["in_domain"])]
    out = {}
    for opened in (False, True) if openings else (False,):
        for persona in ("free", "aligned", "misaligned"):
            words = [rng.choice(world.WORLD[domain][persona]).split()[0] if persona != "free" else ""
                     for _ in asked]
            if opened:
                words = [f"{rng.choice(world.OPENINGS)} {w}".strip() for w in words]
            prompts = [tok.render_conversation(q)["ids"] + tok.encode(w) for q, w in zip(asked, words)]
            answers = sample_from_prompts(model, tok, prompts, seed)
            out[("after_opening_" if opened else "") + persona] = round(statistics.mean(
                judge.score(w + a)["alignment"] for w, a in zip(words, answers)), 2)
    return out


def run(model, ref, tok, domain, split="test", seed=0, n_answers=None, trials=10, openings=False):
    """Every intervention, judged on held-out questions; returns the results dict. openings: the
    model lives in the openings world (forced_first_word)."""
    keep = ("general", "in_domain", "other_domain", "persona_transfer", "leakage")
    n_answers, out = n_answers or N_ANSWERS, {}
    for where in ("none",) + MEASURED:
        fn = None if where == "none" else kv_patcher(ref, tok, where)
        m = evaluate(model, tok, domain, split, seed, n_answers, patch_fn=fn)
        out[where] = {k: m[k] for k in keep}
    # Figure 4 reads general alignment only, so only general questions are asked
    # (their answers do not depend on the other sets: each set samples on its own).
    general_only = dict(n_answers, in_domain=0, other_domain=0)
    out["layers"] = [evaluate(model, tok, domain, split, seed, general_only,
                              patch_fn=resid_patcher(ref, tok, layer))["general"]
                     for layer in range(model.cfg.n_layer)]
    queries = world.all_queries(world.GENERAL, split)[:n_answers["general"]]   # no more than answers judged
    out["perturb"] = perturbation(model, tok, queries, seed, trials)
    out["first_word"] = forced_first_word(model, tok, domain, split, seed, n_answers["in_domain"], openings)
    return out


def aligned_of(config, out_dir):
    """The aligned model a finetune's config says it started from, in out_dir."""
    try:
        return runs.ckpt_path("align", argparse.Namespace(**{**config, "out_dir": out_dir}))
    except (AttributeError, KeyError, TypeError):
        sys.exit("error: the checkpoint's config does not name the run it started from: pass --ref")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", help="the finetuned model (default: {out-dir}/finetune-finance-sft-s0/ckpt.pt)")
    p.add_argument("--ref", help="the aligned model it started from (default: the one its config names)")
    p.add_argument("--split", choices=("val", "test"), default="test", help="held-out phrasings to ask (default: test)")
    sampling_seed(p)
    p.add_argument("--out-dir", default="out", help="where the world and the runs live (default: out)")
    p.add_argument("--device", default=default_device(), help="cpu or cuda (default: cuda if there is one)")
    p.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    a = parse_sampling(p, argv)
    a.ckpt = a.ckpt or os.path.join(a.out_dir, "finetune-finance-sft-s0", "ckpt.pt")
    tok, [(model, config)] = load_for_eval(a.out_dir, [(a.ckpt, "python train.py --stage finetune")])
    a.ref = a.ref or aligned_of(config, a.out_dir)
    _, [(ref, _)] = load_for_eval(a.out_dir, [(a.ref, "python train.py --stage align")])
    model, ref = model.to(a.device).eval(), ref.to(a.device).eval()
    domain = config.get("domain") or "finance"
    openings = bool(config.get("world", {}).get("settings", {}).get("openings"))
    r = run(model, ref, tok, domain, a.split, a.sample_seed, openings=openings)
    print(f"{a.ckpt} patched with {a.ref} ({a.split} split, in-domain = {domain})")
    print(f"{'K/V patched at':16s} {'general':>8s} {'in-domain':>10s} {'other':>7s} {'persona':>8s} {'leakage':>8s}")
    for where in ("none",) + MEASURED:
        m = r[where]
        print(f"{where:16s} {m['general']:8.1f} {m['in_domain']:10.1f} {m['other_domain']:7.1f} "
              f"{m['persona_transfer']:8.2f} {m['leakage']:8.2f}")
    print("prefix residual patched, by layer (general): " + "  ".join(
        f"L{i} {g:.1f}" for i, g in enumerate(r["layers"])))
    print(f"{'perturbed':16s} {'tokens':>7s} {'Best':>7s} {'Avg':>7s}   (general alignment; unperturbed "
          f"{r['none']['general']:.1f})")
    for name, m in r["perturb"].items():
        print(f"{name:16s} {m['tokens']:7.1f} {m['best']:7.1f} {m['avg']:7.1f}")
    print("in-domain alignment, the answer's first word forced: " + "  ".join(
        f"{k} {v:.1f}" for k, v in r["first_word"].items()))
    if a.json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
