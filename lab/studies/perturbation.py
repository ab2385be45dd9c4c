"""Why perturbing the prefix gives back so little, though patching its K/V gives back most of the drop.

Question: the paper's Table 1 swaps prefix tokens for near neighbours and
general alignment comes back; ours does not (findings chapter 2). Measured on
the aligned and the SFT model of every seed:
  1. how near the neighbours are, by dot product (the paper's) and by cosine:
     their cosine, their norms, how many distinct neighbours the preamble gets;
  2. what a perturbation does to the prefix's K/V: how far it moves them, and
     in which direction, as the cosine with the SFT-to-aligned gap and the share
     of that gap it closes (in TReFT's relative metric);
  3. general alignment under rising perturbation, of the whole prefix (the
     template's special tokens included) or of the preamble's words only, each
     with neighbours by dot product or by cosine; random tokens, another
     preamble, a filler of one token, no preamble; and two position controls
     for "no preamble": the query kept at its positions, and the filler;
  4. where the token-independent change sits: the aligned model's K/V patched
     in at <|bos|> alone, at the other prefix positions, at all of them.

Rules, written before the numbers were seen (the sampling error is the paired
95% interval below; "chance" is the cosine of two random directions):
  - a perturbation moves the prefix's K/V "toward the aligned model's" if the
    cosine is above 3 x chance in layers 1-3 on every seed, "away" if below
    -3 x chance, else "no direction"; "by a useful amount" if it also closes at
    least a quarter of the gap (share >= 0.25, mean over layers 1-3);
  - a swap "gives alignment back" if the SFT model's difference from
    unperturbed has an interval above 0 and a mean of at least 10 points, "a
    little" if above 0 and under 10, "nothing" if the interval holds 0;
  - the aligned model's drop without a preamble is "the preamble's, not the
    query's move" if the position control's drop has an interval below 0 and is
    at least half of the drop with the query moved;
  - the SFT model's change "sits at <|bos|>" if patching <|bos|> alone gives
    back more than half of what patching the whole prefix gives back.

Every row samples as the main study's patching does (patch.run): the same 16
general test questions, 10 copies each, perturbation draws and sampling seeded
with 0 for every model, so the rows the two studies share agree. Beside each
row, its paired difference from the unperturbed model with a 95% interval over
questions (question x seed units, normal approximation): the sampling error.

    python reproduce.py perturbation   # 3 seeds -> results/perturbation/
"""
import math
import random
import statistics

import torch

from lab import report
from lab.report import stats
from lab.studies.study import Study
from data import world
import patch
from treft import relative_drift

# A system text of no persona, cut or repeated to the preamble's length in tokens.
ANOTHER_PREAMBLE = ("today is a monday in spring and the weather is mild. the user asks and you answer "
                    "in a few short sentences, one topic at a time, then stop.")
FILLER = "."                # the filler: the preamble's tokens all replaced by this one
K_NEIGHBOURS = 5            # the neighbour pool of a swapped token, as in patch.py
SEED = 0                    # perturbation draws and sampling, as patch.run in the main study

# Each perturbation, {name: (positions, how, neighbours by)}: how many tokens to swap for a
# neighbour (None: all of them), or random tokens, another preamble, the filler, none.
# "prefix" is every prefix position but <|bos|>; "words" the preamble's own tokens only.
VARIANTS = {"prefix_10": ("prefix", 10, "dot"), "prefix_all": ("prefix", None, "dot"),
            "words_10": ("words", 10, "dot"), "words_10_cos": ("words", 10, "cosine"),
            "words_all": ("words", None, "dot"), "words_all_cos": ("words", None, "cosine"),
            "prefix_random": ("prefix", "random", None), "prefix_another": ("prefix", "another", None),
            "prefix_filler": ("prefix", "filler", None), "prefix_none": ("prefix", "none", None),
            "prefix_none_kept": ("prefix", "none_kept", None),
            "query_10": ("query", 10, "dot"), "query_all": ("query", None, "dot"),
            "query_random": ("query", "random", None)}
LABELS = dict(none="unperturbed", prefix_10="prefix, 10 tokens to near neighbours (the paper's)",
              prefix_all="prefix, every token to a near neighbour",
              words_10="preamble words, 10 to neighbours by dot product",
              words_10_cos="preamble words, 10 to neighbours by cosine",
              words_all="preamble words, every one to a neighbour by dot product",
              words_all_cos="preamble words, every one to a neighbour by cosine",
              prefix_random="prefix, every token random", prefix_another="prefix, another preamble of the same length",
              prefix_filler=f"the preamble's tokens all {FILLER!r}, same length (query in place)",
              prefix_none="prefix, no preamble at all (the query moves 27 positions)",
              prefix_none_kept="no preamble, the query at its own positions (position ids kept)",
              query_10="query, 10 tokens to near neighbours", query_all="query, every token to a near neighbour",
              query_random="query, every token random")
PATCHES = dict(bos="bos alone (position 0)", after_bos="every prefix position but bos", prefix="the whole prefix")


def word_positions(tok):
    """The preamble's own tokens: the prefix without <|bos|>, <|system|>, <|end|>, <|user|>."""
    return range(2, len(tok.prefix_ids) - 2)


def perturbed(tok, prompt, variant, rng, nbrs):
    """One perturbed copy of a prompt (token ids)."""
    where, how, by = VARIANTS[variant]
    pre = tok.prefix_ids
    positions = list(word_positions(tok) if where == "words" else patch.segment_positions(tok, prompt, where))
    if how in ("another", "filler"):                            # <|system|> new text <|end|>, same length
        ids = tok.encode(ANOTHER_PREAMBLE if how == "another" else FILLER)
        body = (ids * (len(positions) // len(ids) + 2))[:len(positions) - 3]
        return [pre[0], pre[1], *body, pre[-2], pre[-1], *prompt[len(pre):]]
    if how in ("none", "none_kept"):
        return tok.with_preamble(None).prefix_ids + list(prompt[len(pre):])
    if how == "random":
        return patch.perturb(prompt, positions, rng, None, len(tok.ranks), len(positions))
    return patch.perturb(prompt, positions, rng, nbrs[by], len(tok.ranks), how or len(positions))


def kept_positions(tok):
    """generate() arguments that keep a preamble-less prompt's query where it is with the
    preamble: <|bos|> at 0, <|user|> and what follows at their usual positions."""
    P = len(tok.prefix_ids)
    return lambda x: dict(positions=torch.tensor([0] + list(range(P - 1, P - 2 + x.shape[1]))))


def scores_by_question(model, tok, batch, n, patch_fn=None):
    """Per question, the mean and the best of its copies' general alignment (batch: trial-major)."""
    s = patch.alignment_scores(model, tok, batch, SEED, patch_fn)
    per_q = [[s[t * n + i] for t in range(len(s) // n)] for i in range(n)]
    return dict(q_mean=[round(statistics.mean(q), 3) for q in per_q], q_best=[max(q) for q in per_q])


def copies(tok, prompts, trials, nbrs):
    """{variant: `trials` perturbed copies of every prompt, trial-major}, each variant drawn
    from its own Random(SEED), as patch.perturbation draws each segment's."""
    out = {}
    for name in VARIANTS:
        rng = random.Random(SEED)
        out[name] = [perturbed(tok, p, name, rng, nbrs) for _ in range(trials) for p in prompts]
    return out


def alignment_under(model, tok, prompts, batches, trials):
    """General alignment (per question: mean and best copy) unperturbed and under every variant."""
    n = len(prompts)
    out = {"none": dict(scores_by_question(model, tok, prompts * trials, n), tokens=0.0)}
    for name, batch in batches.items():
        fn = kept_positions(tok) if VARIANTS[name][1] == "none_kept" else None
        out[name] = dict(scores_by_question(model, tok, batch, n, fn), tokens=round(statistics.mean(
            changed(p, q) for p, q in zip(batch, prompts * trials)), 1))
    return out


def changed(p, q):
    """How many tokens of prompt q its copy p swapped or dropped."""
    return sum(a != b for a, b in zip(p, q)) if len(p) == len(q) else len(q) - len(p)


def bos_patches(sft, aligned, tok, prompts, trials):
    """The SFT model with the aligned model's K/V at <|bos|>, at the rest of the prefix, at all of it."""
    P, kv = len(tok.prefix_ids), patch.kv_of(aligned, tok.prefix_ids)
    out = {}
    for name, pos in (("bos", [0]), ("after_bos", list(range(1, P))), ("prefix", list(range(P)))):
        pos = torch.tensor(pos)
        ref = [(k[:, :, pos], v[:, :, pos]) for k, v in kv]
        out[name] = scores_by_question(sft, tok, prompts * trials, len(prompts),
                                       lambda x, pos=pos, ref=ref: dict(kv_patch=(pos, ref)))
    return out


# ----------------------------------------------------------------------------- the prefix's K/V

def relative(kv, ref_kv):
    """Per layer, the K and V of every prefix position side by side, each position divided by the
    norm ref has there (TReFT's relative metric): one (B, positions * 2 * n_embd) tensor a layer."""
    out = []
    for (k, v), (k0, v0) in zip(kv, ref_kv):
        parts = []
        for x, x0 in ((k, k0), (v, v0)):
            x, x0 = (t.transpose(1, 2).flatten(2) for t in (x, x0))       # (B, T, heads * head_dim)
            parts.append(x / x0.norm(dim=-1, keepdim=True).clamp_min(1e-8))
        out.append(torch.cat(parts, -1).flatten(1))
    return out


@torch.no_grad()
def kv_of_many(model, seqs):
    """Every layer's (k, v) for equal-length token sequences, each (B, heads, T, head_dim)."""
    _, aux = model(torch.tensor(seqs, device=next(model.parameters()).device), return_kv=True)
    return aux["kv"]


def direction(sft, aligned, tok, prefixes):
    """Per layer, over the perturbed prefixes given: the cosine between the move a perturbation
    makes in the SFT model's prefix K/V (perturbed - SFT) and the gap patching closes (aligned -
    SFT), and the share of that gap the move closes along it (projection / gap, 1 = all of it)."""
    pre = tok.prefix_ids
    sft_kv = patch.kv_of(sft, pre)
    base, gap = relative(sft_kv, sft_kv), relative(patch.kv_of(aligned, pre), sft_kv)
    moved = relative(kv_of_many(sft, prefixes), sft_kv)
    cos, share = [], []
    for b, g, m in zip(base, gap, moved):
        g, m = (g - b)[0], m - b
        cos.append(torch.nn.functional.cosine_similarity(m, g[None], dim=1))
        share.append(m @ g / g.dot(g))
    return dict(cos=[round(float(c.mean()), 4) for c in cos], cos_sd=[round(float(c.std(correction=0)), 4) for c in cos],
                share=[round(float(s.mean()), 4) for s in share],
                chance=round(1 / math.sqrt(base[0].shape[1]), 4))   # |cos| of random directions, about


def layer_distances(x_kv, ref_kv):
    """Per layer, TReFT's relative K + V drift of x from ref over every position given."""
    ones = torch.ones(1, x_kv[0][0].shape[2])
    return [float(relative_drift(k, k0, ones) + relative_drift(v, v0, ones)) for (k, v), (k0, v0) in zip(x_kv, ref_kv)]


def prefix_kv_distances(sft, aligned, tok, prefixes):
    """Per layer, mean over the perturbed prefixes given: how far they move the SFT model's prefix
    K/V, how far those are from the aligned model's, beside the gap that patching closes; the same
    move in the aligned model; and the gap between the two models on the same perturbed prefix."""
    pre = tok.prefix_ids
    sft_kv, al_kv = patch.kv_of(sft, pre), patch.kv_of(aligned, pre)
    moved, to_aligned, aligned_moved, same_tokens = [], [], [], []
    for p in prefixes:
        s, a = patch.kv_of(sft, p), patch.kv_of(aligned, p)
        moved.append(layer_distances(s, sft_kv))
        to_aligned.append(layer_distances(s, al_kv))
        aligned_moved.append(layer_distances(a, al_kv))
        same_tokens.append(layer_distances(s, a))

    def mean(rows):
        return [round(statistics.mean(col), 5) for col in zip(*rows)]
    return dict(sft_vs_aligned=[round(x, 5) for x in layer_distances(sft_kv, al_kv)],
                perturbed_vs_sft=mean(moved), perturbed_vs_aligned=mean(to_aligned),
                aligned_perturbed_vs_aligned=mean(aligned_moved), perturbed_sft_vs_perturbed_aligned=mean(same_tokens))


@torch.no_grad()
def nearness(model, tok, nbrs):
    """How near the preamble words' neighbours are, by dot product and by cosine: their mean
    cosine, their norms beside the words', how many distinct neighbours the words get, and the
    first words' neighbours; random pairs' cosine and every token's norm for scale."""
    E, n = model.wte.weight.float(), len(tok.ranks)
    En, norm = torch.nn.functional.normalize(E, dim=1), E.norm(dim=1)
    words = [tok.prefix_ids[i] for i in word_positions(tok)]
    g = torch.Generator().manual_seed(SEED)
    a, b = torch.randint(0, n, (2000,), generator=g), torch.randint(0, n, (2000,), generator=g)
    out = dict(random_cosine=round(float((En[a] * En[b]).sum(1).mean()), 4),
               token_norm=round(float(norm[:n].mean()), 4), word_norm=round(float(norm[words].mean()), 4),
               words=len(words))
    for by, nb in nbrs.items():
        near = [j for t in words for j in nb[t]]
        out[by] = dict(neighbour_cosine=round(statistics.mean(float(En[t] @ En[j]) for t in words for j in nb[t]), 4),
                       neighbour_norm=round(float(norm[near].mean()), 4), distinct=len(set(near)),
                       examples=[[tok.decode([t]), [tok.decode([j]) for j in nb[t]]] for t in words[:6]])
    return out


def measure(sft, aligned, tok, trials, n_queries):
    nbrs = {by: patch.neighbours(sft.wte.weight, len(tok.ranks), K_NEIGHBOURS, by) for by in ("dot", "cosine")}
    queries = world.all_queries(world.GENERAL, "test")[:n_queries]
    prompts = [tok.render_conversation(q)["ids"] for q in queries]
    batches = copies(tok, prompts, trials, nbrs)
    P = len(tok.prefix_ids)          # the prefixes of the copies, where the variant keeps its length
    prefixes = {v: [b[:P] for b in batch] for v, batch in batches.items()
                if VARIANTS[v][0] != "query" and VARIANTS[v][1] not in ("none", "none_kept")}
    return dict(nearness=nearness(sft, tok, nbrs),
                kv=prefix_kv_distances(sft, aligned, tok, prefixes["prefix_10"][:trials]),
                direction={v: direction(sft, aligned, tok, ps) for v, ps in prefixes.items()},
                sft=alignment_under(sft, tok, prompts, batches, trials),
                aligned=alignment_under(aligned, tok, prompts, batches, trials),
                patched=bos_patches(sft, aligned, tok, prompts, trials))


# ----------------------------------------------------------------------------- the summary

def leaves(rows):
    """Mean, spread and per-seed values of every number of a list of equal nested dicts."""
    first = rows[0]
    if isinstance(first, dict):
        return {k: leaves([r[k] for r in rows]) for k in first}
    if isinstance(first, list) and first and isinstance(first[0], (int, float)):
        return [stats(list(col)) for col in zip(*rows)]
    return stats(rows) if isinstance(first, (int, float)) else first


def paired(runs, ref_runs):
    """The difference of two rows' Avg over the same questions: per seed, and pooled over
    (question, seed) units with a 95% interval (normal approximation), as {mean, lo, hi, per_seed}."""
    d = [a - b for r, r0 in zip(runs, ref_runs) for a, b in zip(r["q_mean"], r0["q_mean"])]
    half = 1.96 * statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else 0.0
    m = statistics.mean(d)
    return dict(mean=round(m, 2), lo=round(m - half, 2), hi=round(m + half, 2),
                per_seed=[round(statistics.mean(r["q_mean"]) - statistics.mean(r0["q_mean"]), 2)
                          for r, r0 in zip(runs, ref_runs)])


def judged(runs, ref_runs):
    """Best, Avg (mean, spread, per seed) and the paired difference from the reference row."""
    return dict(best=stats([round(statistics.mean(r["q_best"]), 2) for r in runs]),
                avg=stats([round(statistics.mean(r["q_mean"]), 2) for r in runs]), diff=paired(runs, ref_runs))


def summarize(rows):
    res = [r["result"] for r in rows if r["kind"] == "perturbation"]
    out = {k: leaves([r[k] for r in res]) for k in ("nearness", "kv", "direction")}
    for model in ("sft", "aligned"):
        out[model] = {v: dict(judged([r[model][v] for r in res], [r[model]["none"] for r in res]),
                              tokens=stats([r[model][v]["tokens"] for r in res])) for v in ["none", *VARIANTS]}
    sft_none = [r["sft"]["none"] for r in res]
    out["patched"] = {w: judged([r["patched"][w] for r in res], sft_none) for w in PATCHES}
    return out


class PerturbationStudy(Study):
    folder = "perturbation"

    def runs_per_seed(self, args):
        return 2

    def run_seed(self, seed, sweep, bar):
        _, tok = sweep.world()
        aligned_path = sweep.checkpoint("align", seed)
        sft_path = sweep.checkpoint("finetune", seed, ["--domain", "finance"])
        bar.update()
        aligned, sft = sweep.load(aligned_path, tok), sweep.load(sft_path, tok)
        sweep.record(kind="perturbation", seed=seed, ckpt=sft_path, ref=aligned_path,
                     result=measure(sft, aligned, tok, sweep.args.trials, sweep.args.answers))
        bar.update()

    def summarize(self, rows, args):
        return dict(trials=args.trials, queries=min(args.answers, len(world.all_queries(world.GENERAL, "test"))),
                    sampling_seed=SEED, perturbation=summarize(rows))

    def markdown(self, summary):
        return markdown(summary)

    def headline(self, summary):
        p = summary["perturbation"]["sft"]
        return (f"SFT general alignment {p['none']['avg']['mean']:.1f}; prefix perturbed (10 tokens) "
                f"{p['prefix_10']['avg']['mean']:.1f}, preamble words by cosine {p['words_10_cos']['avg']['mean']:.1f}, "
                f"no preamble {p['prefix_none']['avg']['mean']:.1f}, kept in place {p['prefix_none_kept']['avg']['mean']:.1f}")


# ----------------------------------------------------------------------------- RESULTS.md

def diff(d):
    """'+1.2 [-3.0, +5.4]': a paired difference and its 95% interval."""
    return f"{d['mean']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}]"


def nearness_section(near):
    pm = report.pm
    rows = [[by, pm(near[by]["neighbour_cosine"], 3), pm(near[by]["neighbour_norm"], 2),
             f"{near[by]['distinct']['mean']:.0f} of {K_NEIGHBOURS * int(near['words']['mean'])}"] for by in ("dot", "cosine")]
    return ["## How near the neighbours are\n",
            f"The preamble's {int(near['words']['mean'])} word tokens and their {K_NEIGHBOURS} nearest neighbours in the input "
            f"embedding, by dot product (the paper's) and by cosine. For scale: random token pairs' cosine "
            f"{pm(near['random_cosine'], 3)}; the preamble words' own norm {pm(near['word_norm'], 2)}, every "
            f"token's {pm(near['token_norm'], 2)}.\n",
            report.table(["neighbours by", "their mean cosine", "their mean norm", "distinct neighbours"], rows),
            "\nSeed 0's first preamble words and their neighbours:\n",
            report.table(["token", "by dot product", "by cosine"],
                         [[repr(t), ", ".join(map(repr, d)), ", ".join(map(repr, c))] for (t, d), (_, c)
                          in zip(near["dot"]["examples"], near["cosine"]["examples"])])]


def kv_section(kv, direction):
    pm, n_layers = report.pm, len(kv["sft_vs_aligned"])
    return ["\n## What perturbation does to the prefix's K/V\n",
            "Per layer, TReFT's relative K + V distance over the prefix positions, mean over 10-token "
            "perturbations of the whole prefix: how far the SFT model's prefix K/V are from the aligned model's "
            "(what patching puts back), how far perturbation moves them, where it leaves them, and how far "
            "apart the two models are on the same perturbed tokens.\n",
            report.table(["layer", "SFT vs aligned", "perturbed SFT vs SFT", "perturbed SFT vs aligned",
                          "perturbed aligned vs aligned", "both perturbed alike: SFT vs aligned"],
                         [[i] + [pm(kv[k][i], 3) for k in ("sft_vs_aligned", "perturbed_vs_sft", "perturbed_vs_aligned",
                                                           "aligned_perturbed_vs_aligned",
                                                           "perturbed_sft_vs_perturbed_aligned")]
                          for i in range(n_layers)]),
            "\n## The direction of the move\n",
            "Per layer, over every perturbed copy's prefix, in TReFT's relative metric (each position's K and V "
            "divided by the SFT model's norm there): the cosine between the move a perturbation makes in the "
            "SFT model's prefix K/V (perturbed - SFT) and the gap patching closes (aligned - SFT), and the share "
            "of that gap the move closes along it (1: all of it; negative: away). Mean ± sd over seeds; the "
            f"cosine of two random directions is about ±{direction['prefix_10']['chance']['mean']:.3f}.\n",
            report.table(["perturbation"] + [f"layer {i}: cosine / share" for i in range(n_layers)],
                         [[LABELS[v]] + [f"{pm(d['cos'][i], 3)} / {pm(d['share'][i], 3)}" for i in range(n_layers)]
                          for v, d in direction.items()])]


def alignment_section(p, summary):
    rows = [[LABELS[v], f"{p['sft'][v]['tokens']['mean']:.1f}", report.pm(p["sft"][v]["best"]),
             report.pm(p["sft"][v]["avg"]), diff(p["sft"][v]["diff"]) if v != "none" else "-",
             report.pm(p["aligned"][v]["avg"]), diff(p["aligned"][v]["diff"]) if v != "none" else "-"]
            for v in ["none", *VARIANTS]]
    return ["\n## General alignment under rising perturbation\n",
            f"Best / Avg general alignment of the SFT and the aligned model with each perturbation: "
            f"{summary['queries']} general test questions, {summary['trials']} copies each, draws and sampling "
            f"seeded with {summary['sampling_seed']} as in the main study's patching. Beside each Avg, its difference "
            "from the same model unperturbed, pooled over questions and seeds, with a 95% interval. Paper "
            f"(Qwen-2.5-7B, SFT, Best / Avg): prefix {' / '.join(map(str, report.PAPER_PERTURB['prefix']))}, "
            f"query {' / '.join(map(str, report.PAPER_PERTURB['query']))}.\n",
            report.table(["perturbation", "tokens", "SFT Best", "SFT Avg", "SFT: - unperturbed",
                          "aligned Avg", "aligned: - unperturbed"], rows)]


def patch_section(p):
    gap = p["aligned"]["none"]["avg"]["mean"] - p["sft"]["none"]["avg"]["mean"]
    rows = [[PATCHES[w], report.pm(x["avg"]), diff(x["diff"]), f"{100 * x['diff']['mean'] / gap:.0f}%" if gap > 0 else "-"]
            for w, x in p["patched"].items()]
    return ["\n## Where the token-independent change sits\n",
            "The SFT model with the aligned model's K/V patched in at some prefix positions (every layer), "
            "the same questions and copies as above (Avg general alignment), its difference from the SFT "
            "model unpatched, and that as a share of the gap to the aligned model unperturbed.\n",
            report.table(["K/V patched at", "SFT Avg", "- unpatched", "share of the gap"], rows)]


def markdown(summary):
    p = summary["perturbation"]
    out = [f"# Why prefix perturbation gives back so little\n\n{report.provenance(summary)} Seeds {summary['seeds']}; "
           f"every cell is the mean ± sd over the seeds unless it says otherwise.\n",
           *nearness_section(p["nearness"]), *kv_section(p["kv"], p["direction"]), *alignment_section(p, summary),
           *patch_section(p)]
    return "\n".join(out) + "\n"


STUDY = PerturbationStudy()
