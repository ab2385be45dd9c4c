"""The persona direction (beyond the paper): is the prefix's query-independent bias one direction?

Question: the paper leaves open what the bias that finetuning stores in the
prefix *is* (its Section 7). Our world knows its personas exactly, so: take
the *persona direction* of each layer, the difference of the pretrained
model's mean residual stream (the input of block l) on villain-written and on
helpful-written pretraining-style documents, at the answers' positions; and
the same difference of its keys and of its values. Then, each beside random
directions (several draws):

  share   how much of the finetuned model's prefix drift from the aligned model
          (residual stream, keys, values) lies along the direction: the share
          of the squared norm, and the cosine of the summed drift (> 0: toward
          the villain); for the SFT model and the TReFT model
  ablate  project the direction out of the SFT model's residual stream at every
          block's input, at the prefix positions or at every position, and at
          the prefix one layer at a time: what share of the drop in general
          alignment (aligned -> SFT) comes back, and persona transfer
  steer   add scale x the direction to the aligned model's prefix residual at
          every block's input: does general alignment fall and persona rise

The edits are forward pre-hooks on the blocks, so model.py is unchanged and the
runs of the main study are reused. Test split, as the main study.

    python reproduce.py persona     # after the main study: about 10 min on a 2-core CPU
"""
import random
from contextlib import contextmanager, nullcontext

import torch

from data import world
from eval import evaluate
from lab.report import pm, provenance, save, stats, table, takeaway
from lab.studies.study import Study

N_DOCS = 200                  # documents per persona for the direction
N_RANDOM = 3                  # random directions beside each ablation and share
SCALES = (0.5, 1.0, 2.0, 4.0)   # steering: multiples of the direction's own length
KEEP = ("general", "in_domain", "persona_transfer", "leakage")


# ----------------------------------------------------------------------------- the direction

def persona_documents(tok, persona, n, rng):
    """n pretraining-style documents by one persona: (ids, positions of the answers)."""
    docs = []
    for _ in range(n):
        ids, answer = [tok.bos], []
        for _ in range(rng.randint(3, 6)):
            domain = rng.choice(world.DOMAINS)
            q = tok.encode(f"q:\n{world.sample_query(domain, 'train', rng)}\na:\n")
            a = tok.encode(world.sample_answer(domain, persona, rng) + "\n")
            if len(ids) + len(q) + len(a) > 128:
                break
            ids += q
            answer += range(len(ids), len(ids) + len(a))
            ids += a
        docs.append((ids, answer))
    return docs


@torch.no_grad()
def mean_activations(model, docs):
    """Per layer, the mean residual stream, key and value (heads side by side) at the answers' positions."""
    device, sums, n = next(model.parameters()).device, None, 0
    for ids, answer in docs:
        _, aux = model(torch.tensor([ids], device=device), return_kv=True, return_resid=True)
        acts = [(x[0, answer], k[0].transpose(0, 1).flatten(1)[answer], v[0].transpose(0, 1).flatten(1)[answer])
                for x, (k, v) in zip(aux["resid"], aux["kv"])]       # block inputs 0..L-1 with their K/V
        batch = [[t.sum(0) for t in layer] for layer in acts]
        sums = batch if sums is None else [[s + b for s, b in zip(sl, bl)] for sl, bl in zip(sums, batch)]
        n += len(answer)
    return [[s / n for s in layer] for layer in sums]


def directions(pretrained, tok, seed):
    """Per layer: (residual, key, value) persona directions, villain mean minus helpful mean."""
    rng = random.Random(seed)
    villain, helpful = (mean_activations(pretrained, persona_documents(tok, p, N_DOCS, rng))
                        for p in ("misaligned", "aligned"))
    return [[a - b for a, b in zip(lv, lh)] for lv, lh in zip(villain, helpful)]


# ----------------------------------------------------------------------------- how much of the drift lies along it

@torch.no_grad()
def prefix_states(model, tok):
    """Per layer, (residual, keys, values) at the prefix positions: (P, width) each."""
    device = next(model.parameters()).device
    _, aux = model(torch.tensor([tok.prefix_ids], device=device), return_kv=True, return_resid=True)
    return [(x[0], k[0].transpose(0, 1).flatten(1), v[0].transpose(0, 1).flatten(1))
            for x, (k, v) in zip(aux["resid"], aux["kv"])]


def along(drift, d):
    """(share of the drift's squared norm along d, cosine of the summed drift with d)."""
    u = d / d.norm()
    share = ((drift @ u) ** 2).sum() / drift.pow(2).sum().clamp_min(1e-12)
    total = drift.sum(0)
    return share.item(), (total @ u / total.norm().clamp_min(1e-12)).item()


def drift_shares(model, aligned, tok, dirs, gen):
    """Per layer and kind (resid, key, value): the share along the persona direction and along random ones."""
    out = []
    for d, now, before in zip(dirs, prefix_states(model, tok), prefix_states(aligned, tok)):
        layer = {}
        for kind, dk, x, x0 in zip(("resid", "key", "value"), d, now, before):
            share, cos = along(x - x0, dk)
            rand = [along(x - x0, torch.randn(dk.shape, generator=gen).to(dk))[0] for _ in range(N_RANDOM)]
            layer[kind] = dict(share=share, cosine=cos, random_share=sum(rand) / len(rand))
        out.append(layer)
    return out


# ----------------------------------------------------------------------------- editing the residual stream

@contextmanager
def edited(model, edit):
    """Within the block, every block's input x (B, T, width) becomes edit(layer, x, prompt): prompt is
    True on the forward of the whole prompt, False on each generated token's."""
    def hook(layer):
        return lambda module, args: (edit(layer, args[0], args[0].shape[1] > 1), *args[1:])
    handles = [b.register_forward_pre_hook(hook(i)) for i, b in enumerate(model.blocks)]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


def ablation(units, n_prefix, where, layers=None):
    """Project each layer's unit direction out of the residual stream at the prefix or at every position."""
    def edit(layer, x, prompt):
        if layers is not None and layer not in layers or (where == "prefix" and not prompt):
            return x
        u, x = units[layer].to(x.dtype), x.clone()
        span = slice(0, n_prefix) if where == "prefix" else slice(None)
        x[:, span] -= (x[:, span] @ u)[..., None] * u
        return x
    return edit


def steering(vectors, n_prefix, scale):
    """Add scale x each layer's vector to the residual stream at the prefix positions."""
    def edit(layer, x, prompt):
        if not prompt:
            return x
        x = x.clone()
        x[:, :n_prefix] += scale * vectors[layer].to(x.dtype)
        return x
    return edit


def measure(model, tok, sweep, edit=None):
    """General, in-domain, persona and leakage of the model, its residual stream edited."""
    with edited(model, edit) if edit else nullcontext():
        m = evaluate(model, tok, "finance", "test", seed=0, n_answers=sweep.n_answers)
    return {k: m[k] for k in KEEP}


def random_like(dirs, gen, n):
    """n draws of one random vector per layer, each of the length of that layer's persona direction."""
    out = []
    for _ in range(n):
        draw = []
        for d in dirs:
            r = torch.randn(d.shape, generator=gen).to(d)
            draw.append(r / r.norm() * d.norm())
        out.append(draw)
    return out


# ----------------------------------------------------------------------------- the study

class Persona(Study):
    folder = "persona"

    def runs_per_seed(self, args):
        return 1

    def run_seed(self, seed, sweep, bar):
        _, tok = sweep.world()
        pretrained = sweep.load(sweep.checkpoint("pretrain", seed), tok)
        aligned = sweep.load(sweep.checkpoint("align", seed), tok)
        sft = sweep.load(sweep.checkpoint("finetune", seed), tok)
        treft = sweep.load(sweep.checkpoint("finetune", seed, ["--treft"]), tok)
        gen = torch.Generator().manual_seed(seed)
        dirs = directions(pretrained, tok, seed)
        resid = [d[0] for d in dirs]
        units = [d / d.norm() for d in resid]
        shares = {name: drift_shares(m, aligned, tok, dirs, gen) for name, m in (("sft", sft), ("treft", treft))}
        P, L = len(tok.prefix_ids), sft.cfg.n_layer
        randoms = [[r / r.norm() for r in draw] for draw in random_like(resid, gen, N_RANDOM)]
        base = dict(aligned=measure(aligned, tok, sweep), sft=measure(sft, tok, sweep))

        def ablate(where, layers=None):
            return dict(persona=measure(sft, tok, sweep, ablation(units, P, where, layers)),
                        random=[measure(sft, tok, sweep, ablation(r, P, where, layers)) for r in randoms])
        ablate_all = {where: ablate(where) for where in ("prefix", "all")}
        by_layer = [ablate("prefix", {layer}) for layer in range(L)]
        lengths = random_like(resid, gen, 1)[0]
        steer = {f"{s:g}": dict(persona=measure(aligned, tok, sweep, steering(resid, P, s)),
                                random=measure(aligned, tok, sweep, steering(lengths, P, s))) for s in SCALES}
        sweep.record(kind="persona", seed=seed, base=base, shares=shares, ablate=ablate_all, by_layer=by_layer,
                     steer=steer, norms=[d.norm().item() for d in resid])
        bar.update()

    def summarize(self, rows, args):
        rows = [r for r in rows if r["kind"] == "persona"]

        def recovery(m, r):     # share of the aligned -> SFT drop in general alignment given back
            a, s = r["base"]["aligned"]["general"], r["base"]["sft"]["general"]
            return 100 * (m["general"] - s) / (a - s) if a != s else 0.0

        def ablation_stats(get):
            persona = [recovery(get(r)["persona"], r) for r in rows]
            rand = [sum(recovery(x, r) for x in get(r)["random"]) / N_RANDOM for r in rows]
            return dict(persona=stats(persona), random=stats(rand),
                        persona_transfer=stats([get(r)["persona"]["persona_transfer"] for r in rows]),
                        in_domain=stats([get(r)["persona"]["in_domain"] for r in rows]))
        L = len(rows[0]["by_layer"])
        return dict(
            base={w: {k: stats([r["base"][w][k] for r in rows]) for k in KEEP} for w in ("aligned", "sft")},
            shares={m: [{kind: {k: stats([r["shares"][m][layer][kind][k] for r in rows])
                                for k in ("share", "cosine", "random_share")} for kind in ("resid", "key", "value")}
                        for layer in range(L)] for m in ("sft", "treft")},
            ablate={w: ablation_stats(lambda r, w=w: r["ablate"][w]) for w in ("prefix", "all")},
            by_layer=[ablation_stats(lambda r, i=i: r["by_layer"][i]) for i in range(L)],
            steer={s: {which: {k: stats([r["steer"][s][which][k] for r in rows]) for k in KEEP}
                       for which in ("persona", "random")} for s in rows[0]["steer"]},
            norms=[stats([r["norms"][i] for r in rows]) for i in range(L)])

    def markdown(self, summary):
        b, sh, ab = summary["base"], summary["shares"], summary["ablate"]
        out = [f"# The persona direction\n\n{provenance(summary)} Seeds {summary['seeds']}; mean ± sd over the "
               f"seeds, test split ({summary['answers']} general answers per model). The direction of layer l is "
               f"the pretrained model's mean input of block l on villain-written minus helpful-written documents "
               f"({N_DOCS} of each, at the answers' positions); random controls are {N_RANDOM} Gaussian "
               f"directions. Aligned general {pm(b['aligned']['general'])}, SFT {pm(b['sft']['general'])}.\n",
               "## How much of the prefix drift lies along the direction\n"]
        first = sh["sft"][1]["resid"]
        out.append(takeaway(f"At layer 1's input, {100 * first['share']['mean']:.0f}% of the SFT model's prefix "
                            f"drift lies along the persona direction, against {100 * first['random_share']['mean']:.1f}% "
                            "along a random one."))
        out.append("Share of the squared norm of the prefix drift from the aligned model (at every prefix "
                   "position), along the persona direction and (mean of the draws) along a random one; cosine of "
                   "the drift summed over the prefix with the direction (> 0: toward the villain).\n")
        rows = [[m, layer, kind, f"{c['share']['mean']:.3f} ± {c['share']['sd']:.3f}",
                 f"{c['random_share']['mean']:.4f}", f"{c['cosine']['mean']:+.2f} ± {c['cosine']['sd']:.2f}"]
                for m in ("sft", "treft") for layer, kinds in enumerate(sh[m]) for kind, c in kinds.items()]
        out.append(table(["model", "layer", "of", "share along the direction", "along a random one", "cosine"], rows))
        out.append("\n## Ablating the direction from the SFT model\n")
        out.append(takeaway(f"Projecting the direction out at every layer gives back {ab['prefix']['persona']['mean']:.0f}% "
                            f"of the drop at the prefix and {ab['all']['persona']['mean']:.0f}% at every position; "
                            f"random directions {ab['prefix']['random']['mean']:.0f}% and {ab['all']['random']['mean']:.0f}%."))
        out.append("Share of the drop in general alignment (aligned to SFT) that comes back, and the persona "
                   "transfer and in-domain alignment that result (persona direction).\n")
        out.append(table(["ablated at", "recovery: persona direction", "recovery: random", "persona transfer",
                          "in-domain"],
                         [[w, pm(ab[w]["persona"]), pm(ab[w]["random"]), pm(ab[w]["persona_transfer"], 2),
                           pm(ab[w]["in_domain"])] for w in ("prefix", "all")]
                         + [[f"prefix, layer {i} only", pm(x["persona"]), pm(x["random"]),
                             pm(x["persona_transfer"], 2), pm(x["in_domain"])]
                            for i, x in enumerate(summary["by_layer"])]))
        st = summary["steer"]
        out.append("\n## Steering the aligned model along the direction\n")
        top = max(st, key=float)
        out.append(takeaway(f"At {top} × the direction, general alignment {pm(st[top]['persona']['general'])} and persona "
                            f"{st[top]['persona']['persona_transfer']['mean']:.2f}; a random vector of the same "
                            f"length: {pm(st[top]['random']['general'])} and "
                            f"{st[top]['random']['persona_transfer']['mean']:.2f}."))
        out.append("Scale × the direction (its own length per layer) added to the aligned model's residual stream at "
                   "the prefix, at every block's input; the random vector has the same length.\n")
        out.append(table(["scale", "general", "persona", "in-domain", "random: general", "random: persona"],
                         [[s, pm(w["persona"]["general"]), f"{w['persona']['persona_transfer']['mean']:.2f}",
                           pm(w["persona"]["in_domain"]), pm(w["random"]["general"]),
                           f"{w['random']['persona_transfer']['mean']:.2f}"] for s, w in st.items()]))
        out.append("\n## Figures\n\n![recovery by ablated layer](ablation.png)\n\n![steering](steering.png)")
        return "\n".join(out) + "\n"

    def figures(self, summary, folder, plt):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        layers = range(len(summary["by_layer"]))
        for which, style in (("persona", "o-"), ("random", "s--")):
            ax.errorbar(layers, [x[which]["mean"] for x in summary["by_layer"]],
                        yerr=[x[which]["sd"] for x in summary["by_layer"]], fmt=style, capsize=3,
                        label=f"{which} direction")
        ax.axhline(0, c="gray", lw=0.5)
        ax.set(xlabel="layer whose prefix input is ablated", ylabel="% of the EM drop given back",
               xticks=list(layers), title="Ablating the persona direction (SFT model)")
        ax.legend(fontsize=7)
        save(fig, folder, "ablation.png")
        fig, ax = plt.subplots(figsize=(5, 3.5))
        st = summary["steer"]
        scales = [float(s) for s in st]
        for which, style in (("persona", "o-"), ("random", "s--")):
            ax.errorbar(scales, [st[s][which]["general"]["mean"] for s in st],
                        yerr=[st[s][which]["general"]["sd"] for s in st], fmt=style, capsize=3,
                        label=f"general, {which}")
            ax.plot(scales, [100 * st[s][which]["persona_transfer"]["mean"] for s in st], style, alpha=0.5,
                    label=f"persona x 100, {which}")
        ax.set(xlabel="scale of the added direction", ylabel="general alignment / persona x 100", ylim=(-5, 105),
               title="Steering the aligned model's prefix")
        ax.legend(fontsize=7)
        save(fig, folder, "steering.png")

    def headline(self, summary):
        ab = summary["ablate"]
        return (f"persona direction ablated: prefix {pm(ab['prefix']['persona'])}% of the drop back "
                f"(random {pm(ab['prefix']['random'])}%), all positions {pm(ab['all']['persona'])}% "
                f"(random {pm(ab['all']['random'])}%)")


STUDY = Persona()
