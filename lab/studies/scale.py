"""Does the piggyback evidence sharpen with scale? SFT, TReFT and the patching at several model sizes.

Question: at toy scale the prefix's K/V give back much of the drop, the query's
less; does the gap grow with the model, and TReFT's gain with it? Each size
is a model of its own depth and width (train.py --n-layer, --n-embd), trained
through every stage on the same world for the same number of steps, then
finetuned with SFT and with TReFT (lambda 100, the value chosen at the default
size); patch.py runs on its SFT model. Test split, as the main study.

    python reproduce.py scale                   # the sizes a 2-core CPU affords: about 30 min
    python reproduce.py scale --device cuda     # add SIZES_GPU's larger model
"""
from eval import evaluate
from lab.report import pm, provenance, stats, table, takeaway
from lab.studies.methods import KEYS, METHODS
from lab.studies.study import Study
import patch

SIZES = ((4, 128), (6, 192))           # (blocks, width): the default model first
SIZES_GPU = SIZES + ((8, 256),)


def size_flags(size):
    return ["--n-layer", str(size[0]), "--n-embd", str(size[1])]


class Scale(Study):
    folder = "scale"

    def sizes(self, args):
        return SIZES_GPU if args.device.startswith("cuda") else SIZES

    def runs_per_seed(self, args):
        return 3 * len(self.sizes(args))

    def run_seed(self, seed, sweep, bar):
        _, tok = sweep.world()
        for size in self.sizes(sweep.args):
            name = f"{size[0]}x{size[1]}"
            aligned = sweep.load(sweep.checkpoint("align", seed, size_flags(size)), tok)
            models = {"aligned": aligned}
            for method in ("sft", "treft"):
                models[method] = sweep.load(sweep.checkpoint("finetune", seed, size_flags(size) + METHODS[method]), tok)
            for method, model in models.items():
                m = evaluate(model, tok, "finance", "test", seed=0, n_answers=sweep.n_answers)
                sweep.record(kind="scale", seed=seed, size=name, method=method, metrics={k: m[k] for k in KEYS})
                if method != "aligned":
                    bar.update()
            r = patch.run(models["sft"], aligned, tok, "finance", "test", seed=0, n_answers=sweep.n_answers,
                          trials=sweep.args.trials)
            sweep.record(kind="scale_patch", seed=seed, size=name, result=r,
                         params=sum(p.numel() for p in aligned.parameters()))
            bar.update()

    def summarize(self, rows, args):
        out = {}
        for r in rows:
            s = out.setdefault(r["size"], dict(methods={}, patch=[], params=None))
            if r["kind"] == "scale":
                s["methods"].setdefault(r["method"], []).append(r["metrics"])
            elif r["kind"] == "scale_patch":
                s["patch"].append(r["result"])
                s["params"] = r["params"]
        summary = {}
        for size, s in out.items():
            ms = {m: {k: stats([x[k] for x in xs]) for k in KEYS} for m, xs in s["methods"].items()}
            aligned = [x["general"] for x in s["methods"]["aligned"]]
            p = s["patch"]

            def back(where):          # % of the aligned -> SFT drop in general alignment given back, per seed
                return stats([100 * (q[where]["general"] - q["none"]["general"]) / (a - q["none"]["general"])
                              if a != q["none"]["general"] else 0.0 for q, a in zip(p, aligned)])
            summary[size] = dict(
                params=s["params"], methods=ms,
                patch={w: stats([q[w]["general"] for q in p]) for w in ("none", "prefix", "postfix", "query", "all")},
                recovery={w: back(w) for w in ("prefix", "query", "postfix")},
                prefix_minus_query=stats([q["prefix"]["general"] - q["query"]["general"] for q in p]),
                perturb={seg: {k: stats([q["perturb"][seg][k] for q in p]) for k in ("best", "avg")}
                         for seg in ("prefix", "query")},
                treft_gain=stats([t["em_f1"] - f["em_f1"] for t, f in zip(s["methods"]["treft"], s["methods"]["sft"])]))
        return dict(sizes=summary)

    def markdown(self, summary):
        sz = summary["sizes"]
        first, last = next(iter(sz)), list(sz)[-1]
        out = [f"# The evidence by model size\n\n{provenance(summary)} Seeds {summary['seeds']}; mean ± sd over the "
               f"seeds, test split ({summary['answers']} general answers per model). Sizes are blocks x width; "
               "every size trains on the same world for the same steps.\n",
               "## The piggyback evidence and TReFT by size\n",
               takeaway(f"Prefix minus query patch: {pm(sz[first]['prefix_minus_query'])} points at {first}, "
                        f"{pm(sz[last]['prefix_minus_query'])} at {last}; TReFT's EM-F1 gain over SFT "
                        f"{pm(sz[first]['treft_gain'])} and {pm(sz[last]['treft_gain'])}."),
               table(["size", "parameters", "aligned general", "SFT general", "prefix patched", "query patched",
                      "prefix: % of the drop back", "query: % back", "prefix minus query", "SFT EM-F1",
                      "TReFT EM-F1", "TReFT gain"],
                     [[size, f"{s['params'] / 1e6:.1f}M", pm(s["methods"]["aligned"]["general"]),
                       pm(s["methods"]["sft"]["general"]), pm(s["patch"]["prefix"]), pm(s["patch"]["query"]),
                       pm(s["recovery"]["prefix"]), pm(s["recovery"]["query"]), pm(s["prefix_minus_query"]),
                       pm(s["methods"]["sft"]["em_f1"]), pm(s["methods"]["treft"]["em_f1"]), pm(s["treft_gain"])]
                      for size, s in sz.items()]),
               "\n## Perturbation by size (general alignment, Best / Avg of 10 trials)\n",
               table(["size", "prefix: Best", "prefix: Avg", "query: Best", "query: Avg"],
                     [[size, pm(s["perturb"]["prefix"]["best"]), pm(s["perturb"]["prefix"]["avg"]),
                       pm(s["perturb"]["query"]["best"]), pm(s["perturb"]["query"]["avg"])] for size, s in sz.items()])]
        return "\n".join(out) + "\n"

    def headline(self, summary):
        return "\n".join(f"{size}: prefix {pm(s['recovery']['prefix'])}% back, query {pm(s['recovery']['query'])}%, "
                         f"TReFT gain {pm(s['treft_gain'])}" for size, s in summary["sizes"].items())


STUDY = Scale()
