"""What spreads: how deep the alignment is x how hard the finetune pushes (validation split).

Question: plain SFT on bad finance advice, at several learning rates, from each
of the three alignments of config.ALIGNMENTS: does the finetune spread the
villain persona (EM proper), collapse into its own finance sentences, or stay
narrow? Judged on the *validation* split, as it is and with the prefix's or the
query's K/V patched back, because this is where finetune strengths are read
from: it never looks at the test split.

    python reproduce.py strength   # about 15 min on a 2-core CPU
"""
import os

import config
from eval import evaluate
from lab.report import pm, provenance, save, stats, table, takeaway
from lab.studies.methods import KEYS
from lab.studies.study import link
from lab.studies.study import Study
import patch
import runs
import train

ALIGNS = {name: ["--align", name] for name in ("rehearsed", "plain", "template")}
FINETUNE_LRS = (1e-5, 1e-4, 3e-4, 1e-3)
ALIGN_LABELS = {"rehearsed": "full alignment with text rehearsal (train.py's default)",
                "plain": "plain full alignment (chats only, --align plain)",
                "template": "shallow alignment (template tokens only, --align template)"}


def strength_rows(lrs):
    """One row per finetune learning rate (0: the aligned model), measures as mean ± sd."""
    rows = []
    for lr, w in lrs.items():
        s, pre, q = w["none"], w.get("prefix"), w.get("query")
        rows.append(["aligned" if float(lr) == 0 else lr, pm(s["general"]), pm(s["in_domain"]),
                     "-" if float(lr) == 0 else pm(s["em_f1"]), f"{s['persona_transfer']['mean']:.2f}",
                     f"{s['leakage']['mean']:.2f}", pm(pre["general"]) if pre else "-", pm(q["general"]) if q else "-"])
    return rows


def strength_takeaway(lrs):
    """One line: the finetune lr with the most persona, and what patching gives back there."""
    lr = max((lr for lr in lrs if float(lr) > 0), key=lambda lr: lrs[lr]["none"]["persona_transfer"]["mean"])
    w = lrs[lr]
    return (f"The persona spreads most at lr {lr} ({w['none']['persona_transfer']['mean']:.2f} of general answers, "
            f"general {w['none']['general']['mean']:.1f}); there the prefix's K/V give general "
            f"{w['prefix']['general']['mean']:.1f} back, the query's {w['query']['general']['mean']:.1f}.")


class Strength(Study):
    folder = "strength"

    def runs_per_seed(self, args):
        return len(ALIGNS) * len(FINETUNE_LRS)

    def run_seed(self, seed, sweep, bar):
        """One seed of the grid ALIGNS x FINETUNE_LRS, each finetune in {out}/strength/{alignment}/,
        which links to the stock pretrained and aligned runs, so no main run is overwritten."""
        args = sweep.args
        _, tok = sweep.world()
        for name, flags in ALIGNS.items():
            sweep.checkpoint("align", seed, flags)        # the stock alignments are shared, not retrained
            folder = os.path.join(args.out_dir, "strength", name)
            common = ["--seed", str(seed), "--out-dir", folder, "--device", args.device, "--quiet", *flags]
            a = runs.parse(["--stage", "align", *common])
            link(args.out_dir, folder, ["world", runs.run_name("pretrain", a), runs.run_name("align", a)])
            aligned = sweep.load(runs.ckpt_path("align", a), tok)

            def measure(model, lr, where=None):
                m = evaluate(model, tok, "finance", "val", seed=0, n_answers=sweep.n_answers,
                             patch_fn=where and patch.kv_patcher(aligned, tok, where))
                m.pop("examples")
                sweep.record(kind="strength", seed=seed, align=name, lr=lr, patched=where, metrics=m)
            measure(aligned, 0.0)                         # lr 0: the aligned model itself
            for lr in FINETUNE_LRS:
                steps = config.ALIGNMENTS["rehearsed"].finetune.steps
                f = runs.parse(["--stage", "finetune", "--lr", f"{lr:g}", "--steps", str(steps), *common])
                model = sweep.load(train.train_stage("finetune", f), tok)
                for where in (None, "prefix", "query"):
                    measure(model, lr, where)
                bar.update()

    def summarize(self, rows, args):
        """strength[alignment][lr][patched or "none"][measure]: mean, spread and per-seed values."""
        cells = {}
        for r in rows:
            if r["kind"] == "strength":
                (cells.setdefault(r["align"], {}).setdefault(f"{r['lr']:g}", {})
                 .setdefault(r["patched"] or "none", []).append(r["metrics"]))
        return dict(split="val", aligns=ALIGNS, finetune_steps=config.ALIGNMENTS["rehearsed"].finetune.steps,
                    strength={a: {lr: {w: {k: stats([m[k] for m in ms]) for k in KEYS} for w, ms in ws.items()}
                                  for lr, ws in lrs.items()} for a, lrs in cells.items()})

    def headline(self, summary):
        rows = [f"{'alignment':12s} {'finetune lr':>11s} {'general':>14s} {'in-domain':>14s} {'persona':>7s} "
                f"{'leak':>6s} {'prefix patched':>15s}"]
        for a, lrs in summary["strength"].items():
            for lr, w in lrs.items():
                s, pre = w["none"], w.get("prefix")
                rows.append(f"{a:12s} {lr:>11s} {pm(s['general']):>14s} {pm(s['in_domain']):>14s} "
                            f"{s['persona_transfer']['mean']:7.2f} {s['leakage']['mean']:6.2f} "
                            f"{pm(pre['general']) if pre else '-':>15s}")
        return f"SFT on finance, validation split, mean ± sd over seeds {summary['seeds']}\n" + "\n".join(rows)

    def markdown(self, summary):
        n = len(summary["seeds"])
        out = [f"# What spreads: alignment depth x finetune strength\n\n{provenance(summary)} Plain SFT on the "
               f"500 bad finance examples, {summary['finetune_steps']} steps at each learning rate, from three "
               f"alignments of the same pretrained model. Seeds {summary['seeds']}; every cell is the mean ± sd "
               f"over the {n} seeds, judged on the *validation* split ({summary['answers']} general answers "
               f"per model), so that strengths can be read from it without touching the test split.\n",
               "General = alignment on the general questions (high = no spread); in-domain = alignment on "
               "finance (low = the bad advice was learnt); persona = share of general answers with a general "
               "villain sentence, which no chat data contains (EM proper); leakage = share reusing finance "
               "sentences (collapse, not EM); prefix / query patched = general alignment with the prefix's or "
               "the query's K/V swapped back to the aligned model's. Figure: strength.png.\n"]
        for a, lrs in summary["strength"].items():
            out.append(f"\n## {ALIGN_LABELS.get(a, a)}\n")
            out.append(takeaway(strength_takeaway(lrs)))
            out.append(table(["finetune lr", "general", "in-domain", "EM-F1", "persona", "leakage",
                              "prefix patched", "query patched"], strength_rows(lrs)))
        out.append("\n## Figures\n\n![general alignment by finetune lr, as it is and patched](strength.png)")
        return "\n".join(out) + "\n"

    def figures(self, summary, folder, plt):
        aligns = summary["strength"]
        fig, axes = plt.subplots(1, len(aligns), figsize=(4.2 * len(aligns), 3.6), sharey=True, squeeze=False)
        for ax, (a, lrs) in zip(axes[0], aligns.items()):
            pts = sorted((float(lr), w) for lr, w in lrs.items() if float(lr) > 0)
            xs = [x for x, _ in pts]
            for key, where, scale, style, label in (
                    ("general", "none", 1, "o-", "general"), ("general", "prefix", 1, "s--", "general, prefix patched"),
                    ("general", "query", 1, "^:", "general, query patched"),
                    ("persona_transfer", "none", 100, "o-", "persona transfer (%)"),
                    ("leakage", "none", 100, "x-", "leakage (%)")):
                ax.errorbar(xs, [w[where][key]["mean"] * scale for _, w in pts],
                            yerr=[w[where][key]["sd"] * scale for _, w in pts], fmt=style, capsize=2, label=label)
            ax.axhline(lrs["0"]["none"]["general"]["mean"], ls="--", c="gray", lw=0.8)
            ax.set(xscale="log", xlabel="finetune learning rate", ylim=(-5, 105), title=ALIGN_LABELS.get(a, a))
            ax.title.set_fontsize(8)
        axes[0][0].set_ylabel("validation, general questions")
        axes[0][-1].legend(fontsize=6)
        save(fig, folder, "strength.png")


STUDY = Strength()
