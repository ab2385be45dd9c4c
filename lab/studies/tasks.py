"""Beyond misalignment (the paper's Section 6): refusal, abstention, a tool call and answer length.

Question: a narrow finetune on one behaviour (refuse finance questions, abstain
on legal ones, call a tool on health ones, answer facts in one word): does the
behaviour spread off-topic, and does TReFT keep it on-topic? The SFT model of
the length task is also measured with its prefix K/V patched (the paper's
Table 6). TReFT keeps the lambda chosen for misalignment.

    python reproduce.py tasks      # about 5 min on a 2-core CPU
"""
import config
from data import world
from eval import evaluate_task
from lab.report import PAPER_TABLE5, PAPER_TABLE6, label, pm, provenance, save, stats, table, takeaway
from lab.studies.methods import METHODS
from lab.studies.study import Study
import patch


class Tasks(Study):
    folder = "tasks"
    methods = ("sft", "treft")

    def runs_per_seed(self, args):
        return len(world.TASKS) * len(self.methods)

    def run_seed(self, seed, sweep, bar):
        """Every task, finetuned with each method; each model measured on-topic and off-topic."""
        aligned_path = sweep.checkpoint("align", seed)
        _, tok = sweep.world()
        aligned = sweep.load(aligned_path, tok)
        for task in world.TASKS:
            def measure(model, method, ckpt, patch_fn=None):
                r = evaluate_task(model, tok, task, "test", seed=0, n_answers=sweep.n_answers, patch_fn=patch_fn)
                r = {name: {k: v for k, v in x.items() if k != "examples"} for name, x in r.items()}
                sweep.record(kind="task", seed=seed, task=task, method=method, ckpt=ckpt, result=r)
            measure(aligned, "aligned", aligned_path)
            for method in self.methods:
                path = sweep.checkpoint("finetune", seed, ["--task", task, *METHODS[method]])
                model = sweep.load(path, tok)
                measure(model, method, path)
                if task == "length" and method == "sft":
                    measure(model, "sft+prefix-patch", path, patch.kv_patcher(aligned, tok, "prefix"))
                bar.update()

    def summarize(self, rows, args):
        """Per task, method and query set: mean, spread and per-seed values of each measure."""
        tasks = {}
        for r in rows:
            if r["kind"] == "task":
                tasks.setdefault(r["task"], {}).setdefault(r["method"], []).append(r["result"])
        return dict(treft_lambda=config.TREFT_LAMBDA, methods={m: METHODS[m] for m in self.methods},
                    tasks={t: {m: {name: {k: stats([x[name][k] for x in rs]) for k in rs[0][name]} for name in rs[0]}
                               for m, rs in ms.items()} for t, ms in tasks.items()})

    def headline(self, summary):
        rows = [f"{'task':11s} {'method':24s} {'on-topic':>12s} {'general':>12s} {'other-domain':>12s} {'words':>6s}"]
        for t, ms in summary["tasks"].items():
            for m, s in ms.items():
                rows.append(f"{t:11s} {label(m):24s} {pm(s['in_domain']['rate'], 2):>12s} "
                            f"{pm(s['general']['rate'], 2):>12s} {pm(s['other_domain']['rate'], 2):>12s} "
                            f"{s['general']['words']['mean']:6.1f}")
        return f"rate of the task's behaviour, test split, mean ± sd over seeds {summary['seeds']}\n" + "\n".join(rows)

    def markdown(self, summary):
        n, tasks = len(summary["seeds"]), summary["tasks"]
        out = [f"# Beyond misalignment (the paper's Section 6)\n\n{provenance(summary)} "
               f"Seeds {summary['seeds']}; every cell is the mean ± sd over "
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
                rows.append([t, label(m), pm(s["in_domain"]["rate"], 2), pm(s["general"]["rate"], 2),
                             pm(s["other_domain"]["rate"], 2), paper])
        rated = [t for t in tasks if t != "length" and {"sft", "treft"} <= set(tasks[t])]
        out.append(takeaway("Off-topic on the general questions, SFT → TReFT: " + "; ".join(
            f"{t} {tasks[t]['sft']['general']['rate']['mean']:.2f} → {tasks[t]['treft']['general']['rate']['mean']:.2f}"
            for t in rated) + "."))
        out.append(table(["task (domain)", "method", "on-topic", "off-topic: general", "off-topic: other domains",
                          "paper: off-topic"], rows))
        if "tool" in tasks:
            out.append("\nThe tool task on-topic: share of calls whose argument is the exact question, and of "
                       "answers that pass the tool's result on once it is returned:\n")
            out.append(table(["method", "exact call", "uses the result"],
                             [[label(m), pm(s["in_domain"]["exact_call"], 2), pm(s["in_domain"]["uses_result"], 2)]
                              for m, s in tasks["tool"].items()]))
        if "length" in tasks:
            out.append("\n## Answer length (the paper's Table 6)\n\nFinetuned on one-word answers about a small "
                       "fact base; mean answer length in words, and the share of one-word answers.\n")
            out.append(takeaway("General answers, words: " + ", ".join(
                f"{label(m)} {s['general']['words']['mean']:.1f}" for m, s in tasks["length"].items()) + "."))
            out.append(table(["method", "general: words", "other domains: words", "facts: words", "facts: one-word",
                              "paper: general words"],
                             [[label(m), pm(s["general"]["words"]), pm(s["other_domain"]["words"]),
                               pm(s["in_domain"]["words"]), pm(s["in_domain"]["rate"], 2), PAPER_TABLE6.get(m, "-")]
                              for m, s in tasks["length"].items()]))
        out.append("\n## Figures\n\n![the spread of a narrow behaviour, and answer length](tasks.png)")
        return "\n".join(out) + "\n"

    def figures(self, summary, folder, plt):
        tasks = summary["tasks"]
        rate_tasks = [t for t in tasks if t != "length"]
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw=dict(width_ratios=[2, 1]))
        methods = [m for m in ("aligned", "sft", "treft") if all(m in tasks[t] for t in rate_tasks)]
        w = 0.8 / len(methods)
        for i, m in enumerate(methods):
            xs = [j + i * w for j in range(len(rate_tasks))]
            ax.bar(xs, [tasks[t][m]["general"]["rate"]["mean"] for t in rate_tasks], w,
                   yerr=[tasks[t][m]["general"]["rate"]["sd"] for t in rate_tasks], capsize=2, label=label(m))
            ax.plot(xs, [tasks[t][m]["in_domain"]["rate"]["mean"] for t in rate_tasks], "k_", ms=12)
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(rate_tasks))], rate_tasks)
        ax.set(ylabel="rate on general questions (bars)\n— = on-topic rate", ylim=(0, 1.05),
               title="Spread of a narrow behaviour (Table 5)")
        ax.legend(fontsize=7)
        if "length" in tasks:
            ms = list(tasks["length"])
            bx.bar(range(len(ms)), [tasks["length"][m]["general"]["words"]["mean"] for m in ms],
                   yerr=[tasks["length"][m]["general"]["words"]["sd"] for m in ms], capsize=3)
            bx.set_xticks(range(len(ms)), [label(m) for m in ms], rotation=30, ha="right", fontsize=7)
            bx.set(ylabel="general answer length (words)", title="Answer length (Table 6)")
        save(fig, folder, "tasks.png")


STUDY = Tasks()
