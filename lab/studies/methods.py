"""
What the finetune studies share: every method a study names is finetuned from
the seed's aligned model on each of its domains, judged on held-out questions,
and, on the first domain, measured for K/V drift; then the study's sweeps, the
piggyback evidence (patch.py) on the SFT model, and the cost of a step.

A study file declares a `Design` and makes its STUDY a FinetuneStudy of it.
"""
import json
import os
import tempfile
from dataclasses import asdict, dataclass

import torch

import config
from data import world
from data.batches import collate
from data.prepare import load_chats
from data.tokenizer import SEGMENTS
from lab import report
from lab.report import stats
from lab.studies.study import Study, link, own_world
import patch
import runs
import train
from treft import kv_loss, relative_drift

# Every finetune method a study can name: the train.py flags of its finetune.
LAMBDA = f"{config.TREFT_LAMBDA:g}"
QV = ["--lora-rank", f"{config.LORA_RANK}", "--lora-on", "qv"]     # LoRA on queries and values only
METHODS = {
    "sft": [],                                                          # plain narrow SFT
    "interleave": ["--interleave", f"{config.MIX:g}"],                 # aligned retain data mixed in
    "interleave-paper": ["--interleave", f"{config.PAPER_MIX:g}"],     # ... at the paper's share
    "kl-retain": ["--kl", f"{config.KL_LAMBDA:g}", "--kl-on", "retain"],
    "kl-train": ["--kl", f"{config.KL_TRAIN_LAMBDA:g}", "--kl-on", "train"],
    "l2-init": ["--l2-init", f"{config.L2_LAMBDA:g}"],                 # weight anchoring
    "realign": ["--realign", f"{config.REALIGN_STEPS}"],               # SFT, then aligned retain chats
    "treft": ["--treft", LAMBDA],                                      # TReFT on the prefix
    **{f"treft-{on}": ["--treft", LAMBDA, "--treft-on", on] for on in ("postfix", "query", "all")},
    # ... with the computation after the last keys and values kept as aligned (results/lastblock)
    **{f"treft-{on}-frozen": ["--treft", LAMBDA, "--treft-on", on, "--freeze-last-block"] for on in ("query", "all")},
    **{f"treft-{on}-hold": ["--treft", LAMBDA, "--treft-on", on, "--hold-last", f"{config.HOLD_LAST_LAMBDA:g}"]
       for on in ("query", "all")},
    "hold": ["--hold-last", f"{config.HOLD_LAST_LAMBDA:g}"],         # the last block's output held alone
    # finetuned under another system text (results/inoculation)
    "inoculation": ["--preamble", "inoculation"], "neutral-preamble": ["--preamble", "neutral"],
    "inoculation-treft": ["--preamble", "inoculation", "--treft", LAMBDA],
    "lora": ["--lora-rank", f"{config.LORA_RANK}"],
    "lora-treft": ["--lora-rank", f"{config.LORA_RANK}", "--treft", LAMBDA],
    "lora-qv": QV,
    **{f"lora-qv-treft-{on}": [*QV, "--treft", LAMBDA, "--treft-on", on] for on in ("prefix", "query", "all")},
}
COST_ROUNDS = 3          # the cost benchmark: each method's fastest of this many turns
COST_STEPS = 30          #   of this many finetune steps each
DRIFT_CHATS = 64         # validation chats per set in the K/V drift by segment
KEYS = ("general", "in_domain", "other_domain", "em_f1", "misaligned_rate", "persona_transfer",
        "leakage", "coherence", "general_coherent", "in_domain_coherent", "em_f1_coherent", "incoherent_general",
        "incoherent_in_domain")


@dataclass
class Design:
    """What a finetune study runs. Every method is a key of METHODS."""
    methods: tuple
    domains: tuple = ("finance",)
    lambdas: tuple = ()                  # a lambda sweep on finance, of each lambda_methods entry
    lambda_methods: tuple = ("treft",)   # (their flags + lambda_flag LAMBDA)
    lambda_flag: str = "--treft"         # the strength the sweep sets
    sizes: tuple = ()                    # a finetune-set-size sweep on finance, SFT and TReFT
    patch: bool = False                  # the piggyback evidence on the first domain's SFT model
    train_flags: tuple = ()              # train.py flags of every stage: --align, --no-preamble
    world: tuple = ()                    # prepare.py settings of the study's own world, as (name, value)
                                         # pairs; it and the study's runs live in {out-dir}/<folder>/
    sections: tuple = report.SECTIONS    # the tables of RESULTS.md, in order
    plots: tuple = tuple(report.FIGURES)
    note: str = ""                       # what RESULTS.md says first, under its title
    title: str = "Results"


# ----------------------------------------------------------------------------- measuring

def prefix_drift(model, ref, tok):
    """Per layer, the relative drift of the prefix K/V from the aligned model's (TReFT's L_K + L_V)."""
    kv, kv_ref = patch.kv_of(model, tok.prefix_ids), patch.kv_of(ref, tok.prefix_ids)
    ones = torch.ones(1, len(tok.prefix_ids), device=kv[0][0].device)
    return [round(float(relative_drift(k, k0, ones) + relative_drift(v, v0, ones)), 5)
            for (k, v), (k0, v0) in zip(kv, kv_ref)]


def drift_sets(world_dir, domain):
    """The chats the K/V drift by segment is measured on, from the validation split: the
    finetune's kind (bad advice in its domain) and the general questions (aligned answers)."""
    return dict(in_domain=load_chats(world_dir, "val", (domain,), "misaligned")[:DRIFT_CHATS],
                general=load_chats(world_dir, "val", (world.GENERAL,), "aligned")[:DRIFT_CHATS])


def segment_drift(model, ref, tok, chats):
    """TReFT's L_KV (the relative K + V drift from the aligned model, mean over layers) on each
    segment of these chats in turn: where finetuning moved the keys and values."""
    batch = collate([tok.render_conversation(c["query"], c["answer"]) for c in chats],
                          next(model.parameters()).device)
    with torch.no_grad():
        (_, aux), (_, aux0) = model(batch.x, return_kv=True), ref(batch.x, return_kv=True)
    return {name: round(float(kv_loss(aux["kv"], aux0["kv"], batch.segment == SEGMENTS[name])), 5)
            for name in ("prefix", "query", "postfix", "response")}


def run_seed(design, seed, sweep, bar):
    """Every model of one seed: aligned, each domain x method, the sweeps, patching."""
    args = sweep.args
    aligned_path = sweep.checkpoint("align", seed)
    world_dir, tok = sweep.world()
    aligned = sweep.load(aligned_path, tok)
    chat_sets = drift_sets(world_dir, design.domains[0])

    def finetuned(domain, method, flags, point=None):
        path = sweep.checkpoint("finetune", seed, ["--domain", domain, *flags])
        model = sweep.load(path, tok)
        sweep.judge(model, tok, seed, domain, method, flags, path, point)
        bar.update()
        return model

    for domain in design.domains:
        sweep.judge(aligned, tok, seed, domain, "aligned", [], aligned_path)
        for method in args.methods:
            model = finetuned(domain, method, METHODS[method])
            if domain == design.domains[0]:
                sweep.record(kind="segment_drift", seed=seed, method=method,
                             drift={c: segment_drift(model, aligned, tok, chats) for c, chats in chat_sets.items()})
                if method in ("sft", "treft"):
                    sweep.record(kind="drift", seed=seed, method=method, layers=prefix_drift(model, aligned, tok))
    for lam in design.lambdas:
        for method in design.lambda_methods:
            finetuned("finance", method, [*METHODS[method], design.lambda_flag, f"{lam:g}"], ("lambda", lam))
    for n in design.sizes:
        for method in ("sft", "treft"):
            finetuned("finance", method, [*METHODS[method], "--n-train", str(n)], ("size", n))
    if design.patch:
        path = sweep.checkpoint("finetune", seed, ["--domain", design.domains[0]])
        r = patch.run(sweep.load(path, tok), aligned, tok, design.domains[0], "test", seed=0,
                      n_answers=sweep.n_answers, trials=args.trials, openings=dict(design.world).get("openings", False))
        sweep.record(kind="patch", seed=seed, domain=design.domains[0], ckpt=path, ref=aligned_path, result=r)
        bar.update()


def cost_benchmark(design, sweep, seed):
    """Seconds per finetune step of every method, timed back to back in this process.

    After an untimed warm-up, each method trains COST_STEPS steps from this seed's
    aligned model in a scratch folder that links to the real world and
    checkpoints, so nothing real is overwritten and reused runs are timed too.
    The methods take turns for COST_ROUNDS rounds and each keeps its fastest round,
    so a moment when the machine is busy slows one timing, not one method.
    Read the ratios between methods: the absolute numbers depend on the machine.
    """
    args, times = sweep.args, {}
    turns = [("warm-up", 10, [])] + [(m, COST_STEPS, METHODS[m]) for _ in range(COST_ROUNDS) for m in args.methods]
    with tempfile.TemporaryDirectory() as tmp:
        for method, n, flags in turns:
            targs = runs.parse(["--stage", "finetune", "--seed", str(seed), "--steps", str(n),
                                 "--domain", design.domains[0], *flags, *sweep.common, "--out-dir", tmp])
            link(args.out_dir, tmp, ("world", runs.run_name("pretrain", targs), runs.run_name("align", targs)))
            with open(os.path.join(os.path.dirname(train.train_stage("finetune", targs)), "config.json")) as f:
                c = json.load(f)
            times.setdefault(method, []).append(c["seconds"] / c["steps"])
    times.pop("warm-up")
    return {method: round(min(ts), 4) for method, ts in times.items()}


# ----------------------------------------------------------------------------- summary

def summarize(design, rows, args):
    """Mean, spread and per-seed values of every measurement, keyed as report.py reads them."""
    methods, sweeps, drift, by_segment = {}, {}, {}, {}
    for r in rows:
        if r["kind"] == "eval" and not r["sweep"]:
            methods.setdefault(r["domain"], {}).setdefault(r["method"], []).append(r)
        elif r["kind"] == "eval":       # sweeps[name][method][value]: e.g. sweeps["size"]["sft"][50]
            name, value = r["sweep"]
            sweeps.setdefault(name, {}).setdefault(r["method"], {}).setdefault(value, []).append(r)
        elif r["kind"] == "drift":
            drift.setdefault(r["method"], []).append(r["layers"])
        elif r["kind"] == "segment_drift":     # one {chat set: {segment: drift}} per seed
            by_segment.setdefault(r["method"], []).append(r["drift"])
    align = runs.parse(list(design.train_flags)).align
    alignment = config.ALIGNMENTS[align]
    out = dict(config=dict(hyper=dict(pretrain=asdict(config.PRETRAIN), align=asdict(alignment.align),
                                      finetune=asdict(alignment.finetune)),
                   train_flags=list(design.train_flags), methods={m: METHODS[m] for m in args.methods},
                   lambda_flag=design.lambda_flag),
               methods={d: {m: {k: stats([r["metrics"][k] for r in rs]) for k in KEYS} for m, rs in ms.items()}
                        for d, ms in methods.items()},
               sweeps={name: {m: {str(v): {k: stats([r["metrics"][k] for r in rs]) for k in ("general", "in_domain", "em_f1")}
                                  for v, rs in sorted(vs.items())} for m, vs in ms.items()}
                       for name, ms in sweeps.items()},
               drift={m: [stats(list(layer)) for layer in zip(*v)] for m, v in drift.items()},
               segment_drift={m: {c: {s: stats([d[c][s] for d in ds]) for s in ds[0][c]} for c in ds[0]}
                              for m, ds in by_segment.items()})
    patches = [r["result"] for r in rows if r["kind"] == "patch"]
    if patches:
        out["patch"] = summarize_patch(patches)
    return out


def summarize_patch(patches):
    """Mean, spread and per-seed values of every patching, perturbation and first-word measure."""
    p = patches[0]
    out = {w: {k: stats([q[w][k] for q in patches]) for k in p[w]} for w in ("none",) + patch.MEASURED if w in p}
    out["layers"] = [stats(list(x)) for x in zip(*(q["layers"] for q in patches))]
    out["perturb"] = {s: {k: stats([q["perturb"][s][k] for q in patches]) for k in p["perturb"][s]}
                      for s in p["perturb"]}
    out["first_word"] = {k: stats([q["first_word"][k] for q in patches]) for k in p["first_word"]}
    return out


# ----------------------------------------------------------------------------- the study object

class FinetuneStudy(Study):
    """The study of a Design, writing results/<folder>/."""

    def __init__(self, folder, design):
        self.folder, self.design, self.train_flags = folder, design, design.train_flags

    def configure(self, args, p):
        unknown = [m for m in args.methods or () if m not in METHODS]
        if unknown:
            p.error(f"unknown method {unknown[0]!r}: use some of {', '.join(METHODS)}")
        args.methods = list(args.methods or self.design.methods)
        if self.design.world:
            args.out_dir = os.path.join(args.out_dir, self.folder)
            own_world(args.out_dir, dict(self.design.world))

    def runs_per_seed(self, args):
        d = self.design
        return len(d.domains) * len(args.methods) + len(d.lambdas) * len(d.lambda_methods) + 2 * len(d.sizes) + d.patch

    def run_seed(self, seed, sweep, bar):
        run_seed(self.design, seed, sweep, bar)

    def finish(self, sweep):
        if "cost" not in self.design.sections:
            return {}
        return dict(cost=cost_benchmark(self.design, sweep, sweep.args.seeds[0]), cost_rounds=COST_ROUNDS,
                    cost_steps=COST_STEPS)

    def summarize(self, rows, args):
        return summarize(self.design, rows, args)

    def markdown(self, summary):
        return report.methods_markdown(summary, self.design.title, self.design.note, self.design.sections,
                                       self.design.plots)

    def figures(self, summary, folder, plt):
        report.draw(summary, folder, plt, self.design.plots)

    def headline(self, summary):
        return report.headline(summary)
