"""
The toy reproduction, end to end: for each seed, pretrain -> align -> finetune
(plain SFT, and SFT + TReFT) on bad financial advice, then evaluate all three
models on held-out questions and print the mean and spread across seeds.

    python reproduce.py                   # 3 seeds, about 5 min a seed on a 2-core CPU
    python reproduce.py --seeds 0         # one seed
    python reproduce.py --align-template-only   # from a shallow alignment (see train.py)

Finished runs are reused (a checkpoint on disk is not retrained). Every number
is appended to results/em_seeds.jsonl as it is measured, and the summary is
written to results/em_summary.json.
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import torch

import train
from eval import evaluate
from model import load_checkpoint

KEYS = ("general", "in_domain", "other_domain", "em_f1", "misaligned_rate", "persona_transfer",
        "leakage", "coherence")


def git_commit():
    """The commit the code runs at, marked '+dirty' when tracked Python files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "*.py"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_seed(seed, args, log):
    """Train (or reuse) the three models of one seed and evaluate them on the test split."""
    rows, t_seed = {}, time.time()
    common = ["--seed", str(seed), "--out-dir", args.out_dir, "--device", args.device, "--quiet"]
    common += ["--align-template-only"] if args.align_template_only else []
    for name, extra in (("aligned", ["--stage", "align"]),
                        ("sft", ["--stage", "finetune"]),
                        ("treft", ["--stage", "finetune", "--treft", str(args.treft)])):
        targs = train.parser().parse_args(extra + common)
        path = train.ckpt_path(targs.stage, targs)
        t0 = time.time()
        if not os.path.exists(path):
            train.train_stage(targs.stage, targs)
        if name == "aligned":      # the world exists once the first model does
            _, tok = train.get_world(args.out_dir)
        model, _ = load_checkpoint(path, tok.fingerprint)
        m = evaluate(model.to(args.device), tok, "finance", "test", seed=0)
        m.pop("examples")
        rows[name] = m
        record = dict(seed=seed, model=name, ckpt=path, seconds=round(time.time() - t0, 1), **m)
        log.write(json.dumps(record) + "\n")
        log.flush()
        print(f"seed {seed} {name:8s} " + " ".join(f"{k}={m[k]}" for k in KEYS), flush=True)
    print(f"seed {seed}: {time.time() - t_seed:.0f}s for its whole pipeline", flush=True)
    return rows


def summarize(per_seed):
    out = {}
    for name in ("aligned", "sft", "treft"):
        out[name] = {}
        for k in KEYS:
            xs = [r[name][k] for r in per_seed.values()]
            out[name][k] = dict(mean=round(statistics.mean(xs), 4),
                                sd=round(statistics.stdev(xs), 4) if len(xs) > 1 else 0.0,
                                per_seed=xs)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--treft", type=train.nonneg, default=train.DEFAULT_LAMBDA, help="TReFT lambda")
    p.add_argument("--out-dir", default="out")
    p.add_argument("--results", default="results")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--align-template-only", action="store_true",
                   help="the shallow alignment of train.py; results go to *_tmpl files")
    args = p.parse_args()
    os.makedirs(args.results, exist_ok=True)
    suffix = "_tmpl" if args.align_template_only else ""
    commit, t0 = git_commit(), time.time()       # the code as it is when the run starts
    with open(os.path.join(args.results, f"em_seeds{suffix}.jsonl"), "a") as log:
        per_seed = {s: run_seed(s, args, log) for s in args.seeds}
    summary = dict(command="python reproduce.py --seeds " + " ".join(map(str, args.seeds))
                   + (" --align-template-only" if args.align_template_only else ""),
                   seeds=args.seeds, treft_lambda=args.treft, device=args.device, commit=commit,
                   seconds=round(time.time() - t0), metrics=summarize(per_seed))
    dest = os.path.join(args.results, f"em_summary{suffix}.json")
    with open(dest + ".tmp", "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(dest + ".tmp", dest)
    print(f"\n{'model':8s} " + " ".join(f"{k:>17s}" for k in KEYS))
    for name, ms in summary["metrics"].items():
        print(f"{name:8s} " + " ".join(f"{ms[k]['mean']:9.2f} ± {ms[k]['sd']:5.2f}" for k in KEYS))
    print(f"{len(args.seeds)} seeds in {summary['seconds']}s on {args.device}")


if __name__ == "__main__":
    main()
