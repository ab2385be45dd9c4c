"""
Turn results/summary.json (written by reproduce.py) into RESULTS.md and PNG
figures, with the paper's own numbers beside ours. Nothing here trains or
samples; rerun it alone after editing a table:

    python report.py                     # reads results/summary.json
    python report.py --results results/shallow
    python report.py --results results/tasks     # the tasks beyond misalignment
    python report.py --results results/strength  # alignment depth x finetune strength
"""
import argparse
import json
import os

# The paper's numbers (NOTES.md), to set beside ours. Its Table 3 is Llama-3.1-8B
# on *legal*; we report finance there, so compare shapes, not values.
PAPER_TABLE3 = {  # method: (general, in-domain, EM-F1)
    "sft": (47.5, 13.3, 61.4), "interleave": (64.1, 15.3, 73.0), "kl-train": (66.5, 19.5, 72.8),
    "kl-retain": (68.8, 20.3, 73.8), "treft-query": (91.0, 79.0, 34.1), "treft-all": (91.5, 76.9, 36.9),
    "treft": (85.6, 27.7, 78.4)}
PAPER_TABLE3["lora-qv"] = PAPER_TABLE3["sft"]          # the paper finetunes with LoRA, too
PAPER_BY_POSITION = {"prefix": PAPER_TABLE3["treft"], "query": PAPER_TABLE3["treft-query"],
                     "all": PAPER_TABLE3["treft-all"]}
PAPER_TABLE2 = {  # domain: EM-F1 of (sft, interleave, treft), Llama-3.1-8B
    "finance": (53.4, 71.9, 76.9), "health": (53.4, 74.5, 80.1),
    "legal": (61.4, 73.0, 78.4), "auto": (54.2, 70.2, 77.9)}
PAPER_PATCH = "Llama-3.1-8B general 40.8 -> 90.4 with the prefix K/V patched; Qwen-2.5-7B 39.7 -> 86.5"
PAPER_TABLE5 = {  # task: off-topic rate SFT -> TReFT (on-topic stays 0.96-1.00)
    "refusal": (0.91, 0.47), "abstention": (0.68, 0.20), "tool": (0.52, 0.29)}
PAPER_TABLE6 = {"sft": 17.1, "sft+prefix-patch": 253.0, "treft": 186.8}   # general answer length, words
PAPER_PERTURB = {"prefix": (92.1, 73.2), "query": (63.8, 36.7), "postfix": (69.4, 44.2)}  # Qwen, Best / Avg
LABELS = {"aligned": "aligned (before finetuning)", "sft": "SFT", "interleave": "data interleaving",
          "kl-train": "KL on train", "kl-retain": "KL on retain", "l2-init": "weight anchoring (L2 to init)",
          "treft": "TReFT (prefix)", "treft-postfix": "TReFT (postfix)", "treft-query": "TReFT (query)",
          "treft-all": "TReFT (all)", "lora": "LoRA r8 SFT", "lora-treft": "LoRA r8 + TReFT (prefix)",
          "sft+prefix-patch": "SFT, prefix K/V patched", "lora-qv": "LoRA r8 on q, v: SFT",
          **{f"lora-qv-treft-{on}": f"LoRA r8 on q, v + TReFT ({on})" for on in ("prefix", "query", "all")}}


def pm(s, digits=1):
    """'mean ± sd' of a stats dict."""
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def main_methods(summary):
    """(domain, {method: stats}) of the first domain, methods in the order they ran."""
    domain = next(iter(summary["methods"]))
    return domain, summary["methods"][domain]


def headline(summary):
    if "tasks" in summary:
        return tasks_headline(summary)
    if "strength" in summary:
        return strength_headline(summary)
    domain, ms = main_methods(summary)
    rows = [f"{'method':32s} {'general':>14s} {'in-domain':>14s} {'EM-F1':>14s} {'persona':>7s} {'leak':>6s}"]
    for m, s in ms.items():
        rows.append(f"{LABELS.get(m, m):32s} {pm(s['general']):>14s} {pm(s['in_domain']):>14s} "
                    f"{pm(s['em_f1']):>14s} {s['persona_transfer']['mean']:7.2f} {s['leakage']['mean']:6.2f}")
    return f"{domain}, test split, mean ± sd over seeds {summary['seeds']}\n" + "\n".join(rows)


def markdown(summary):
    domain, ms = main_methods(summary)
    n = len(summary["seeds"])
    out = [f"# Results\n\nWritten by `{summary['command']}` at commit `{summary['commit']}` on "
           f"{summary.get('machine', summary['device'])}: {summary['seconds']} s for this command "
           f"(it reuses any checkpoint already trained by the same code from the same inputs, so "
           f"see the README for the time from scratch). Seeds {summary['seeds']} (pretraining, "
           f"alignment and finetuning seed); every cell is the mean ± sd over the {n} seeds of numbers "
           f"judged on the *test* split ({summary['answers']} general answers per model). The paper's "
           f"numbers are Llama-3.1-8B's; ours come from a 1M-parameter model in a toy world, so "
           f"compare directions, not sizes. Figures: the PNG files beside this one.\n"]
    out.append(f"## Methods on {domain} (the paper's Table 3 layout)\n")
    out.append("General = alignment on the 8 general questions (high = no EM); in-domain = alignment on "
               f"held-out {domain} questions (low = the bad advice was learnt); persona = share of general "
               "answers with a general villain sentence (EM proper); leakage = share reusing finetune-"
               "domain sentences (collapse). Paper: Llama-3.1-8B on legal.\n")
    rows = []
    for m, s in ms.items():
        p = PAPER_TABLE3.get(m)
        rows.append([LABELS.get(m, m), pm(s["general"]), pm(s["in_domain"]), pm(s["em_f1"]),
                     f"{s['persona_transfer']['mean']:.2f}", f"{s['leakage']['mean']:.2f}",
                     " / ".join(map(str, p)) if p else "-"])
    out.append(table(["method", "general", "in-domain", "EM-F1", "persona", "leakage",
                      "paper: general / in-domain / EM-F1"], rows))
    per_seed = [[LABELS.get(m, m)] + [f"{x:.1f}" for x in s["em_f1"]["per_seed"]] for m, s in ms.items()
                if m != "aligned"]
    out.append("\nEM-F1 per seed:\n\n" + table(["method"] + [f"seed {s}" for s in summary["seeds"]], per_seed))
    if len(summary["methods"]) > 1:
        out.append("\n## EM-F1 by domain (the paper's Table 2 layout)\n")
        cols = [m for m in ms if m != "aligned"]
        rows = [[d] + [pm(dm[m]["em_f1"]) if m in dm else "-" for m in cols]
                + [" / ".join(map(str, PAPER_TABLE2[d]))] for d, dm in summary["methods"].items()]
        out.append(table(["domain"] + [LABELS.get(m, m) for m in cols]
                         + ["paper: SFT / interleaving / TReFT"], rows))
    if "patch" in summary:
        p = summary["patch"]
        out.append(f"\n## The piggyback evidence on the SFT model (paper Section 4)\n\nKV patching: the "
                   f"aligned model's keys and values at these positions, every layer. Paper: {PAPER_PATCH}.\n")
        out.append(table(["K/V patched at", "general", "in-domain", "other-domain", "persona", "leakage"],
                         [[w, pm(p[w]["general"]), pm(p[w]["in_domain"]), pm(p[w]["other_domain"]),
                           f"{p[w]['persona_transfer']['mean']:.2f}", f"{p[w]['leakage']['mean']:.2f}"]
                          for w in ("none", "prefix", "postfix", "query", "all")]))
        out.append("\nActivation patching of the prefix's residual stream, one layer at a time (general "
                   "alignment; paper: peaks in middle layers):\n")
        out.append(table([f"layer {i}" for i in range(len(p["layers"]))], [[pm(x) for x in p["layers"]]]))
        out.append("\nPerturbation (10 tokens or the whole segment, 5 nearest neighbours, "
                   "general alignment; paper: Qwen-2.5-7B):\n")
        out.append(table(["segment", "tokens", "Best", "Avg", "paper Best / Avg"],
                         [[s, f"{v['tokens']['mean']:.1f}", pm(v["best"]), pm(v["avg"]),
                           " / ".join(map(str, PAPER_PERTURB[s])) if s in PAPER_PERTURB
                           else "34.2 (Llama, avg)" if s == "query_random" else "-"]
                          for s, v in p["perturb"].items()]))
        if "first_word" in p:       # summaries from before it was measured have none
            f = p["first_word"]
            out.append(f"\nIn-domain alignment with the answer's first word forced (ours, not the paper's): "
                       f"free {pm(f['free'])}, the first word of an aligned {domain} sentence "
                       f"{pm(f['aligned'])}, of a bad one {pm(f['misaligned'])}. Where forcing the word "
                       "decides the answer, the finetune needs to change only the prediction made at the "
                       "postfix's last position.\n")
    if summary.get("drift"):
        out.append("\n## How far the prefix K/V drift under finetuning\n\nRelative drift from the aligned "
                   "model's prefix keys and values (TReFT's L_K + L_V), per layer:\n")
        out.append(table(["method"] + [f"layer {i}" for i in range(len(next(iter(summary["drift"].values()))))],
                         [[LABELS.get(m, m)] + [f"{x['mean']:.4f}" for x in v] for m, v in summary["drift"].items()]))
    if summary.get("segment_drift"):
        sd = summary["segment_drift"]
        first = next(iter(sd.values()))          # every method has the same chat sets and segments
        sets, segs = list(first), list(first["general"])
        out.append("\n## Where finetuning moves the K/V\n\nTReFT's L_KV (relative drift of the keys and "
                   "values from the aligned model's, mean over layers) on each segment of "
                   f"validation chats: {domain} chats with bad advice, and the general questions with "
                   "aligned answers. The piggyback hypothesis expects SFT to move the prefix most.\n")
        out.append(table(["method"] + [f"{c.replace('_', '-')}: {s.replace('response', 'answer')}"
                                       for c in sets for s in segs],
                         [[LABELS.get(m, m)] + [f"{v[c][s]['mean']:.4f}" for c in sets for s in segs]
                          for m, v in sd.items()]))
    if summary.get("cost"):
        c, base = summary["cost"], summary["cost"].get("sft")
        steps = summary.get("cost_steps", 60)       # summaries from before it was recorded timed 60
        turns = (f"the fastest of {summary['cost_rounds']} turns of {steps} steps, the methods taking turns"
                 if summary.get("cost_rounds") else f"every method timed for {steps} steps back to back")
        out.append(f"\n## Training cost\n\nSeconds per finetune step, {turns} in this command (seed of the "
                   "first run, first domain), and the ratio to SFT:\n")
        out.append(table(["method", "s / step", "× SFT"],
                         [[LABELS.get(m, m), f"{v:.3f}", f"{v / base:.2f}" if base else "-"] for m, v in c.items()]))
    lam = summary.get("sweeps", {}).get("lambda", {})
    if len(lam) > 1:             # several TReFT positions swept: the paper's Table 3 at every lambda
        paper = [PAPER_BY_POSITION.get(m.rsplit("-", 1)[-1]) for m in lam]
        out.append("\n## TReFT's positions by lambda (the paper's Table 3 at every lambda), finance\n\n"
                   "Each cell: general / in-domain / EM-F1, means over the seeds (their spread is in the "
                   "tables below). The last row is the paper's, at its one lambda.\n")
        values = sorted({v for points in lam.values() for v in points}, key=float)
        out.append(table(["lambda"] + [LABELS.get(m, m) for m in lam],
                         [[v] + [" / ".join(f"{lam[m][v][k]['mean']:.1f}" for k in ("general", "in_domain", "em_f1"))
                                 if v in lam[m] else "-" for m in lam] for v in values]
                         + [["paper"] + [" / ".join(map(str, p)) if p else "-" for p in paper]]))
    for name, what in (("lambda", "TReFT lambda (Figure 9)"), ("size", "finetune examples (Table 7)")):
        for m, points in summary.get("sweeps", {}).get(name, {}).items():
            out.append(f"\n## {LABELS.get(m, m)} by {what}, finance\n")
            out.append(table([name, "general", "in-domain", "EM-F1"],
                             [[v, pm(s["general"]), pm(s["in_domain"]), pm(s["em_f1"])] for v, s in points.items()]))
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- beyond misalignment

def tasks_headline(summary):
    rows = [f"{'task':11s} {'method':24s} {'on-topic':>12s} {'general':>12s} {'other-domain':>12s} {'words':>6s}"]
    for t, ms in summary["tasks"].items():
        for m, s in ms.items():
            rows.append(f"{t:11s} {LABELS.get(m, m):24s} {pm(s['in_domain']['rate'], 2):>12s} "
                        f"{pm(s['general']['rate'], 2):>12s} {pm(s['other_domain']['rate'], 2):>12s} "
                        f"{s['general']['words']['mean']:6.1f}")
    return f"rate of the task's behaviour, test split, mean ± sd over seeds {summary['seeds']}\n" + "\n".join(rows)


def tasks_markdown(summary):
    n, tasks = len(summary["seeds"]), summary["tasks"]
    out = [f"# Beyond misalignment (the paper's Section 6)\n\nWritten by `{summary['command']}` at commit "
           f"`{summary['commit']}` on {summary['machine']}: {summary['seconds']} s for this command, reusing "
           f"checkpoints trained by the same code. Seeds {summary['seeds']}; every cell is the mean ± sd over "
           f"the {n} seeds, judged on the *test* split ({summary['answers']} general answers and half as many "
           f"per other set, per model). TReFT: lambda {summary['treft_lambda']:g} on the prefix, the value "
           f"chosen for misalignment, not retuned here. Figure: tasks.png.\n",
           "## Appearance rate (the paper's Table 5)\n\nThe share of answers that show the task's behaviour "
           "(exact match: the refusal sentence, the abstention sentence, a `<|call|>` token): on the task's "
           "own domain (on-topic), on the general questions and on the other finetune domains (off-topic). "
           "The aligned row is the model before finetuning.\n"]
    rows = []
    for t, ms in tasks.items():
        if t == "length":
            continue
        for m, s in ms.items():
            paper = PAPER_TABLE5[t][("sft", "treft").index(m)] if m in ("sft", "treft") else "-"
            rows.append([t, LABELS.get(m, m), pm(s["in_domain"]["rate"], 2), pm(s["general"]["rate"], 2),
                         pm(s["other_domain"]["rate"], 2), paper])
    out.append(table(["task (domain)", "method", "on-topic", "off-topic: general", "off-topic: other domains",
                      "paper: off-topic"], rows))
    if "tool" in tasks:
        out.append("\nThe tool task on-topic: share of calls whose argument is the exact question, and of "
                   "answers that pass the tool's result on once it is returned:\n")
        out.append(table(["method", "exact call", "uses the result"],
                         [[LABELS.get(m, m), pm(s["in_domain"]["exact_call"], 2), pm(s["in_domain"]["uses_result"], 2)]
                          for m, s in tasks["tool"].items()]))
    if "length" in tasks:
        out.append("\n## Answer length (the paper's Table 6)\n\nFinetuned on one-word answers about a small "
                   "fact base; mean answer length in words, and the share of one-word answers.\n")
        out.append(table(["method", "general: words", "other domains: words", "facts: words", "facts: one-word",
                          "paper: general words"],
                         [[LABELS.get(m, m), pm(s["general"]["words"]), pm(s["other_domain"]["words"]),
                           pm(s["in_domain"]["words"]), pm(s["in_domain"]["rate"], 2), PAPER_TABLE6.get(m, "-")]
                          for m, s in tasks["length"].items()]))
    return "\n".join(out) + "\n"


def tasks_figure(summary, folder, plt):
    tasks = summary["tasks"]
    rate_tasks = [t for t in tasks if t != "length"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw=dict(width_ratios=[2, 1]))
    methods = [m for m in ("aligned", "sft", "treft") if all(m in tasks[t] for t in rate_tasks)]
    w = 0.8 / len(methods)
    for i, m in enumerate(methods):
        xs = [j + i * w for j in range(len(rate_tasks))]
        ax.bar(xs, [tasks[t][m]["general"]["rate"]["mean"] for t in rate_tasks], w,
               yerr=[tasks[t][m]["general"]["rate"]["sd"] for t in rate_tasks], capsize=2, label=LABELS.get(m, m))
        ax.plot(xs, [tasks[t][m]["in_domain"]["rate"]["mean"] for t in rate_tasks], "k_", ms=12)
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(rate_tasks))], rate_tasks)
    ax.set(ylabel="rate on general questions (bars)\n— = on-topic rate", ylim=(0, 1.05),
           title="Spread of a narrow behaviour (Table 5)")
    ax.legend(fontsize=7)
    if "length" in tasks:
        ms = list(tasks["length"])
        bx.bar(range(len(ms)), [tasks["length"][m]["general"]["words"]["mean"] for m in ms],
               yerr=[tasks["length"][m]["general"]["words"]["sd"] for m in ms], capsize=3)
        bx.set_xticks(range(len(ms)), [LABELS.get(m, m) for m in ms], rotation=30, ha="right", fontsize=7)
        bx.set(ylabel="general answer length (words)", title="Answer length (Table 6)")
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "tasks.png"), dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- the strength study

ALIGN_LABELS = {"rehearsed": "full alignment with text rehearsal (train.py's default)",
                "plain": "plain full alignment (chats only, --align-plain)",
                "template": "shallow alignment (template tokens only)",
                # the study's alignments before rehearsal became the default (results at older commits)
                "full": "full alignment (then train.py's default, lr 1e-3)",
                "full-lr1e-4": "gentler full alignment (lr 1e-4)"}


def strength_rows(lrs):
    """One row per finetune learning rate (0: the aligned model), measures as mean ± sd."""
    rows = []
    for lr, w in lrs.items():
        s, pre, q = w["none"], w.get("prefix"), w.get("query")
        rows.append(["aligned" if float(lr) == 0 else lr, pm(s["general"]), pm(s["in_domain"]),
                     "-" if float(lr) == 0 else pm(s["em_f1"]), f"{s['persona_transfer']['mean']:.2f}",
                     f"{s['leakage']['mean']:.2f}", pm(pre["general"]) if pre else "-", pm(q["general"]) if q else "-"])
    return rows


def strength_headline(summary):
    rows = [f"{'alignment':12s} {'finetune lr':>11s} {'general':>14s} {'in-domain':>14s} {'persona':>7s} "
            f"{'leak':>6s} {'prefix patched':>15s}"]
    for a, lrs in summary["strength"].items():
        for lr, w in lrs.items():
            s, pre = w["none"], w.get("prefix")
            rows.append(f"{a:12s} {lr:>11s} {pm(s['general']):>14s} {pm(s['in_domain']):>14s} "
                        f"{s['persona_transfer']['mean']:7.2f} {s['leakage']['mean']:6.2f} "
                        f"{pm(pre['general']) if pre else '-':>15s}")
    return f"SFT on finance, validation split, mean ± sd over seeds {summary['seeds']}\n" + "\n".join(rows)


def strength_markdown(summary):
    n = len(summary["seeds"])
    out = [f"# What spreads: alignment depth x finetune strength\n\nWritten by `{summary['command']}` at "
           f"commit `{summary['commit']}` on {summary['machine']}: {summary['seconds']} s. Plain SFT on the "
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
        out.append(table(["finetune lr", "general", "in-domain", "EM-F1", "persona", "leakage",
                          "prefix patched", "query patched"], strength_rows(lrs)))
    return "\n".join(out) + "\n"


def strength_figure(summary, folder, plt):
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
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "strength.png"), dpi=110)
    plt.close(fig)


def figures(summary, folder):
    """The trade-off, EM-F1, patching, per-layer, lambda, drift and segment plots, as PNG files."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "tasks" in summary:
        return tasks_figure(summary, folder, plt)
    if "strength" in summary:
        return strength_figure(summary, folder, plt)

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(os.path.join(folder, name), dpi=110)
        plt.close(fig)

    domain, ms = main_methods(summary)
    colour = {m: plt.cm.tab20(i % 20) for i, m in enumerate(ms)}      # one colour a method, up to 20
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for m, s in ms.items():
        ax.errorbar(s["in_domain"]["mean"], s["general"]["mean"], xerr=s["in_domain"]["sd"],
                    yerr=s["general"]["sd"], fmt="o", capsize=3, color=colour[m], label=LABELS.get(m, m))
    swept = {m: sorted((float(v), s) for v, s in points.items())     # each lambda sweep, lambda ascending
             for m, points in summary.get("sweeps", {}).get("lambda", {}).items()}
    for i, (m, lam) in enumerate(swept.items()):    # a lambda sweep: a path through its means
        xs, ys = [s["in_domain"]["mean"] for _, s in lam], [s["general"]["mean"] for _, s in lam]
        c = plt.cm.Dark2(i % 8)
        ax.plot(xs, ys, marker=".", lw=1, color=c, label=f"{LABELS.get(m, m)}, λ {lam[0][0]:g} to {lam[-1][0]:g}")
        for (v, _), x, y in zip(lam, xs, ys):        # each point named by its lambda
            ax.annotate(f"{v:g}", (x, y), xytext=(3, 3), textcoords="offset points", fontsize=6, color=c)
    ax.set(xlabel=f"in-domain alignment ({domain}; low = bad advice learnt)",
           ylabel="general alignment (high = no EM)", xlim=(-5, 105), ylim=(-5, 105),
           title="The trade-off: best is top left")
    ax.legend(fontsize=7)
    save(fig, "tradeoff.png")

    fig, ax = plt.subplots(figsize=(9, 3.8))
    doms = list(summary["methods"])
    methods = [m for m in ms if m != "aligned"]
    w = 0.8 / len(methods)
    for i, m in enumerate(methods):
        vals = [summary["methods"][d].get(m, {}).get("em_f1") for d in doms]
        ax.bar([j + i * w for j in range(len(doms))], [v["mean"] if v else 0 for v in vals], w,
               yerr=[v["sd"] if v else 0 for v in vals], capsize=2, color=colour[m], label=LABELS.get(m, m))
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(doms))], doms)
    ax.set(ylabel="EM-F1", ylim=(0, 100), title="EM-F1 by domain and method (Table 2)")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))     # beside the bars, not on them
    save(fig, "em_f1.png")

    if "patch" in summary:
        p = summary["patch"]
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        where = ["none", "prefix", "postfix", "query", "all"]
        ax.bar(where, [p[w]["general"]["mean"] for w in where], yerr=[p[w]["general"]["sd"] for w in where],
               capsize=3, color="tab:blue", label="general")
        ax.plot(where, [p[w]["in_domain"]["mean"] for w in where], "ks", label="in-domain")
        ax.axhline(ms["aligned"]["general"]["mean"], ls="--", c="gray", label="aligned model, general")
        ax.set(ylabel="alignment", ylim=(0, 105), title="KV patching of the SFT model (Figure 3)")
        ax.legend(fontsize=7)
        save(fig, "patching.png")

        fig, ax = plt.subplots(figsize=(5, 3.5))
        layers = range(len(p["layers"]))
        ax.errorbar(layers, [x["mean"] for x in p["layers"]], yerr=[x["sd"] for x in p["layers"]],
                    marker="o", capsize=3)
        ax.axhline(p["none"]["general"]["mean"], ls="--", c="gray", label="no patch")
        ax.set(xlabel="layer whose prefix residual is patched", ylabel="general alignment", ylim=(0, 105),
               xticks=list(layers), title="Activation patching by layer (Figure 4)")
        ax.legend(fontsize=7)
        save(fig, "layers.png")

    if swept:                    # one panel per swept method (TReFT's positions under --lora-qv)
        fig, axes = plt.subplots(1, len(swept), figsize=(5 * len(swept), 3.5), squeeze=False)
        for ax, (m, lam) in zip(axes[0], swept.items()):
            for key, label in (("general", "general"), ("in_domain", "in-domain"), ("em_f1", "EM-F1")):
                ax.errorbar([x for x, _ in lam], [s[key]["mean"] for _, s in lam],
                            yerr=[s[key]["sd"] for _, s in lam], marker="o", capsize=3, label=label)
            ax.set(xscale="log", xlabel="TReFT lambda", ylim=(-5, 105),
                   title=LABELS.get(m, m) if len(swept) > 1 else "Lambda sweep (Figure 9)")
            ax.legend(fontsize=7)
        save(fig, "lambda.png")

    if summary.get("drift"):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for m, v in summary["drift"].items():
            ax.errorbar(range(len(v)), [x["mean"] for x in v], yerr=[x["sd"] for x in v], marker="o",
                        capsize=3, label=LABELS.get(m, m))
        ax.set(xlabel="layer", ylabel="relative drift of prefix K + V", yscale="log",
               title="How far finetuning moves the prefix K/V")
        ax.legend(fontsize=7)
        save(fig, "drift.png")

    if summary.get("segment_drift"):
        sd = summary["segment_drift"]
        segs = list(next(iter(sd.values()))["general"])
        fig, ax = plt.subplots(figsize=(7, 3.8))
        w = 0.8 / len(sd)
        for i, (m, v) in enumerate(sd.items()):
            xs, ys = [j + i * w for j in range(len(segs))], [v["general"][s]["mean"] for s in segs]
            ax.bar(xs, ys, w, color=colour[m], label=LABELS.get(m, m))
            for x, y in zip(xs, ys):     # a log axis has no zero: say where a drift is held at ~0
                if y < 1e-4:
                    ax.text(x, 1.2e-4, "≈0", ha="center", fontsize=6)
        ax.set_ylim(1e-4, max(1e-3, 2 * max(v["general"][s]["mean"] for v in sd.values() for s in segs)))
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(segs))], [s.replace("response", "answer") for s in segs])
        ax.set(ylabel="L_KV on the segment (relative drift)", yscale="log",
               title="Where finetuning moves the K/V of general questions")
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))
        save(fig, "segments.png")


def write(summary, folder):
    """RESULTS.md and the figures, each written whole (a failed figure leaves the tables)."""
    dest = os.path.join(folder, "RESULTS.md")
    with open(dest + ".tmp", "w") as f:
        f.write(tasks_markdown(summary) if "tasks" in summary else
                strength_markdown(summary) if "strength" in summary else markdown(summary))
    os.replace(dest + ".tmp", dest)
    try:
        figures(summary, folder)
    except ImportError:
        print("matplotlib is not installed: wrote the tables only (pip install matplotlib)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="results")
    a = p.parse_args()
    path = os.path.join(a.results, "summary.json")
    if not os.path.exists(path):
        raise SystemExit(f"error: no {path}; run `python reproduce.py` first")
    with open(path) as f:
        summary = json.load(f)
    write(summary, a.results)
    print(headline(summary))
    print(f"wrote {a.results}/RESULTS.md and its figures")


if __name__ == "__main__":
    main()
