"""
Run a study by name: train (or reuse) every model it needs on every seed,
measure them, and write results/<study>/: summary.json (every number, with the
command, commit, device, machine, torch version and seconds), RESULTS.md and
PNG figures, and runs.jsonl (one line per measurement, written as it is made).

    python reproduce.py                 # the main study: 3 seeds, 6 methods + patching, about 13 min on a 2-core CPU
    python reproduce.py tasks           # beyond misalignment: refusal, abstention, tool call, length
    python reproduce.py full --device cuda --jobs 3     # every domain and method (sized for one GPU)
    python reproduce.py main --seeds 0 --methods sft treft --results scratch   # a quick look
    python reproduce.py tasks --report  # rewrite RESULTS.md and the figures from summary.json
    python reproduce.py conditional --resummarize   # rebuild summary.json from runs.jsonl with this code
    python reproduce.py --requote       # rewrite the tables README.md and docs/ quote from results/

The studies are the files of lab/studies/ (`python reproduce.py --list`); each
says what it asks, which runs answer it, and how its tables read.

A run whose checkpoint was trained by the same code from the same inputs and
flags, under the same numerics, is reused, not retrained (runs.up_to_date). On a CPU every seed runs in its
own process (--jobs; at most the cores + 1) with its share of the cores: a
model this small keeps one core busier than it keeps two, so on a 2-core CPU
three one-thread processes train about 1.1 to 1.3 times and sample about 1.9
times as fast as one process with two threads. A run by hand with train.py
(two threads) sums its floating-point numbers in another order, so a study
retrains it in place rather than reuse it. On a GPU --jobs 3 keeps the chip
busy while Python prepares each step.
"""
import argparse
import importlib
import json
import multiprocessing
import os
import platform
import queue
import subprocess
import sys
import threading
import time

import torch
from tqdm import tqdm

from checkpoint import CheckpointError, load_checkpoint
from common import atomic_write, check_writable, count, cpu_name, default_device, nonneg_int
from data import world
from data.prepare import get_world
from eval import evaluate
from lab import report
import runs
import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # the project's root
# The study files of studies/, in the order a reader meets them.
STUDIES = ("main", "extended", "lora_qv", "domains", "sizes", "tasks", "strength", "plain", "shallow", "nopre",
           "nopre_shallow", "persona", "scale", "validation", "full", "openings", "perturbation", "conditional",
           "lastblock", "inoculation")
START_METHOD = "spawn"       # how worker processes start: CUDA cannot be forked


# ----------------------------------------------------------------------------- what produced a summary

def git_commit():
    """The project's commit, marked '+dirty' when its tracked Python files differ from it."""
    def git(*a):
        return subprocess.run(["git", "-C", ROOT, *a], capture_output=True, text=True, check=True).stdout.strip()
    try:
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "*.py")
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine(device):
    """The hardware the numbers come from, in words: on a CPU its model and the kernels torch picked
    (an Intel and an AMD CPU with the same kernels still sum in another order)."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({platform.machine()}), {os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()} kernels"


def header(args, seconds):
    return dict(study=args.study, command=args.command, commit=args.commit, device=args.device,
                machine=machine(args.device), torch=torch.__version__, seeds=args.seeds,
                seconds=round(seconds), answers=args.answers)


# ----------------------------------------------------------------------------- training and judging

class Sweep:
    """Trains or reuses runs, measures them, and sends every measurement to the log."""

    def __init__(self, args, log, flags=(), status=None):
        self.args, self.log, self.rows, self.status = args, log, [], status
        self.common = ["--out-dir", args.out_dir, "--device", args.device, "--quiet", *flags]

    def checkpoint(self, stage, seed, flags=()):
        """The path of an up-to-date checkpoint for these flags, training what is stale first."""
        targs = runs.parse(["--stage", stage, "--seed", str(seed), *self.common, *flags])
        progress = self.status and (lambda text: self.status(f"seed {seed}", text))
        for s, a in runs.chain(stage, targs):        # pretrain, align, finetune, ... in order
            if not runs.up_to_date(s, a):
                train.train_stage(s, a, progress)
        return runs.ckpt_path(stage, targs)

    def world(self):
        """The world folder and the tokenizer that renders this study's chats (no system block
        under --no-preamble, as its runs were trained)."""
        world_dir, tok = get_world(self.args.out_dir)
        return world_dir, tok.with_preamble(None) if "--no-preamble" in self.common else tok

    def load(self, path, tok):
        model, _ = load_checkpoint(path, tok.fingerprint, world_dir=os.path.join(self.args.out_dir, "world"))
        return model.to(self.args.device).eval()

    def record(self, **row):
        row.update(commit=self.args.commit)
        self.rows.append(row)
        self.log.write(json.dumps(row) + "\n")
        self.log.flush()

    @property
    def n_answers(self):
        n = self.args.answers
        return dict(general=n, in_domain=n // 2, other_domain=n // 2)

    def judge(self, model, tok, seed, domain, method, flags, ckpt, sweep=None, split="test"):
        """Judge one model and record it; sweep = (name, value) marks a point of a sweep, e.g. ("lambda", 3.0)."""
        m = evaluate(model, tok, domain, split, seed=0, n_answers=self.n_answers)
        m.pop("examples")
        self.record(kind="eval", seed=seed, domain=domain, method=method, flags=flags, ckpt=ckpt,
                    metrics=m, sweep=sweep)


# ----------------------------------------------------------------------------- seeds in parallel

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

    def status(self, key, text):
        self.q.put(("status", (key, text)))


def load_study(name):
    """The STUDY object of studies/<name>.py."""
    return importlib.import_module(f"lab.studies.{name}").STUDY


def run_seeds(study, args, seeds, log, bar):
    status = bar.status if isinstance(bar, Relay) else (lambda key, text: bar.set_postfix_str(f"{key}: {text}"))
    sweep = Sweep(args, log, study.train_flags, status)
    for seed in seeds:
        study.run_seed(seed, sweep, bar)
    return sweep


def exit_when_orphaned(parent, every=5.0):
    """Stop this worker once its parent is gone: a reproduce.py killed (not interrupted) cannot
    tell its workers, which would go on training beside the next run."""
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def worker(args, seeds, threads, q):
    """One worker process: its share of the seeds."""
    torch.set_num_threads(threads)              # the workers share the CPU cores
    threading.Thread(target=exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    try:
        relay = Relay(q)
        run_seeds(load_study(args.study), args, seeds, relay, relay)
        q.put(("done", None))
    except KeyboardInterrupt:          # Ctrl-C reaches every process: the parent says so, once
        pass
    except BaseException as e:
        q.put(("done", f"{type(e).__name__}: {e}"))
        raise


def gather(procs, q, log, bar):
    """The workers' rows (written to the log as they come) and their errors, once all are done.
    What each seed is training shows beside the bar, which counts finished runs only."""
    rows, running, errors, training = [], len(procs), [], {}
    while running:
        try:
            kind, x = q.get(timeout=5)
        except queue.Empty:
            if not any(p.is_alive() for p in procs):
                errors.append("a worker died without a word")
                break
            continue
        if kind == "row":
            log.write(x)
            log.flush()
            rows.append(json.loads(x))
        elif kind == "tick":
            bar.update(x)
        elif kind == "status":
            training[x[0]] = x[1]
            bar.set_postfix_str("; ".join(f"{k}: {v}" for k, v in sorted(training.items())))
        else:
            running -= 1
            errors += [x] if x else []
    return rows, errors


def run_in_parallel(args, log, bar):
    """The seeds in args.jobs processes; this one writes their rows to the log as they come."""
    get_world(args.out_dir)           # made once, here, before the workers read it
    jobs = min(args.jobs, len(args.seeds))
    ctx = multiprocessing.get_context(START_METHOD)
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(args, args.seeds[i::jobs], max(1, torch.get_num_threads() // jobs), q))
             for i in range(jobs)]
    for p in procs:
        p.start()
    try:
        rows, errors = gather(procs, q, log, bar)
    finally:                            # also on Ctrl-C: no worker outlives this process
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
    if errors:
        raise SystemExit(f"reproduce: a worker failed ({errors[0]}); rerun the same command: "
                         "finished runs are reused")
    return sorted(rows, key=lambda r: args.seeds.index(r["seed"]))   # per_seed lists in seed order


def default_jobs(device, n_seeds):
    """On a GPU one process; on a CPU one per seed, but no more than the cores + 1."""
    return 1 if device.startswith("cuda") else min(n_seeds, (os.cpu_count() or 1) + 1)


# ----------------------------------------------------------------------------- command line

def parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", nargs="?", default="main", choices=STUDIES, help="the study to run (default: main)")
    p.add_argument("--list", action="store_true", help="list the studies, one line each, and stop")
    p.add_argument("--report", action="store_true",
                   help="only rewrite RESULTS.md and the figures from the study's summary.json")
    p.add_argument("--resummarize", action="store_true",
                   help="only rebuild summary.json (then RESULTS.md and the figures) from the study's runs.jsonl with "
                        "this code, keeping the run's command, commit, machine and seconds")
    p.add_argument("--requote", action="store_true",
                   help="only rewrite the quoted tables of README.md and docs/ from the committed results/ "
                        "summaries (the maintainers' step after committing new results), and stop")
    p.add_argument("--seeds", type=nonneg_int, nargs="+", default=[0, 1, 2], help="seeds to run (default: 0 1 2)")
    p.add_argument("--methods", nargs="+", metavar="METHOD",
                   help="only these of the study's finetune methods (a quick look)")
    p.add_argument("--domain", choices=world.FINETUNE_DOMAINS,
                   help="the finetune domain of a study that takes one (conditional; default: finance)")
    p.add_argument("--answers", type=count, default=128, help="general answers judged per model (default: 128)")
    p.add_argument("--trials", type=count, default=10, help="perturbation trials per question (default: 10)")
    p.add_argument("--out-dir", default="out", help="where the world and the runs live (default: out)")
    p.add_argument("--results", default="results", help="the folder that holds every study's results folder")
    p.add_argument("--device", default=default_device(), help="cpu or cuda (default: cuda if there is one)")
    p.add_argument("--jobs", type=count,
                   help="seeds run at once, each in its own process (default on a CPU: one per seed, "
                        "at most the cores + 1; on a GPU: 1)")
    return p


def study_page(folder):
    """(summary, RESULTS.md text) of the committed results/<folder>/summary.json: a study's folder,
    or one it wrote for a --domain (conditional_health)."""
    study = load_study(folder if folder in STUDIES else folder.rsplit("_", 1)[0])
    with open(os.path.join(ROOT, "results", folder, "summary.json")) as f:
        summary = json.load(f)
    return summary, study.markdown(summary)


def requote():
    """Rewrite the blocks of README.md and docs/findings.md that quote the committed results."""
    for page in report.PAGES:
        path = os.path.join(ROOT, page)
        with open(path) as f:
            text = f.read()
        new = report.requote(text, study_page)
        if new != text:
            atomic_write(path, new)
            print(f"rewrote the quoted results in {page}")


def resummarize(study, args, p, folder, summary):
    """summary.json rebuilt from the study's runs.jsonl by this code's summarize (a table or measure
    added after the run): the run's header is kept, and the commit that summarized it is added."""
    header = {k: summary[k] for k in ("study", "command", "commit", "device", "machine", "torch", "seeds",
                                      "seconds", "answers")}
    args.seeds, args.answers = header["seeds"], header["answers"]
    study.configure(args, p)
    with open(os.path.join(folder, "runs.jsonl")) as f:
        rows = sorted((json.loads(line) for line in f), key=lambda r: args.seeds.index(r["seed"]))
    summary = dict(header, **study.summarize(rows, args), summarized_at=git_commit())
    atomic_write(os.path.join(folder, "summary.json"), lambda f: json.dump(summary, f, indent=1))
    return summary


def write_report(study, summary, folder):
    """RESULTS.md and the figures, in the study's results folder only: the tracked pages that
    quote results/ change with --requote, never as a side effect of a run."""
    report.write(summary, folder, study.markdown(summary), lambda plt: study.figures(summary, folder, plt))
    print(study.headline(summary))


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    if args.requote:
        return requote()
    if args.list:
        for name in STUDIES:
            print(f"{name:10s} {importlib.import_module(f'lab.studies.{name}').__doc__.strip().splitlines()[0]}")
        return
    study = load_study(args.study)
    if args.domain and not study.takes_domain:
        p.error(f"the {args.study} study has no --domain to choose")
    folder = os.path.join(args.results, study.results_folder(args))
    if args.report or args.resummarize:
        try:
            with open(os.path.join(folder, "summary.json")) as f:
                summary = json.load(f)
        except (OSError, ValueError):
            sys.exit(f"error: no readable {folder}/summary.json; run `python reproduce.py {args.study}` first")
        if args.resummarize:
            summary = resummarize(study, args, p, folder, summary)
        return write_report(study, summary, folder)
    study.configure(args, p)
    check_writable(p, "--out-dir", args.out_dir)
    check_writable(p, "--results", folder)
    args.command = " ".join(["python reproduce.py", *(sys.argv[1:] if argv is None else argv)])
    args.jobs = args.jobs or default_jobs(args.device, len(args.seeds))
    try:
        run_study(study, args, folder)
    except (CheckpointError, train.Diverged) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        print(f"\ninterrupted: {folder}'s summary, tables and runs.jsonl are as they were; "
              "the runs finished so far are reused next time",
              file=sys.stderr)
        sys.exit(130)


def run_study(study, args, folder):
    """Train and measure every run of the study, then write its folder's files, each whole."""
    args.commit, t0 = git_commit(), time.time()       # the code as it is when the run starts
    log_path = os.path.join(folder, "runs.jsonl")
    with open(log_path + ".partial", "w") as log, \
            tqdm(total=len(args.seeds) * study.runs_per_seed(args), desc=args.study, unit="run") as bar:
        if args.jobs == 1:
            sweep = run_seeds(study, args, args.seeds, log, bar)
            rows = sweep.rows
        else:
            rows = run_in_parallel(args, log, bar)
            sweep = Sweep(args, log, study.train_flags)
        extra = study.finish(sweep)
    os.replace(log_path + ".partial", log_path)       # the rows of this command only
    summary = dict(header(args, time.time() - t0), **study.summarize(rows, args), **extra)
    atomic_write(os.path.join(folder, "summary.json"), lambda f: json.dump(summary, f, indent=1))
    write_report(study, summary, folder)
    print(f"{len(args.seeds)} seeds in {summary['seconds']}s on {args.device}; see {folder}/RESULTS.md")


if __name__ == "__main__":
    main()
