"""The validation grids that chose the defaults: alignment, strengths, KL on train, LoRA's lr, TReFT's positions.

Question: which setting of each knob is best on the *validation* split? Every
grid point is a finetune on bad finance advice, judged on validation phrasings
only (the test split is never read here); the rule for a strength is the best
mean EM-F1 over the seeds, and each table marks that point. The alignment grid
trains each candidate of CANDIDATES (below) from the pretrained model, then SFT
and TReFT (lambda 10) at a few finetune rates; what was asked of it (general
<= 60 on every seed, persona >= 0.30, little leakage; aligned general >= 90)
is in docs/findings.md#validation.

    python reproduce.py validation                        # every grid: hours on a 2-core CPU
    python reproduce.py validation --methods kl-train     # one grid (--methods names grids here)

Every finetune runs in {out}/validation/, which links to the stock world,
pretrained and aligned runs, so no run of another study is overwritten; each
point of a grid over --lr is a run of its own (its name carries the lr).
"""
import os

import config
import runs
import train
from config import Alignment, Stage
from eval import evaluate
from lab.report import label, provenance, stats, table
from lab.studies.methods import KEYS, METHODS, QV
from lab.studies.study import Study, link

# The alignments the grid compared before the rehearsed one was chosen: name -> (align steps,
# lr, text batches per chat batch, their size), each with the rehearsed alignment's finetune.
CANDIDATES = {name: Alignment(tag=f"-{name}", finetune=config.ALIGNMENTS["rehearsed"].finetune,
                              align=Stage(steps=steps, batch_size=32, lr=lr, warmup=20, rehearse=r, text_batch=tb))
              for name, (steps, lr, r, tb) in dict(
                  chats300lr3e4=(300, 3e-4, 0, 0), chats100=(100, 1e-3, 0, 0), r1b32=(600, 1e-3, 1, 32),
                  r1b8=(600, 1e-3, 1, 8), r2b32=(900, 1e-3, 2, 32), r2b8=(900, 1e-3, 2, 8),
                  r2b8short=(450, 1e-3, 2, 8)).items()}
# train.py's --align takes them, in this study's processes: the grid trains them as any run.
config.ALIGNMENTS.update(CANDIDATES)


def points(flags_of, values):
    return [(f"{v:g}", flags_of(v)) for v in values]


# grid -> [(point, train.py finetune flags)], each from the default (rehearsed) alignment; every
# grid also measures plain SFT as its point "sft", so no point of a grid may take that name
GRIDS = {
    "treft": points(lambda v: ["--treft", f"{v:g}"], (3, 10, 30, 100, 300, 1000)),
    "kl-retain": points(lambda v: ["--kl", f"{v:g}", "--kl-on", "retain"], (0.1, 0.3, 1, 3, 10, 30)),
    "l2-init": points(lambda v: ["--l2-init", f"{v:g}"], (3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3)),
    "interleave": points(lambda v: ["--interleave", f"{v:g}"], (0.1, 0.2, 0.5, 0.8)),
    "kl-train": points(lambda v: ["--kl", f"{v:g}", "--kl-on", "train"], (0.03, 0.1, 0.3, 1, 3, 10)),
    "lora-lr": points(lambda v: [*METHODS["lora"], "--lr", f"{v:g}"], (3e-4, 1e-3, 3e-3)),
    "lora-lr-treft": points(lambda v: [*METHODS["lora-treft"], "--lr", f"{v:g}"], (3e-4, 1e-3, 3e-3)),
    "positions": [(m, METHODS[m]) for m in ("treft", "treft-postfix", "treft-query", "treft-all", "lora-treft")],
    "positions-last-frozen": [(f"{m}, last block frozen", [*METHODS[m], "--freeze-last-block"])
                              for m in ("sft", "treft", "treft-postfix", "treft-query", "treft-all")],
    "lora-qv": [("lora-qv sft", QV)] + [(f"{on} {v:g}", [*QV, "--treft", f"{v:g}", "--treft-on", on])
                                for on in ("prefix", "query", "all") for v in (1, 10, 30)],
}
CHOSEN = dict(treft=config.TREFT_LAMBDA, **{"kl-retain": config.KL_LAMBDA, "l2-init": config.L2_LAMBDA,
              "interleave": config.MIX, "kl-train": config.KL_TRAIN_LAMBDA, "lora-lr": config.LORA_LR})
# The alignment grid: each candidate's finetune rates, SFT and TReFT at lambda 10 at each.
ALIGN_LRS = dict(chats300lr3e4=(1e-4, 3e-4, 1e-3), chats100=(1e-4, 3e-4, 1e-3), r1b32=(1e-4, 2e-4),
                 r1b8=(1e-4, 2e-4), r2b32=(1e-4, 2e-4), r2b8=(1e-4, 2e-4), r2b8short=(1e-4, 2e-4),
                 rehearsed=(1e-4, 2e-4))
ALL = (*GRIDS, "alignments")


class Validation(Study):
    folder = "validation"

    def configure(self, args, p):
        unknown = [g for g in args.methods or () if g not in ALL]
        if unknown:
            p.error(f"unknown grid {unknown[0]!r}: use some of {', '.join(ALL)}")
        args.methods = list(args.methods or ALL)

    def runs_per_seed(self, args):
        return sum(len(GRIDS[g]) + 1 for g in args.methods if g in GRIDS) + (
            sum(1 + 2 * len(lrs) for lrs in ALIGN_LRS.values()) if "alignments" in args.methods else 0)

    def run_seed(self, seed, sweep, bar):
        args = sweep.args
        folder = os.path.join(args.out_dir, "validation")
        sweep.checkpoint("align", seed)        # the stock runs that the folder links to
        _, tok = sweep.world()

        def measure(grid, point, stage, flags):
            targs = runs.parse(["--stage", stage, "--seed", str(seed), *sweep.common, "--out-dir", folder, *flags])
            link(args.out_dir, folder, ["world", runs.run_name("pretrain", targs)]
                 + ([runs.run_name("align", targs)] if "--align" not in flags else []))
            path = sweep.checkpoint(stage, seed, ["--out-dir", folder, *flags])
            m = evaluate(sweep.load(path, tok), tok, "finance", "val", seed=0, n_answers=sweep.n_answers)
            m.pop("examples")
            sweep.record(kind="grid", seed=seed, grid=grid, point=point, flags=flags, metrics=m)
            bar.update()

        for grid in (g for g in args.methods if g in GRIDS):
            measure(grid, "sft", "finetune", [])
            for point, flags in GRIDS[grid]:
                measure(grid, point, "finetune", flags)
        if "alignments" in args.methods:
            for name, lrs in ALIGN_LRS.items():
                measure("alignments", f"{name}: aligned", "align", ["--align", name])
                for lr in lrs:
                    for method in ("sft", "treft10"):
                        flags = ["--align", name, "--lr", f"{lr:g}"] + (["--treft", "10"] if method != "sft" else [])
                        measure("alignments", f"{name}: {method} at lr {lr:g}", "finetune", flags)

    def summarize(self, rows, args):
        """grids[grid][point][measure]: mean, spread and per-seed values, points in the order they ran."""
        cells = {}
        for r in rows:
            if r["kind"] == "grid":
                cells.setdefault(r["grid"], {}).setdefault(r["point"], []).append(r["metrics"])
        return dict(split="val", chosen=CHOSEN, grids={g: {p: {k: stats([m[k] for m in ms]) for k in KEYS}
                                                           for p, ms in ps.items()} for g, ps in cells.items()})

    def markdown(self, summary):
        out = [f"# The validation grids\n\n{provenance(summary)} Seeds {summary['seeds']}; every cell is the mean "
               "± sd over the seeds, judged on the *validation* split. Bold: the best mean EM-F1 of the grid; "
               "'chosen' names the default the code uses (config.py).\n"]
        for grid, ps in summary["grids"].items():
            best = max((p for p in ps if p != "sft"), key=lambda p: ps[p]["em_f1"]["mean"], default=None)
            chosen = summary["chosen"].get(grid)
            out.append(f"\n## {grid}\n" + (f"\nchosen: {chosen:g}\n" if chosen is not None else ""))
            out.append(table(["point", "general", "in-domain", "EM-F1", "persona", "leakage", "general per seed"],
                             [[f"**{label(p)}**" if p == best else label(p)] + [
                                 f"{s[k]['mean']:.1f} ± {s[k]['sd']:.1f}" for k in ("general", "in_domain", "em_f1")]
                              + [f"{s['persona_transfer']['mean']:.2f}", f"{s['leakage']['mean']:.2f}",
                                 " / ".join(f"{x:.1f}" for x in s["general"]["per_seed"])] for p, s in ps.items()]))
        return "\n".join(out) + "\n"

    def headline(self, summary):
        return "\n".join(f"{g}: best EM-F1 at {max(ps, key=lambda p: ps[p]['em_f1']['mean'])}"
                         for g, ps in summary["grids"].items())


STUDY = Validation()
