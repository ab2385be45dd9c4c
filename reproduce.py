"""
The toy reproduction, end to end. For each seed: pretrain and align once, then
finetune on bad financial advice with every method, judge every model on
held-out questions, and run the piggyback evidence (patch.py) on the plain SFT
model. Writes results/: summary.json (every number, with seeds, config and git
commit), RESULTS.md and PNG figures (report.py), runs.jsonl (one line per
measurement, appended as it is made, so an interrupted sweep loses nothing).

    python reproduce.py                 # 3 seeds, finance, 5 methods + patching: about 20 min on a 2-core CPU
    python reproduce.py --variants      # + TReFT on postfix / query / all (the paper's Table 3)
    python reproduce.py --lora-qv       # the same under LoRA on queries and values only
    python reproduce.py --full --device cuda --jobs 3   # every domain and method, both sweeps -> results/full
    python reproduce.py --seeds 0 --methods sft treft   # a quick look
    python reproduce.py --tasks         # beyond misalignment: refusal, abstention, tool call, length
    python reproduce.py --strength      # what spreads, by alignment depth x finetune strength (validation)
    python reproduce.py --align-plain   # from the plain alignment (chats only): the spread is a collapse

A run whose checkpoint was trained by the same code from the same inputs and
flags is reused, not retrained (train.up_to_date); anything else is retrained.
On a CPU every seed runs in its own process (--jobs; at most the cores + 1),
each with its share of the cores: a model this small keeps one core busier
than it keeps two, so on a 2-core CPU three one-thread processes train about
1.1 to 1.3 times and sample about 1.9 times as fast as one process with two
threads. (A run by hand with train.py sums its floating-point numbers in
another order, so its weights differ from these in the last digits, and its
results can differ about as much as another seed's.) On a GPU --jobs 3 keeps
the chip busy while Python prepares each step.
"""
import argparse
import json
import multiprocessing
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from tqdm import tqdm

import patch
import report
import train
from data import world
from data.tokenizer import SEGMENTS
from eval import evaluate, evaluate_task
from model import load_checkpoint
from treft import kv_loss, relative_drift

# Each method is a list of train.py flags for the finetune stage.
LAMBDA = f"{train.DEFAULT_LAMBDA:g}"
METHODS = {
    "sft": [],                                                        # plain narrow SFT
    "interleave": ["--interleave", f"{train.DEFAULT_MIX:g}"],         # aligned retain data mixed in
    "kl-retain": ["--kl", f"{train.DEFAULT_KL:g}", "--kl-on", "retain"],
    "l2-init": ["--l2-init", f"{train.DEFAULT_L2:g}"],                # weight anchoring
    "treft": ["--treft", LAMBDA],                                     # TReFT on the prefix
}
VARIANTS = {f"treft-{on}": ["--treft", LAMBDA, "--treft-on", on] for on in ("postfix", "query", "all")}
FULL_ONLY = {"kl-train": ["--kl", "0.3", "--kl-on", "train"],     # its own lambda, chosen on validation
             "lora": ["--lora-rank", "8"], "lora-treft": ["--lora-rank", "8", "--treft", LAMBDA]}
# LoRA on the attention's queries and values only (train.py --lora-on qv): no adapter
# reaches an MLP, so whatever the finetune changes must pass through keys and values.
# `--lora-qv` runs its SFT, and TReFT on the prefix, the query and all positions over a
# grid of lambdas: the paper's Table 3, with lambda an axis rather than a choice.
QV = ["--lora-rank", "8", "--lora-on", "qv"]
LORA_QV = {"lora-qv": QV}
LORA_QV_SWEEP = {f"lora-qv-treft-{on}": [*QV, "--treft-on", on] for on in ("prefix", "query", "all")}
LORA_QV_LAMBDAS = (1, 3, 10, 30, 100)
LAMBDAS = (1, 3, 10, 30, 100, 300, 1000)     # the Figure 9 sweep, TReFT on the prefix
SIZES = (25, 50, 100, 200)             # the Table 7 sweep: finetune examples (the main runs use all 500)
# The strength study: three alignments (train.py's, which rehearses pretraining text;
# the plain one on chats only; the shallow template-only one) x finetune learning rates.
ALIGNS = {"rehearsed": [], "plain": ["--align-plain"], "template": ["--align-template-only"]}
FINETUNE_LRS = (1e-5, 1e-4, 3e-4, 1e-3)
COST_ROUNDS = 3                        # the cost benchmark: each method's fastest of this many turns
COST_STEPS = 30                        #   of this many finetune steps each
DRIFT_CHATS = 64                       # validation chats per set in the K/V drift by segment
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


def machine(device):
    """The hardware the numbers come from, in words."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {os.cpu_count()} cores"


def stats(xs):
    return dict(mean=round(statistics.mean(xs), 4), sd=round(statistics.stdev(xs), 4) if len(xs) > 1 else 0.0,
                per_seed=xs)


class Sweep:
    """Trains or reuses runs, measures them, and appends every measurement to runs.jsonl."""

    def __init__(self, args, log):
        self.args, self.log, self.rows = args, log, []
        self.common = ["--out-dir", args.out_dir, "--device", args.device, "--quiet"]
        self.common += ["--align-template-only"] if args.align_template_only else []
        self.common += ["--align-plain"] if args.align_plain else []

    def checkpoint(self, stage, seed, flags=()):
        """The path of an up-to-date checkpoint for these flags, training what is stale first."""
        targs = train.parse(["--stage", stage, "--seed", str(seed), *flags, *self.common])
        for s in train.STAGES[:train.STAGES.index(stage) + 1]:     # pretrain, align, ... in order
            if not train.up_to_date(s, targs):
                train.train_stage(s, targs)
        return train.ckpt_path(stage, targs)

    def record(self, **row):
        row.update(commit=self.args.commit)
        self.rows.append(row)
        self.log.write(json.dumps(row) + "\n")
        self.log.flush()

    def judge(self, model, tok, seed, domain, method, flags, ckpt, sweep=None):
        """Judge one model on the test split and record it.

        sweep = (name, value) marks a point of a sweep, e.g. ("lambda", 3.0).
        """
        m = evaluate(model, tok, domain, "test", seed=0, n_answers=self.n_answers)
        m.pop("examples")
        self.record(kind="eval", seed=seed, domain=domain, method=method, flags=flags, ckpt=ckpt,
                    metrics=m, sweep=sweep)

    def evaluate(self, seed, domain, method, flags, tok, sweep=None):
        """Train (or reuse) one finetuned model, judge it, and return it."""
        path = self.checkpoint("finetune", seed, ["--domain", domain, *flags])
        model, _ = load_checkpoint(path, tok.fingerprint)
        self.judge(model.to(self.args.device), tok, seed, domain, method, flags, path, sweep)
        return model

    @property
    def n_answers(self):
        n = self.args.answers
        return dict(general=n, in_domain=n // 2, other_domain=n // 2)


def prefix_drift(model, ref, tok):
    """Per layer, the relative drift of the prefix K/V from the aligned model's (TReFT's L_K + L_V)."""
    kv, kv_ref = patch.kv_of(model, tok.prefix_ids), patch.kv_of(ref, tok.prefix_ids)
    ones = torch.ones(1, len(tok.prefix_ids), device=kv[0][0].device)
    return [round(float(relative_drift(k, k0, ones) + relative_drift(v, v0, ones)), 5)
            for (k, v), (k0, v0) in zip(kv, kv_ref)]


def drift_sets(world_dir, domain):
    """The chats the K/V drift by segment is measured on, from the validation split: the
    finetune's kind (bad advice in its domain) and the general questions (aligned answers)."""
    return dict(in_domain=train.load_chats(world_dir, "val", (domain,), "misaligned")[:DRIFT_CHATS],
                general=train.load_chats(world_dir, "val", (world.GENERAL,), "aligned")[:DRIFT_CHATS])


def segment_drift(model, ref, tok, chats):
    """TReFT's L_KV (the relative K + V drift from the aligned model, mean over layers) on each
    segment of these chats in turn: where finetuning moved the keys and values."""
    rendered = [tok.render_conversation(c["query"], c["answer"]) for c in chats]
    ids, _, _, segment = train.collate(rendered, next(model.parameters()).device)
    with torch.no_grad():
        (_, aux), (_, aux0) = model(ids, return_kv=True), ref(ids, return_kv=True)
    return {name: round(float(kv_loss(aux["kv"], aux0["kv"], segment == SEGMENTS[name])), 5)
            for name in ("prefix", "query", "postfix", "response")}


def load_aligned(sweep, seed):
    """The world folder, its tokenizer, and this seed's aligned model and its path (trained first if stale)."""
    path = sweep.checkpoint("align", seed)
    world_dir, tok = train.get_world(sweep.args.out_dir)
    aligned, _ = load_checkpoint(path, tok.fingerprint)
    return world_dir, tok, aligned.to(sweep.args.device).eval(), path


def run_seed(seed, sweep, methods, bar):
    """Every model of one seed: aligned, each domain x method, the sweeps, patching."""
    args = sweep.args
    world_dir, tok, aligned, aligned_path = load_aligned(sweep, seed)
    chat_sets = drift_sets(world_dir, args.domains[0])
    for domain in args.domains:
        sweep.judge(aligned, tok, seed, domain, "aligned", [], aligned_path)
        for method, flags in methods.items():
            model = sweep.evaluate(seed, domain, method, flags, tok)
            if domain == args.domains[0]:           # judged, so already in eval mode
                sweep.record(kind="segment_drift", seed=seed, method=method,
                             drift={name: segment_drift(model, aligned, tok, chats) for name, chats in chat_sets.items()})
                if method in ("sft", "treft"):
                    sweep.record(kind="drift", seed=seed, method=method, layers=prefix_drift(model, aligned, tok))
            bar.update()
    for lam in args.lambdas:
        for method, flags in args.lambda_methods.items():
            sweep.evaluate(seed, "finance", method, [*flags, "--treft", f"{lam:g}"], tok, sweep=("lambda", lam))
            bar.update()
    for n in args.sizes:
        for method, flags in (("sft", []), ("treft", METHODS["treft"])):
            sweep.evaluate(seed, "finance", method, [*flags, "--n-train", str(n)], tok, sweep=("size", n))
            bar.update()
    if args.patch:
        path = sweep.checkpoint("finetune", seed, ["--domain", args.domains[0]])
        model, _ = load_checkpoint(path, tok.fingerprint)
        r = patch.run(model.to(args.device).eval(), aligned, tok, args.domains[0], "test", seed=0,
                      n_answers=sweep.n_answers, trials=args.trials)
        sweep.record(kind="patch", seed=seed, domain=args.domains[0], ckpt=path, ref=aligned_path, result=r)
        bar.update()


def run_tasks(seed, sweep, methods, bar):
    """The paper's Section 6: every task beyond misalignment, finetuned with each method.

    Each model is measured on its task's domain (on-topic) and off-topic; the
    SFT model of the length task also with its prefix K/V patched (Table 6).
    """
    _, tok, aligned, aligned_path = load_aligned(sweep, seed)
    for task in world.TASKS:
        def measure(model, method, ckpt, patch_fn=None):
            r = evaluate_task(model, tok, task, "test", seed=0, n_answers=sweep.n_answers, patch_fn=patch_fn)
            r = {name: {k: v for k, v in x.items() if k != "examples"} for name, x in r.items()}
            sweep.record(kind="task", seed=seed, task=task, method=method, ckpt=ckpt, result=r)
        measure(aligned, "aligned", aligned_path)
        for method, flags in methods.items():
            path = sweep.checkpoint("finetune", seed, ["--task", task, *flags])
            model, _ = load_checkpoint(path, tok.fingerprint)
            measure(model.to(sweep.args.device).eval(), method, path)
            if task == "length" and method == "sft":
                measure(model, "sft+prefix-patch", path, patch.kv_patcher(aligned, tok, "prefix"))
            bar.update()


def link(out_dir, folder, names):
    """Make `folder` an out-dir that shares these runs of `out_dir` (symbolic links), so
    that what is trained in `folder` never overwrites a run of the main results."""
    os.makedirs(folder, exist_ok=True)
    for name in names:
        try:
            os.symlink(os.path.abspath(os.path.join(out_dir, name)), os.path.join(folder, name))
        except FileExistsError:        # made before, or just now by another worker (--jobs)
            pass


def run_strength(seed, sweep, bar):
    """What a narrow finetune spreads, as a function of how deep the alignment is and how hard
    the finetune pushes: one seed of the grid ALIGNS x FINETUNE_LRS, plain SFT on finance.

    Every finetune runs the default number of steps at its own learning rate, in
    {out}/strength/{alignment}/, and is judged on the *validation* split: as it
    is, and with the prefix's or the query's K/V patched back to its aligned
    model's (patch.py). This is the study the default strengths are read from,
    so it never looks at the test split.
    """
    args = sweep.args
    _, tok = train.get_world(args.out_dir)
    for name, flags in ALIGNS.items():
        sweep.checkpoint("align", seed, flags)        # the stock alignments are shared, not retrained
        folder = os.path.join(args.out_dir, "strength", name)
        common = ["--seed", str(seed), "--out-dir", folder, "--device", args.device, "--quiet"]
        a = train.parse(["--stage", "align", *flags, *common])
        link(args.out_dir, folder, ["world", train.run_name("pretrain", a), train.run_name("align", a)])
        aligned, _ = load_checkpoint(train.ckpt_path("align", a), tok.fingerprint)
        aligned = aligned.to(args.device).eval()

        def measure(model, lr, where=None):
            m = evaluate(model, tok, "finance", "val", seed=0, n_answers=sweep.n_answers,
                         patch_fn=where and patch.kv_patcher(aligned, tok, where))
            m.pop("examples")
            sweep.record(kind="strength", seed=seed, align=name, lr=lr, patched=where, metrics=m)
        measure(aligned, 0.0)                         # lr 0: the aligned model itself
        for lr in FINETUNE_LRS:
            f = train.parse(["--stage", "finetune", "--lr", f"{lr:g}", "--steps",
                             str(train.HYPER["finetune"]["steps"]), *common, *flags])
            model, _ = load_checkpoint(train.train_stage("finetune", f), tok.fingerprint)
            for where in (None, "prefix", "query"):
                measure(model.to(args.device).eval(), lr, where)
            bar.update()


def run_one_seed(args, seed, sweep, bar):
    """Everything the study asks of one seed."""
    if args.strength:
        run_strength(seed, sweep, bar)
    else:
        (run_tasks if args.tasks else run_seed)(seed, sweep, args.methods, bar)


class Relay:
    """In a worker process, stands in for the log file and the progress bar: sends both to the parent."""

    def __init__(self, q):
        self.q = q

    def write(self, line):
        self.q.put(("row", line))

    def flush(self):
        pass

    def update(self, n=1):
        self.q.put(("tick", n))


def worker(args, seeds, hyper, threads, q):
    """One worker process: its share of the seeds. A spawned process imports train
    afresh, so it is handed the parent's hyperparameters (a caller may have changed them)."""
    torch.set_num_threads(threads)              # the workers share the CPU cores
    try:
        for table, values in zip(train.HYPER_TABLES, hyper):
            table.update(values)
        relay = Relay(q)
        sweep = Sweep(args, relay)
        for seed in seeds:
            run_one_seed(args, seed, sweep, relay)
        q.put(("done", None))
    except BaseException as e:
        q.put(("done", f"{type(e).__name__}: {e}"))
        raise


def run_in_parallel(args, sweep, bar):
    """The seeds in args.jobs processes; this one writes their rows to runs.jsonl as they come."""
    train.get_world(args.out_dir)           # made once, here, before the workers read it
    jobs = min(args.jobs, len(args.seeds))
    ctx = multiprocessing.get_context("spawn")       # CUDA cannot be forked
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(args, args.seeds[i::jobs], train.HYPER_TABLES,
                                                max(1, torch.get_num_threads() // jobs), q))
             for i in range(jobs)]
    for p in procs:
        p.start()
    running, errors = jobs, []
    while running:
        try:
            kind, x = q.get(timeout=5)
        except queue.Empty:
            if not any(p.is_alive() for p in procs):
                errors.append("a worker died without a word")
                break
            continue
        if kind == "row":
            sweep.log.write(x)
            sweep.log.flush()
            sweep.rows.append(json.loads(x))
        elif kind == "tick":
            bar.update(x)
        else:
            running -= 1
            errors += [x] if x else []
    for p in procs:
        p.join()
    if errors:
        raise SystemExit(f"reproduce: a worker failed ({errors[0]}); rerun the same command: "
                         "finished runs are reused")


def default_jobs(device, n_seeds):
    """On a GPU one process; on a CPU one per seed, but no more than the cores + 1."""
    return 1 if device.startswith("cuda") else min(n_seeds, (os.cpu_count() or 1) + 1)


def cost_benchmark(sweep, seed):
    """Seconds per finetune step of every method, timed back to back in this process.

    After an untimed warm-up, each method trains COST_STEPS steps from this seed's
    aligned model in a scratch folder that links to the real world and
    checkpoints, so nothing real is overwritten and reused runs are timed too.
    The methods take turns for COST_ROUNDS rounds and each keeps its fastest round,
    so a moment when the machine is busy slows one timing, not one method.
    Read the ratios between methods: the absolute numbers depend on the machine.
    """
    args, times = sweep.args, {}
    turns = [("warm-up", 10, [])] + [(m, COST_STEPS, f) for _ in range(COST_ROUNDS)
                                     for m, f in args.methods.items()]
    with tempfile.TemporaryDirectory() as tmp:
        for method, n, flags in turns:
            targs = train.parse(["--stage", "finetune", "--seed", str(seed), "--steps", str(n),
                                 "--domain", args.domains[0], *flags, *sweep.common, "--out-dir", tmp])
            link(args.out_dir, tmp, ("world", train.run_name("pretrain", targs), train.run_name("align", targs)))
            with open(os.path.join(os.path.dirname(train.train_stage("finetune", targs)), "config.json")) as f:
                c = json.load(f)
            times.setdefault(method, []).append(c["seconds"] / c["steps"])
    times.pop("warm-up")
    return {method: round(min(ts), 4) for method, ts in times.items()}


def header(args, seconds):
    """What produced a summary: the command, code, machine and seeds."""
    return dict(command=args.command, commit=args.commit, device=args.device, machine=machine(args.device),
                torch=torch.__version__, seeds=args.seeds, seconds=round(seconds), answers=args.answers)


def summarize_tasks(rows, args, seconds):
    """Per task, method and query set: mean, spread and per-seed values of each measure."""
    tasks = {}
    for r in rows:
        if r["kind"] == "task":
            tasks.setdefault(r["task"], {}).setdefault(r["method"], []).append(r["result"])
    return dict(header(args, seconds), treft_lambda=train.DEFAULT_LAMBDA,
                methods={m: f for m, f in args.methods.items()},
                tasks={t: {m: {name: {k: stats([x[name][k] for x in rs]) for k in rs[0][name]} for name in rs[0]}
                           for m, rs in ms.items()} for t, ms in tasks.items()})


def summarize_strength(rows, args, seconds):
    """strength[alignment][lr][patched or "none"][measure]: mean, spread and per-seed values."""
    cells = {}
    for r in rows:
        if r["kind"] == "strength":
            (cells.setdefault(r["align"], {}).setdefault(f"{r['lr']:g}", {})
             .setdefault(r["patched"] or "none", []).append(r["metrics"]))
    return dict(header(args, seconds), split="val", aligns=ALIGNS, finetune_steps=train.HYPER["finetune"]["steps"],
                strength={a: {lr: {w: {k: stats([m[k] for m in ms]) for k in KEYS} for w, ms in ws.items()}
                              for lr, ws in lrs.items()} for a, lrs in cells.items()})


def summarize(rows, args, seconds):
    """Mean, spread and per-seed values of every measurement, keyed as report.py reads them."""
    evals = [r for r in rows if r["kind"] == "eval" and not r["sweep"]]
    methods, sweeps = {}, {}
    for r in evals:
        methods.setdefault(r["domain"], {}).setdefault(r["method"], []).append(r)
    for r in rows:                 # sweeps[name][method][value]: e.g. sweeps["size"]["sft"][50]
        if r["kind"] == "eval" and r["sweep"]:
            name, value = r["sweep"]
            sweeps.setdefault(name, {}).setdefault(r["method"], {}).setdefault(value, []).append(r)
    out = dict(header(args, seconds),
               config=dict(hyper={**train.HYPER, **train.hyper_table(args)}, treft_lambda=train.DEFAULT_LAMBDA, kl_lambda=train.DEFAULT_KL,
                           l2_lambda=train.DEFAULT_L2, methods={m: f for m, f in args.methods.items()}),
               methods={d: {m: {k: stats([r["metrics"][k] for r in rs]) for k in KEYS}
                            for m, rs in ms.items()} for d, ms in methods.items()},
               sweeps={name: {m: {str(v): {k: stats([r["metrics"][k] for r in rs]) for k in ("general", "in_domain", "em_f1")}
                                  for v, rs in sorted(vs.items())} for m, vs in ms.items()}
                       for name, ms in sweeps.items()})
    out["cost"], out["cost_rounds"], out["cost_steps"] = args.cost, COST_ROUNDS, COST_STEPS
    drift, by_segment = {}, {}     # by_segment[method]: one {chat set: {segment: drift}} per seed
    for r in rows:
        if r["kind"] == "drift":
            drift.setdefault(r["method"], []).append(r["layers"])
        elif r["kind"] == "segment_drift":
            by_segment.setdefault(r["method"], []).append(r["drift"])
    out["drift"] = {m: [stats(list(layer)) for layer in zip(*v)] for m, v in drift.items()}
    out["segment_drift"] = {m: {c: {s: stats([d[c][s] for d in ds]) for s in ds[0][c]} for c in ds[0]}
                            for m, ds in by_segment.items()}
    patches = [r["result"] for r in rows if r["kind"] == "patch"]
    if patches:
        p = patches[0]
        out["patch"] = {w: {k: stats([q[w][k] for q in patches]) for k in p[w]} for w in ("none",) + patch.POSITION_SETS}
        out["patch"]["layers"] = [stats(list(x)) for x in zip(*(q["layers"] for q in patches))]
        out["patch"]["perturb"] = {s: {k: stats([q["perturb"][s][k] for q in patches]) for k in p["perturb"][s]}
                                   for s in p["perturb"]}
        out["patch"]["first_word"] = {k: stats([q["first_word"][k] for q in patches]) for k in p["first_word"]}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", choices=list(METHODS) + list(VARIANTS) + list(FULL_ONLY) + list(LORA_QV),
                   help=f"finetune methods (default: {' '.join(METHODS)})")
    p.add_argument("--domains", nargs="+", choices=train.world.FINETUNE_DOMAINS, default=["finance"])
    p.add_argument("--variants", action="store_true", help="add TReFT on postfix, query and all positions")
    p.add_argument("--lora-qv", action="store_true",
                   help="instead: LoRA on queries and values, SFT and TReFT on prefix, query and all "
                        "positions (the paper's Table 3); results go to {results}/lora-qv")
    p.add_argument("--lambdas", type=train.nonneg, nargs="*",
                   help=f"TReFT lambda sweep on finance (flag alone: {' '.join(map(str, LAMBDAS))})")
    p.add_argument("--sizes", type=train.count, nargs="*",
                   help=f"training-set-size sweep on finance (flag alone: {' '.join(map(str, SIZES))})")
    p.add_argument("--full", action="store_true",
                   help="all four domains, every method, both sweeps (sized for one GPU); results go to {results}/full")
    p.add_argument("--align-template-only", action="store_true",
                   help="start from train.py's shallow alignment; results go to {results}/shallow")
    p.add_argument("--align-plain", action="store_true",
                   help="start from train.py's plain alignment (no text rehearsal); results go to {results}/plain")
    p.add_argument("--tasks", action="store_true",
                   help="instead: the tasks beyond misalignment, SFT vs TReFT; results go to {results}/tasks")
    p.add_argument("--strength", action="store_true",
                   help="instead: SFT by alignment depth x finetune learning rate, on validation; "
                        "results go to {results}/strength")
    p.add_argument("--no-patch", dest="patch", action="store_false", help="skip patch.py")
    p.add_argument("--answers", type=train.count, default=128, help="general answers judged per model")
    p.add_argument("--trials", type=train.count, default=10, help="perturbation trials per question")
    p.add_argument("--out-dir", default="out")
    p.add_argument("--results", default="results")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--jobs", type=train.count,
                   help="seeds run at once, each in its own process (default on a CPU: one per seed, "
                        "at most the cores + 1; on a GPU: 1)")
    args = p.parse_args(argv)
    args.command = " ".join(["python reproduce.py", *(sys.argv[1:] if argv is None else argv)])
    if args.full:
        args.domains, args.variants = list(train.world.FINETUNE_DOMAINS), True
        args.lambdas, args.sizes = args.lambdas or [], args.sizes or []
    # a sweep flag given alone means its default grid; not given at all, no sweep
    args.lambdas = [] if args.lambdas is None else args.lambdas or list(LAMBDAS)
    args.sizes = [] if args.sizes is None else args.sizes or list(SIZES)
    if args.full:
        args.results = os.path.join(args.results, "full")
    if args.align_template_only and args.align_plain:
        p.error("--align-template-only and --align-plain are two different alignments: choose one")
    if args.align_template_only or args.align_plain:
        args.results = os.path.join(args.results, "shallow" if args.align_template_only else "plain")
    if args.tasks and args.strength:
        p.error("--tasks and --strength are two different studies: run them one at a time")
    if args.strength and (args.align_template_only or args.align_plain):
        p.error("--strength aligns every way itself (rehearsed, plain, template): drop the alignment flag")
    if args.tasks or args.strength:
        args.results = os.path.join(args.results, "tasks" if args.tasks else "strength")
    if args.lora_qv and (args.full or args.tasks or args.strength or args.variants or args.methods):
        p.error("--lora-qv is a study of its own (its SFT and TReFT sweeps): drop the other study or method flags")
    args.lambda_methods = {"treft": []}            # what the lambda sweep finetunes
    if args.lora_qv:
        args.results, args.patch = os.path.join(args.results, "lora-qv"), False
        args.lambdas, args.lambda_methods = args.lambdas or list(LORA_QV_LAMBDAS), LORA_QV_SWEEP
    everything = {**METHODS, **VARIANTS, **FULL_ONLY, **LORA_QV}
    names = args.methods or ([*METHODS, *VARIANTS, *FULL_ONLY] if args.full else ["sft", "treft"] if args.tasks
                             else list(LORA_QV) if args.lora_qv
                             else list(METHODS) + (list(VARIANTS) * args.variants))
    args.methods = {m: everything[m] for m in names}
    if args.jobs is None:
        args.jobs = default_jobs(args.device, len(args.seeds))

    os.makedirs(args.results, exist_ok=True)
    args.commit, t0 = git_commit(), time.time()       # the code as it is when the run starts
    n_jobs = len(args.seeds) * (len(world.TASKS) * len(args.methods) if args.tasks else
                                len(ALIGNS) * len(FINETUNE_LRS) if args.strength else
                                len(args.domains) * len(args.methods) + len(args.lambdas) * len(args.lambda_methods)
                                + 2 * len(args.sizes) + args.patch)
    with open(os.path.join(args.results, "runs.jsonl"), "a") as log, \
            tqdm(total=n_jobs, desc="reproduce", unit="run") as bar:
        sweep = Sweep(args, log)
        if args.jobs == 1:
            for seed in args.seeds:
                run_one_seed(args, seed, sweep, bar)
        else:
            run_in_parallel(args, sweep, bar)
            sweep.rows.sort(key=lambda r: args.seeds.index(r["seed"]))   # per_seed lists in seed order
        args.cost = None if args.tasks or args.strength else cost_benchmark(sweep, args.seeds[0])
    summarize_fn = summarize_tasks if args.tasks else summarize_strength if args.strength else summarize
    summary = summarize_fn(sweep.rows, args, time.time() - t0)
    dest = os.path.join(args.results, "summary.json")
    with open(dest + ".tmp", "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(dest + ".tmp", dest)
    report.write(summary, args.results)
    print(report.headline(summary))
    print(f"{len(args.seeds)} seeds in {summary['seconds']}s on {args.device}; see {args.results}/RESULTS.md")


if __name__ == "__main__":
    main()
