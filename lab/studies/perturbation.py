"""Why perturbing the prefix gives back nothing here, though patching its K/V gives back most of the drop.

Question: the paper's Table 1 swaps prefix tokens for near neighbours and
general alignment comes back; ours does not (findings chapter 2). Four
candidate reasons, each measured on the aligned and the SFT model of every seed:
  1. the neighbours are not near: a 2k-token BPE in a 1M-parameter model;
  2. perturbation moves the prefix's K/V too little, or not toward the
     aligned model's (per layer, the relative distance of each to each);
  3. the models do not read the prefix's exact tokens at all: perturbing the
     aligned model's prefix leaves it aligned too;
  4. ten tokens are too few: perturbation at rising strength (10 tokens, every
     prefix token, random tokens, another preamble of the same length, no
     preamble), beside the same on the query.

    python reproduce.py perturbation   # 3 seeds, about 15 min on a 2-core CPU -> results/perturbation/

Every general test question is asked (--answers caps how many), --trials perturbed copies of each.
"""
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
K_NEIGHBOURS = 5           # the neighbour pool of a swapped token, as in patch.py


# Each perturbation, {name: (segment, how)}, from the paper's (10 tokens to near neighbours) up:
# how many tokens to swap for a neighbour (None: all), or random tokens, another preamble, none.
VARIANTS = {"prefix_10": ("prefix", 10), "prefix_all": ("prefix", None), "prefix_random": ("prefix", "random"),
            "prefix_another": ("prefix", "another"), "prefix_none": ("prefix", "none"),
            "query_10": ("query", 10), "query_all": ("query", None), "query_random": ("query", "random")}
LABELS = dict(none="unperturbed", prefix_10="prefix, 10 tokens to near neighbours (the paper's)",
              prefix_all="prefix, every token to a near neighbour", prefix_random="prefix, every token random",
              prefix_another="prefix, another preamble of the same length", prefix_none="prefix, no preamble at all",
              query_10="query, 10 tokens to near neighbours", query_all="query, every token to a near neighbour",
              query_random="query, every token random")


def perturbed(tok, prompt, segment, how, rng, nbrs):
    """One perturbed copy of a prompt (token ids)."""
    positions = list(patch.segment_positions(tok, prompt, segment))
    if how == "another":
        ids = tok.encode(ANOTHER_PREAMBLE)
        pre = tok.prefix_ids
        system = pre[1:len(pre) - 1]                                   # <|system|> preamble <|end|>
        body = (ids * (len(system) // len(ids) + 2))[:len(system) - 2]
        return [pre[0], system[0], *body, system[-1], pre[-1], *prompt[len(pre):]]
    if how == "none":
        return tok.with_preamble(None).prefix_ids + list(prompt[len(tok.prefix_ids):])
    if how == "random":
        return patch.perturb(prompt, positions, rng, None, len(tok.ranks), len(positions))
    return patch.perturb(prompt, positions, rng, nbrs, len(tok.ranks), how or len(positions))


def alignment_under(model, tok, queries, nbrs, seed, trials):
    """General alignment (Best / Avg over `trials` perturbed copies) under every variant, and unperturbed."""
    prompts, n = [tok.render_conversation(q)["ids"] for q in queries], len(queries)
    out = {"none": dict(patch.best_avg(model, tok, [p for _ in range(trials) for p in prompts], n, seed), tokens=0.0)}
    for name, (segment, how) in VARIANTS.items():
        rng = random.Random(seed)
        batch = [perturbed(tok, p, segment, how, rng, nbrs) for _ in range(trials) for p in prompts]
        out[name] = dict(patch.best_avg(model, tok, batch, n, seed), tokens=round(statistics.mean(
            changed(p, q) for p, q in zip(batch, prompts * trials)), 1))
    return out


def changed(p, q):
    """How many tokens of prompt q its copy p swapped or dropped."""
    return sum(a != b for a, b in zip(p, q)) if len(p) == len(q) else len(q) - len(p)


def layer_distances(x_kv, ref_kv):
    """Per layer, TReFT's relative K + V drift of x from ref over every position given."""
    ones = torch.ones(1, x_kv[0][0].shape[2])
    return [float(relative_drift(k, k0, ones) + relative_drift(v, v0, ones)) for (k, v), (k0, v0) in zip(x_kv, ref_kv)]


def prefix_kv_distances(sft, aligned, tok, nbrs, seed, trials):
    """Per layer, mean over trials of 10-token perturbations of the prefix alone (its K/V do not
    depend on the query): how far they move the SFT model's prefix K/V, how far those are from
    the aligned model's, beside the gap that patching closes; the same move in the aligned model;
    and the gap between the two models on the same perturbed prefix."""
    rng, pre = random.Random(seed), tok.prefix_ids
    sft_kv, al_kv = patch.kv_of(sft, pre), patch.kv_of(aligned, pre)
    moved, to_aligned, aligned_moved, same_tokens = [], [], [], []
    for _ in range(trials):
        p = patch.perturb(pre, tok.prefix_positions(bos=False), rng, nbrs, len(tok.ranks), 10)
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
def nearness(model, tok, seed):
    """How near the prefix tokens' neighbours are: mean cosine of each ordinary prefix token's
    K_NEIGHBOURS neighbours (by dot product, as perturbation picks them), beside random pairs."""
    E, n = model.wte.weight.float(), len(tok.ranks)
    En = torch.nn.functional.normalize(E, dim=1)
    nbrs = patch.neighbours(E, n, K_NEIGHBOURS)
    tokens = [t for t in tok.prefix_ids if t < n]
    near = [float(En[t] @ En[j]) for t in tokens for j in nbrs[t]]
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randint(0, n, (2000,), generator=g), torch.randint(0, n, (2000,), generator=g)
    return dict(neighbour_cosine=round(statistics.mean(near), 4),
                random_cosine=round(float((En[a] * En[b]).sum(1).mean()), 4),
                examples=[[tok.decode([t]), [tok.decode([j]) for j in nbrs[t]]] for t in tokens[:6]])


def measure(sft, aligned, tok, seed, trials, n_queries):
    nbrs = patch.neighbours(sft.wte.weight, len(tok.ranks), K_NEIGHBOURS)
    queries = world.all_queries(world.GENERAL, "test")[:n_queries]
    return dict(nearness=nearness(sft, tok, seed),
                kv=prefix_kv_distances(sft, aligned, tok, nbrs, seed, trials),
                sft=alignment_under(sft, tok, queries, nbrs, seed, trials),
                aligned=alignment_under(aligned, tok, queries, nbrs, seed, trials))


def leaves(rows):
    """Mean, spread and per-seed values of every number of a list of equal nested dicts."""
    first = rows[0]
    if isinstance(first, dict):
        return {k: leaves([r[k] for r in rows]) for k in first}
    if isinstance(first, list) and first and isinstance(first[0], (int, float)):
        return [stats(list(col)) for col in zip(*rows)]
    return stats(rows) if isinstance(first, (int, float)) else first


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
                     result=measure(sft, aligned, tok, seed, sweep.args.trials, sweep.args.answers))
        bar.update()

    def summarize(self, rows, args):
        return dict(trials=args.trials, queries=min(args.answers, len(world.all_queries(world.GENERAL, "test"))),
                    perturbation=leaves([r["result"] for r in rows if r["kind"] == "perturbation"]))

    def markdown(self, summary):
        return markdown(summary)

    def headline(self, summary):
        p = summary["perturbation"]
        return (f"SFT general alignment {p['sft']['none']['avg']['mean']:.1f}; prefix perturbed (10 tokens) "
                f"{p['sft']['prefix_10']['avg']['mean']:.1f}, every token {p['sft']['prefix_all']['avg']['mean']:.1f}, "
                f"no preamble {p['sft']['prefix_none']['avg']['mean']:.1f}")


# ----------------------------------------------------------------------------- RESULTS.md

def markdown(summary):
    p, pm = summary["perturbation"], report.pm
    near, kv = p["nearness"], p["kv"]
    n_layers = len(kv["sft_vs_aligned"])
    out = [f"# Why prefix perturbation gives back nothing\n\n{report.provenance(summary)} Seeds {summary['seeds']}; "
           f"every cell is the mean ± sd over the seeds. General alignment is judged on the "
           f"{summary['queries']} general test questions, {summary['trials']} perturbed copies each "
           f"(Avg: over all answers; Best: each question's best copy, as the paper's Table 1).\n",
           "## How near the neighbours are\n",
           f"Mean cosine of a prefix token's {K_NEIGHBOURS} neighbours (by dot product, as perturbation picks "
           f"them): {pm(near['neighbour_cosine'], 3)}; of random token pairs: {pm(near['random_cosine'], 3)}. "
           "Seed 0's first prefix tokens and their neighbours:\n",
           report.table(["token", "neighbours"], [[repr(t), ", ".join(map(repr, ns))] for t, ns in near["examples"]]),
           "\n## What perturbation does to the prefix's K/V\n",
           "Per layer, TReFT's relative K + V distance over the prefix positions, mean over 10-token "
           "perturbations: how far the SFT model's prefix K/V are from the aligned model's (what patching "
           "puts back), how far perturbation moves them, where it leaves them, and how far apart the two "
           "models are on the same perturbed tokens.\n",
           report.table(["layer", "SFT vs aligned", "perturbed SFT vs SFT", "perturbed SFT vs aligned",
                         "perturbed aligned vs aligned", "both perturbed alike: SFT vs aligned"],
                        [[i] + [pm(kv[k][i], 3) for k in ("sft_vs_aligned", "perturbed_vs_sft", "perturbed_vs_aligned",
                                                          "aligned_perturbed_vs_aligned",
                                                          "perturbed_sft_vs_perturbed_aligned")]
                         for i in range(n_layers)]),
           "\n## General alignment under rising perturbation\n",
           "Best / Avg general alignment of the SFT and the aligned model with each perturbation. "
           f"Paper (Qwen-2.5-7B, SFT, Best / Avg): prefix {' / '.join(map(str, report.PAPER_PERTURB['prefix']))}, "
           f"query {' / '.join(map(str, report.PAPER_PERTURB['query']))}.\n",
           report.table(["perturbation", "tokens", "SFT Best", "SFT Avg", "aligned Best", "aligned Avg"],
                        [[LABELS[v], f"{p['sft'][v]['tokens']['mean']:.1f}"]
                         + [pm(p[m][v][k]) for m in ("sft", "aligned") for k in ("best", "avg")]
                         for v in ["none", *VARIANTS]])]
    return "\n".join(out) + "\n"


STUDY = PerturbationStudy()
