"""
Shared helpers that turn a study's summary.json into RESULTS.md and PNG figures,
with the paper's own numbers beside ours: table and figure pieces that the
study files of studies/ put together. Nothing here trains, samples or imports
torch. To rewrite one study's page from its summary: python reproduce.py NAME --report
"""
import os
import re
import statistics

from common import atomic_write

# The paper's numbers (NOTES.md), to set beside ours. Its Table 3 is Llama-3.1-8B
# on *legal*; we report finance there, so compare shapes, not values.
PAPER_TABLE3 = {  # method: (general, in-domain, EM-F1)
    "sft": (47.5, 13.3, 61.4), "interleave-paper": (64.1, 15.3, 73.0), "kl-train": (66.5, 19.5, 72.8),
    "kl-retain": (68.8, 20.3, 73.8), "treft-query": (91.0, 79.0, 34.1), "treft-all": (91.5, 76.9, 36.9),
    "treft": (85.6, 27.7, 78.4)}
PAPER_TABLE3["lora-qv"] = PAPER_TABLE3["sft"]          # the paper finetunes with LoRA, too
PAPER_TABLE3["interleave"] = PAPER_TABLE3["interleave-paper"]    # its one interleaving row, at 20% retain
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
          "interleave-paper": "data interleaving (the paper's share)",
          "kl-train": "KL on train", "kl-retain": "KL on retain", "l2-init": "weight anchoring (L2 to init)",
          "realign": "re-aligned afterwards", "treft": "TReFT (prefix)", "treft-postfix": "TReFT (postfix)", "treft-query": "TReFT (query)",
          "treft-all": "TReFT (all)",
          **{f"treft-{on}-frozen": f"TReFT ({on}), last block frozen" for on in ("query", "all")},
          **{f"treft-{on}-hold": f"TReFT ({on}), last block's output held" for on in ("query", "all")},
          "hold": "last block's output held (no TReFT)",
          "inoculation": "inoculation (finetuned under a preamble naming the behaviour)",
          "neutral-preamble": "a neutral preamble (the control)", "inoculation-treft": "inoculation + TReFT (prefix)",
          "lora": "LoRA r8 SFT", "lora-treft": "LoRA r8 + TReFT (prefix)",
          "sft+prefix-patch": "SFT, prefix K/V patched", "lora-qv": "LoRA r8 on q, v: SFT",
          **{f"lora-qv-treft-{on}": f"LoRA r8 on q, v + TReFT ({on})" for on in ("prefix", "query", "all")}}



def stats(xs):
    """Mean, spread and the per-seed values of one measure."""
    return dict(mean=round(statistics.mean(xs), 4), sd=round(statistics.stdev(xs), 4) if len(xs) > 1 else 0.0,
                per_seed=xs)


def pm(s, digits=1):
    """'mean ± sd' of a stats dict."""
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


# The flags whose value is a method's strength, and how a label says it. Interleaving's share
# is said as the paper counts it: the part of the training data that is aligned retain chats.
STRENGTH = {"--treft": "λ {}".format, "--kl": "λ {}".format, "--l2-init": "λ {}".format,
            "--interleave": lambda v: f"{float(v):.0%} retain data"}
# Names for the patch and perturbation rows, which summary.json keys more tersely.
ROWS = {"none": "nothing", "all": "all prompt positions",
        "postfix": "postfix (reference at its own positions)",
        "postfix_shifted": "postfix (reference right after the prefix, as an empty query puts it)", "query_random": "query, random tokens",
        "rephrase": "the question reworded (no token touched)"}


def label(m, summary=None):
    """A method's name for a reader, with its strength when the summary records its flags:
    'TReFT (prefix), λ 100'."""
    flags = (summary or {}).get("config", {}).get("methods", {}).get(m) or []
    strength = [STRENGTH[f](v) for f, v in zip(flags, flags[1:]) if f in STRENGTH and not v.startswith("--")]
    return ", ".join([LABELS.get(m, m)] + strength)


def sig(x):
    """A small measure to two significant digits (a drift of 0.43, of 0.0031)."""
    return f"{x:.2g}"


def takeaway(text):
    return f"*{text}*\n"


def provenance(summary):
    """One sentence: which command, commit and machine wrote these numbers, and how long it took."""
    again = (f" Its summary was rebuilt from the same runs.jsonl at commit `{summary['summarized_at']}` "
             f"(`--resummarize`).") if "summarized_at" in summary else ""
    return (f"Written by `{summary['command']}` at commit `{summary['commit']}` on {summary['machine']} "
            f"(torch {summary['torch']}): {summary['seconds']} s for this command, reusing any checkpoint "
            f"already trained by the same code from the same inputs.{again}")


# ----------------------------------------------------------------------------- pages that quote a study

# README.md and docs/findings.md quote sections of the studies' RESULTS.md between two marker lines,
#     <!-- quote: main § Methods on finance (the paper's Table 3 layout) -->   ...   <!-- end quote -->
# (the name is a folder of results/: a study's, or one a study wrote for a --domain)
# and `python reproduce.py NAME --report` rewrites what is between them, so no number there is typed.
QUOTE = re.compile(r"(<!-- quote: (\w+) § (.+?) -->\n).*?(<!-- end quote -->)", re.S)
PAGES = ("README.md", os.path.join("docs", "findings.md"))


def section(markdown, heading):
    """The body of the section '## heading' of a page, up to the next section."""
    parts = re.split(r"^## ", markdown, flags=re.M)
    for p in parts[1:]:
        title, _, body = p.partition("\n")
        if title.strip() == heading:
            return body.strip()
    raise KeyError(f"no section '## {heading}' in the page")


def quoted(summary, markdown, heading, folder):
    """What a quote block holds: the section, then where it comes from (results/<folder>/)."""
    return (f"{section(markdown, heading)}\n\n*From `results/{folder}/summary.json`, written by "
            f"`{summary['command']}` at commit `{summary['commit']}` on {summary['machine']}, "
            f"seeds {', '.join(map(str, summary['seeds']))}, in {summary['seconds']} s.*")


def requote(text, page):
    """text with every quote block rewritten; page(results folder) -> (summary, its RESULTS.md markdown)."""
    def fill(m):
        summary, markdown = page(m.group(2))
        return m.group(1) + quoted(summary, markdown, m.group(3), m.group(2)) + "\n" + m.group(4)
    return QUOTE.sub(fill, text)


def write(summary, folder, markdown, figures):
    """RESULTS.md and the figures, each written whole (no matplotlib: the tables only)."""
    atomic_write(os.path.join(folder, "RESULTS.md"), markdown)
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: wrote the tables only (pip install matplotlib)")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figures(plt)


def save(fig, folder, name):
    """Write one figure as folder/name and free it."""
    fig.tight_layout()
    fig.savefig(os.path.join(folder, name), dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)


# ----------------------------------------------------------------------------- the finetune studies' tables

def main_methods(summary):
    """(domain, {method: stats}) of the first domain, methods in the order they ran."""
    domain = next(iter(summary["methods"]))
    return domain, summary["methods"][domain]


def headline(summary):
    domain, ms = main_methods(summary)
    rows = [f"{'method':40s} {'general':>14s} {'in-domain':>14s} {'EM-F1':>14s} {'persona':>7s} {'leak':>6s}"]
    for m, s in ms.items():
        rows.append(f"{label(m, summary):40s} {pm(s['general']):>14s} {pm(s['in_domain']):>14s} "
                    f"{pm(s['em_f1']):>14s} {s['persona_transfer']['mean']:7.2f} {s['leakage']['mean']:6.2f}")
    return f"{domain}, test split, mean ± sd over seeds {summary['seeds']}\n" + "\n".join(rows)


def intro(summary, title, note):
    n = len(summary["seeds"])
    return [f"# {title}\n\n{provenance(summary)} Seeds {summary['seeds']} (pretraining, alignment and "
            f"finetuning seed); every cell is the mean ± sd over the {n} seeds of numbers judged on the "
            f"*test* split ({summary['answers']} general answers per model). The paper's numbers are "
            f"Llama-3.1-8B's; ours come from a 1M-parameter model in a toy world, so compare directions, "
            f"not sizes. Figures: the PNG files beside this one.\n" + (f"\n{note}\n" if note else "")]


def methods_section(summary):
    domain, ms = main_methods(summary)
    out = [f"## Methods on {domain} (the paper's Table 3 layout)\n",
           "General = alignment on the 8 general questions (high = no EM); in-domain = alignment on "
           f"held-out {domain} questions (low = the bad advice was learnt); persona = share of general "
           "answers with a general villain sentence (EM proper); leakage = share reusing finetune-"
           "domain sentences (collapse). Paper: Llama-3.1-8B on legal.\n"]
    rows = [[label(m, summary), pm(s["general"]), pm(s["in_domain"]), pm(s["em_f1"]), f"{s['persona_transfer']['mean']:.2f}",
             f"{s['leakage']['mean']:.2f}", " / ".join(map(str, PAPER_TABLE3[m])) if m in PAPER_TABLE3 else "-"]
            for m, s in ms.items()]
    out.append(table(["method", "general", "in-domain", "EM-F1", "persona", "leakage",
                      "paper: general / in-domain / EM-F1"], rows))
    per_seed = [[label(m, summary)] + [f"{x:.1f}" for x in s["em_f1"]["per_seed"]] for m, s in ms.items() if m != "aligned"]
    out.append("\nEM-F1 per seed:\n\n" + table(["method"] + [f"seed {s}" for s in summary["seeds"]], per_seed))
    finetuned = {m: s for m, s in ms.items() if m != "aligned"}
    best = max(finetuned, key=lambda m: finetuned[m]["em_f1"]["mean"])
    line = f"Best mean EM-F1: {label(best, summary)} ({pm(finetuned[best]['em_f1'])})"
    if "sft" in ms and "aligned" in ms:
        line = (f"SFT learns the bad advice (in-domain {ms['aligned']['in_domain']['mean']:.1f} → "
                f"{ms['sft']['in_domain']['mean']:.1f}) and general alignment falls from "
                f"{ms['aligned']['general']['mean']:.1f} to {ms['sft']['general']['mean']:.1f}. " + line)
    out.insert(2, takeaway(line + "."))
    return out


def gated_section(summary):
    """The main table again, with the judge gated by coherence beside the plain judge."""
    _, ms = main_methods(summary)
    if "general_coherent" not in next(iter(ms.values())):
        return []
    rows = [[label(m, summary), pm(s["general"]), pm(s["general_coherent"]), f"{s['incoherent_general']['mean']:.2f}",
             pm(s["in_domain"]), pm(s["in_domain_coherent"]), f"{s['incoherent_in_domain']['mean']:.2f}",
             pm(s["em_f1"]), pm(s["em_f1_coherent"])] for m, s in ms.items()]
    moved = max(abs(s["em_f1_coherent"]["mean"] - s["em_f1"]["mean"]) for m, s in ms.items() if m != "aligned")
    return ["\n## The judge gated by coherence\n",
            takeaway(f"Judging coherent answers only moves a finetuned method's mean EM-F1 by at most {moved:.1f} points."),
            "An answer counts as coherent when at least half its words are in distinct bank sentences said "
            "exactly and at least half its matched sentences are of the question's domain (eval.py, "
            "`Judge.score`); the gated columns judge coherent answers only, and *incoherent* is the share "
            "left out.\n",
            table(["method", "general", "general, coherent", "incoherent", "in-domain", "in-domain, coherent",
                   "incoherent", "EM-F1", "EM-F1, coherent"], rows)]


def domains_section(summary):
    if len(summary["methods"]) < 2:
        return []
    _, ms = main_methods(summary)
    cols = [m for m in ms if m != "aligned"]
    rows = [[d] + [pm(dm[m]["em_f1"]) if m in dm else "-" for m in cols] + [" / ".join(map(str, PAPER_TABLE2[d]))]
            for d, dm in summary["methods"].items()]
    best = {d: max((m for m in cols if m in dm), key=lambda m: dm[m]["em_f1"]["mean"])
            for d, dm in summary["methods"].items()}
    return ["\n## EM-F1 by domain (the paper's Table 2 layout)\n",
            takeaway("Best mean EM-F1: " + "; ".join(f"{d}, {label(m)}" for d, m in best.items()) + "."),
            table(["domain"] + [label(m, summary) for m in cols] + ["paper: SFT / interleaving / TReFT"], rows)]


def patch_section(summary):
    if "patch" not in summary:
        return []
    p, (domain, ms) = summary["patch"], main_methods(summary)
    f = p["first_word"]
    aligned, none = ms.get("aligned", {}).get("general", {}).get("mean"), p["none"]["general"]["mean"]
    if aligned is not None and aligned > none:
        back = {w: 100 * (p[w]["general"]["mean"] - none) / (aligned - none) for w in ("prefix", "query", "postfix")}
        line = (f"Of the drop in general alignment from the aligned model's {aligned:.1f} to {none:.1f}, the "
                f"prefix's K/V give back {back['prefix']:.0f}%, the query's {back['query']:.0f}%, the postfix's "
                f"{back['postfix']:.0f}%.")
    else:
        line = f"The prefix's K/V give general {p['prefix']['general']['mean']:.1f}, the query's {p['query']['general']['mean']:.1f}, from {none:.1f}."
    return [
        "\n## The piggyback evidence on the SFT model (paper Section 4)\n",
        takeaway(line),
        f"KV patching: the aligned model's keys and values at these positions, every layer. Paper: {PAPER_PATCH}.\n",
        table(["K/V patched at", "general", "in-domain", "other-domain", "persona", "leakage"],
              [[("postfix (reference right after the prefix, as an empty query puts it)"    # before the fix
                 if w == "postfix" and "postfix_shifted" not in p else ROWS.get(w, w)), pm(p[w]["general"]), pm(p[w]["in_domain"]), pm(p[w]["other_domain"]),
                f"{p[w]['persona_transfer']['mean']:.2f}", f"{p[w]['leakage']['mean']:.2f}"]
               for w in ("none", "prefix", "postfix", "postfix_shifted", "query", "all") if w in p]),
        "\nActivation patching of the prefix's residual stream, one layer at a time (general "
        "alignment; paper: peaks in middle layers):\n",
        table([f"layer {i}" for i in range(len(p["layers"]))], [[pm(x) for x in p["layers"]]]),
        "\nPerturbation (10 tokens or the whole segment, 5 nearest neighbours, general alignment; "
        "paper: Qwen-2.5-7B):\n",
        table(["segment", "tokens", "Best", "Avg", "paper Best / Avg"],
              [[ROWS.get(s, s), f"{v['tokens']['mean']:.1f}", pm(v["best"]), pm(v["avg"]),
                " / ".join(map(str, PAPER_PERTURB[s])) if s in PAPER_PERTURB
                else "34.2 (Llama, avg)" if s == "query_random" else "-"] for s, v in p["perturb"].items()]),
        f"\nIn-domain alignment with the answer's first word forced (ours, not the paper's): free "
        f"{pm(f['free'])}, the first word of an aligned {domain} sentence {pm(f['aligned'])}, of a bad one "
        f"{pm(f['misaligned'])}. Where forcing the word decides the answer, the finetune needs to change "
        "only the prediction made at the postfix's last position.\n"] + after_opening(f, domain)


def after_opening(f, domain):
    """The openings world's forced word: after a random neutral opening, where its answers show their persona."""
    if "after_opening_free" not in f:
        return []
    return [f"After a neutral opening forced first (this world's answers all start with one): free "
            f"{pm(f['after_opening_free'])}, the first word of an aligned {domain} sentence after it "
            f"{pm(f['after_opening_aligned'])}, of a bad one {pm(f['after_opening_misaligned'])}.\n"]


def drift_section(summary):
    if not summary.get("drift"):
        return []
    d = summary["drift"]
    mean = {m: statistics.mean(x["mean"] for x in v) for m, v in d.items()}
    most, least = max(mean, key=mean.get), min(mean, key=mean.get)
    return ["\n## How far the prefix K/V drift under finetuning\n",
            takeaway(f"{label(most, summary)} moves the prefix's K/V most ({sig(mean[most])} on average over "
                     f"layers), {label(least, summary)} least ({sig(mean[least])})."),
            "Relative drift from the aligned model's prefix keys and values (TReFT's L_K + L_V), per layer, "
            "two significant digits:\n",
            table(["method"] + [f"layer {i}" for i in range(len(next(iter(d.values()))))],
                  [[label(m, summary)] + [sig(x["mean"]) for x in v] for m, v in d.items()])]


def segments_section(summary):
    if not summary.get("segment_drift"):
        return []
    sd, (domain, _) = summary["segment_drift"], main_methods(summary)
    first = next(iter(sd.values()))          # every method has the same chat sets and segments
    sets, segs = list(first), list(first["general"])
    some = "sft" if "sft" in sd else next(iter(sd))
    top = max(segs, key=lambda s: sd[some]["general"][s]["mean"])
    return ["\n## Where finetuning moves the K/V\n",
            takeaway(f"On the general questions {label(some, summary)} moves the {top.replace('response', 'answer')}'s "
                     f"K/V most ({sig(sd[some]['general'][top]['mean'])})."),
            "TReFT's L_KV (relative drift of the keys and values "
            "from the aligned model's, mean over layers) on each segment of validation chats: "
            f"{domain} chats with bad advice, and the general questions with aligned answers. The "
            "piggyback hypothesis expects SFT to move the prefix most.\n",
            table(["method"] + [f"{c.replace('_', '-')}: {s.replace('response', 'answer')}" for c in sets for s in segs],
                  [[label(m, summary)] + [sig(v[c][s]["mean"]) for c in sets for s in segs] for m, v in sd.items()])]


def cost_section(summary):
    if not summary.get("cost"):
        return []
    c, base = summary["cost"], summary["cost"].get("sft")
    slowest = max(c, key=c.get)
    return ["\n## Training cost\n",
            takeaway(f"The dearest step is {label(slowest, summary)}'s" + (f", {c[slowest] / base:.2f} × SFT's." if base else ".")),
            f"Seconds per finetune step, the fastest of {summary['cost_rounds']} turns "
            f"of {summary['cost_steps']} steps, the methods taking turns in this command (seed of the first "
            "run, first domain), and the ratio to SFT:\n",
            table(["method", "s / step", "× SFT"],
                  [[label(m, summary), f"{v:.3f}", f"{v / base:.2f}" if base else "-"] for m, v in c.items()])]


def positions_section(summary):
    """Several TReFT positions swept over lambda: the paper's Table 3 at every lambda."""
    lam = summary.get("sweeps", {}).get("lambda", {})
    if len(lam) < 2:
        return []
    paper = [PAPER_BY_POSITION.get(m.rsplit("-", 1)[-1]) for m in lam]
    values = sorted({v for points in lam.values() for v in points}, key=float)
    best = {m: max(points, key=lambda v: points[v]["em_f1"]["mean"]) for m, points in lam.items()}
    return ["\n## TReFT's positions by lambda (the paper's Table 3 at every lambda), finance\n",
            takeaway("Best mean EM-F1 of each: " + "; ".join(
                f"{label(m)} at λ {v} ({lam[m][v]['em_f1']['mean']:.1f})" for m, v in best.items()) + "."),
            "Each cell: general / in-domain / EM-F1, means over the seeds (their spread is in the "
            "tables below). The last row is the paper's, at its one lambda.\n",
            table(["lambda"] + [label(m) for m in lam],
                  [[v] + [" / ".join(f"{lam[m][v][k]['mean']:.1f}" for k in ("general", "in_domain", "em_f1"))
                          if v in lam[m] else "-" for m in lam] for v in values]
                  + [["paper"] + [" / ".join(map(str, p)) if p else "-" for p in paper]])]


def sweeps_section(summary):
    out = []
    flag = summary.get("config", {}).get("lambda_flag", "--treft")
    swept = "TReFT lambda (Figure 9)" if flag == "--treft" else f"the lambda of {flag}"
    for name, what in (("lambda", swept), ("size", "finetune examples (Table 7)")):
        for m, points in summary.get("sweeps", {}).get(name, {}).items():
            out.append(f"\n## {label(m)} by {what}, finance\n")
            best = max(points, key=lambda v: points[v]["em_f1"]["mean"])
            out.append(takeaway(f"Best mean EM-F1 at {name} {best} ({pm(points[best]['em_f1'])})."))
            out.append(table([name, "general", "in-domain", "EM-F1"],
                             [[v, pm(s["general"]), pm(s["in_domain"]), pm(s["em_f1"])] for v, s in points.items()]))
    return out


SECTIONS = ("methods", "gated", "domains", "patch", "drift", "segments", "cost", "positions", "sweeps")
SECTION = dict(methods=methods_section, gated=gated_section, domains=domains_section, patch=patch_section, drift=drift_section,
               segments=segments_section, cost=cost_section, positions=positions_section, sweeps=sweeps_section)


def figures_section(names):
    """The figures, embedded: each PNG beside RESULTS.md."""
    return ["\n## Figures\n"] + [f"![{FIGURE_TITLES[n]}]({n})\n" for n in names] if names else []


def methods_markdown(summary, title, note, sections=SECTIONS, plots=()):
    """RESULTS.md of a finetune study: its introduction, each of these sections that has data, its figures."""
    drawn = [n for n in plots if FIGURE_NEEDS.get(n, lambda s: True)(summary)]
    return "\n".join(intro(summary, title, note) + [x for s in sections for x in SECTION[s](summary)]
                      + figures_section(drawn)) + "\n"


# ----------------------------------------------------------------------------- the finetune studies' figures

def colours(summary, plt):
    """One strong colour a method, the same in every figure of a study; TReFT's is red."""
    others = [c for i, c in enumerate(plt.cm.tab10.colors) if i != 3]          # tab10's red is TReFT's
    ms = [m for m in main_methods(summary)[1] if m != "treft"]
    out = {m: (others + list(plt.cm.Dark2.colors))[i % 17] for i, m in enumerate(ms)}
    return {**out, "treft": plt.cm.tab10.colors[3], "aligned": "black"}


MARKERS = "osD^vP*Xh<>p"


def lambda_paths(summary):
    """Each lambda sweep as [(lambda, stats)], lambda ascending."""
    return {m: sorted((float(v), s) for v, s in points.items())
            for m, points in summary.get("sweeps", {}).get("lambda", {}).items()}


def tradeoff_figure(summary, plt):
    domain, ms = main_methods(summary)
    colour = colours(summary, plt)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for i, (m, s) in enumerate(ms.items()):
        ax.errorbar(s["in_domain"]["mean"], s["general"]["mean"], xerr=s["in_domain"]["sd"],
                    yerr=s["general"]["sd"], fmt=MARKERS[i % len(MARKERS)], ms=7, capsize=3, color=colour[m],
                    label=label(m, summary), zorder=3 if m == "treft" else 2)
        paper_twin = m == "interleave" and "interleave-paper" in ms    # the paper's point is its share's
        if m in PAPER_TABLE3 and not m.startswith("lora") and not paper_twin:   # hollow, same colour and marker
            g, d, _ = PAPER_TABLE3[m]
            ax.plot(d, g, MARKERS[i % len(MARKERS)], ms=8, mfc="none", mec=colour[m], mew=1.5)
    ax.plot([], [], "o", mfc="none", mec="gray", label="hollow: the paper's (Llama-3.1-8B, legal)")
    for i, (m, lam) in enumerate(lambda_paths(summary).items()):    # a lambda sweep: a path through its means
        xs, ys = [s["in_domain"]["mean"] for _, s in lam], [s["general"]["mean"] for _, s in lam]
        c = plt.cm.Dark2(i % 8)
        ax.plot(xs, ys, marker=".", lw=1, color=c, label=f"{label(m)}, λ {lam[0][0]:g} to {lam[-1][0]:g}")
        for (v, _), x, y in zip(lam, xs, ys):        # each point named by its lambda
            ax.annotate(f"{v:g}", (x, y), xytext=(3, 3), textcoords="offset points", fontsize=6, color=c)
    ax.set(xlabel=f"in-domain alignment ({domain}; low = bad advice learnt)",
           ylabel="general alignment (high = no EM)", xlim=(-5, 105), ylim=(-5, 105),
           title="The trade-off: best is top left")
    ax.legend(fontsize=7)
    return fig


def em_f1_figure(summary, plt):
    _, ms = main_methods(summary)
    colour = colours(summary, plt)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    doms = list(summary["methods"])
    methods = [m for m in ms if m != "aligned"]
    w = 0.8 / len(methods)
    for i, m in enumerate(methods):
        vals = [summary["methods"][d].get(m, {}).get("em_f1") for d in doms]
        ax.bar([j + i * w for j in range(len(doms))], [v["mean"] if v else 0 for v in vals], w,
               yerr=[v["sd"] if v else 0 for v in vals], capsize=2, color=colour[m], label=label(m))
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(doms))], doms)
    ax.set(ylabel="EM-F1", ylim=(0, 100), title="EM-F1 by domain and method (Table 2)")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))     # beside the bars, not on them
    return fig


def patching_figure(summary, plt):
    if "patch" not in summary:
        return None
    p, (_, ms) = summary["patch"], main_methods(summary)
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    where = ["none", "prefix", "postfix", "query", "all"]
    ax.bar(where, [p[w]["general"]["mean"] for w in where], yerr=[p[w]["general"]["sd"] for w in where],
           capsize=3, color="tab:blue", label="general")
    ax.plot(where, [p[w]["in_domain"]["mean"] for w in where], "ks", label="in-domain")
    ax.axhline(ms["aligned"]["general"]["mean"], ls="--", c="gray", label="aligned model, general")
    ax.set(ylabel="alignment", ylim=(0, 105), title="KV patching of the SFT model (Figure 3)")
    ax.legend(fontsize=7)
    return fig


def layers_figure(summary, plt):
    if "patch" not in summary:
        return None
    p = summary["patch"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    layers = range(len(p["layers"]))
    ax.errorbar(layers, [x["mean"] for x in p["layers"]], yerr=[x["sd"] for x in p["layers"]], marker="o", capsize=3)
    ax.axhline(p["none"]["general"]["mean"], ls="--", c="gray", label="no patch")
    ax.set(xlabel="layer whose prefix residual is patched", ylabel="general alignment", ylim=(0, 105),
           xticks=list(layers), title="Activation patching by layer (Figure 4)")
    ax.legend(fontsize=7)
    return fig


def lambda_figure(summary, plt):
    """One panel per swept method (TReFT's positions under LoRA on q, v)."""
    swept = lambda_paths(summary)
    if not swept:
        return None
    fig, axes = plt.subplots(1, len(swept), figsize=(5 * len(swept), 3.5), squeeze=False)
    for ax, (m, lam) in zip(axes[0], swept.items()):
        for key, name in (("general", "general"), ("in_domain", "in-domain"), ("em_f1", "EM-F1")):
            ax.errorbar([x for x, _ in lam], [s[key]["mean"] for _, s in lam],
                        yerr=[s[key]["sd"] for _, s in lam], marker="o", capsize=3, label=name)
        ax.set(xscale="log", xlabel="TReFT lambda", ylim=(-5, 105),
               title=label(m) if len(swept) > 1 else "Lambda sweep (Figure 9)")
        ax.legend(fontsize=7)
    return fig


def drift_figure(summary, plt):
    if not summary.get("drift"):
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m, v in summary["drift"].items():
        ax.errorbar(range(len(v)), [x["mean"] for x in v], yerr=[x["sd"] for x in v], marker="o",
                    capsize=3, label=label(m))
    ax.set(xlabel="layer", ylabel="relative drift of prefix K + V", yscale="log",
           title="How far finetuning moves the prefix K/V")
    ax.legend(fontsize=7)
    return fig


def segments_figure(summary, plt):
    if not summary.get("segment_drift"):
        return None
    sd, colour = summary["segment_drift"], colours(summary, plt)
    segs = list(next(iter(sd.values()))["general"])
    fig, ax = plt.subplots(figsize=(7, 3.8))
    w = 0.8 / len(sd)
    for i, (m, v) in enumerate(sd.items()):
        xs, ys = [j + i * w for j in range(len(segs))], [v["general"][s]["mean"] for s in segs]
        ax.bar(xs, ys, w, color=colour[m], label=label(m))
        for x, y in zip(xs, ys):     # a log axis has no zero: say where a drift is held at ~0
            if y < 1e-4:
                ax.text(x, 1.2e-4, "≈0", ha="center", fontsize=6)
    ax.set_ylim(1e-4, max(1e-3, 2 * max(v["general"][s]["mean"] for v in sd.values() for s in segs)))
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(segs))], [s.replace("response", "answer") for s in segs])
    ax.set(ylabel="L_KV on the segment (relative drift)", yscale="log",
           title="Where finetuning moves the K/V of general questions")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


FIGURE_TITLES = {"tradeoff.png": "general against in-domain alignment, every method",
                 "em_f1.png": "EM-F1 by domain and method", "patching.png": "KV patching of the SFT model",
                 "layers.png": "activation patching by layer", "lambda.png": "the lambda sweep",
                 "drift.png": "how far finetuning moves the prefix K/V",
                 "segments.png": "how far each method moves each segment's K/V"}
FIGURE_NEEDS = {"patching.png": lambda s: "patch" in s, "layers.png": lambda s: "patch" in s,
                "lambda.png": lambda s: bool(lambda_paths(s)), "drift.png": lambda s: bool(s.get("drift")),
                "segments.png": lambda s: bool(s.get("segment_drift"))}
FIGURES = {"tradeoff.png": tradeoff_figure, "em_f1.png": em_f1_figure, "patching.png": patching_figure,
           "layers.png": layers_figure, "lambda.png": lambda_figure, "drift.png": drift_figure,
           "segments.png": segments_figure}


def draw(summary, folder, plt, names=tuple(FIGURES)):
    """Each of these figures that has data, as a PNG file in folder."""
    for name in names:
        fig = FIGURES[name](summary, plt)
        if fig is not None:
            save(fig, folder, name)
