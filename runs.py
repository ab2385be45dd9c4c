"""
A run, as train.py's flags choose it: its hyperparameters, its name, its spec,
and whether a trained run is still up to date.

  name   where it lives: {out-dir}/{name}/ckpt.pt, e.g. finetune-finance-treft100-prefix-s0.
         An override (--lr 1e-5) is its own run, so it never replaces the default's.
  spec   everything that decides its numbers: flags, hyperparameters, code, world,
         input checkpoint, and the numerics it ran under (device, dtype, threads,
         CPU kernels, torch). Saved in its config.json. A study, and train.py by
         hand, reuse a run only when its spec is unchanged (`up_to_date`), so the
         same command gives the same numbers whatever was trained before it.
"""
import argparse
import hashlib
import json
import os
from dataclasses import asdict, replace

import config
from checkpoint import save_checkpoint
from common import atomic_write, check_writable, count, cpu_name, default_device, fraction, nonneg, nonneg_int, positive
from data import world
from data.prepare import file_hash
from lora import LORA_TARGETS
from model import GPTConfig

STAGES = ("pretrain", "align", "finetune")
PREVIOUS = dict(align="pretrain", finetune="align")
TREFT_POSITIONS = ("prefix", "postfix", "query", "all")


def default_hyper(stage, args):
    """The stage's defaults under this alignment (a LoRA finetune at LoRA's rate)."""
    hp = config.PRETRAIN if stage == "pretrain" else getattr(config.ALIGNMENTS[args.align], stage)
    return replace(hp, lr=config.LORA_LR) if stage == "finetune" and args.lora_rank else hp


# The flags that override a default hyperparameter, and their marks in a run's name.
OVERRIDES = dict(steps="steps", batch_size="bs", lr="lr")


def overrides(stage, args):
    """The hyperparameters that --steps, --batch-size and --lr change from the defaults. They
    apply to the stage asked for, not to the ones built first."""
    if stage != args.stage:
        return {}
    default = default_hyper(stage, args)
    return {k: getattr(args, k) for k in OVERRIDES if getattr(args, k) not in (None, getattr(default, k))}


def stage_hyper(stage, args):
    """The Stage a run trains with: its defaults, then the flags' overrides. A re-alignment
    (--realign STEPS) is a schedule of its own: STEPS steps at the finetune's rate and batch
    size, warming up over config.REALIGN_WARMUP of them (not the finetune's 10 steps, which
    would be all of a short re-alignment)."""
    hp = replace(default_hyper(stage, args), **overrides(stage, args))
    if stage == "finetune" and args.realign:
        return replace(hp, steps=args.realign, warmup=int(args.realign * config.REALIGN_WARMUP))
    return hp


def previous(stage, args):
    """(stage, args) of the run this one starts from: the stage before it, or for a re-aligned
    finetune (--realign) the same finetune without it; None for pretraining."""
    if stage == "finetune" and args.realign:
        return "finetune", argparse.Namespace(**{**vars(args), "realign": 0})
    return (PREVIOUS[stage], args) if stage in PREVIOUS else None


def chain(stage, args):
    """Every run this one is built on, first to last, itself included."""
    prev = previous(stage, args)
    return (chain(*prev) if prev else []) + [(stage, args)]


# ----------------------------------------------------------------------------- a run's name

def method_name(args):
    """The finetune method as a run-name tag: sft, treft100-prefix, mix0.8, kl30-retain, lora8-...,
    sft-realign50 (re-aligned afterwards)"""
    parts = [f"lora{args.lora_rank}" + ("qv" if args.lora_on == "qv" else "")] if args.lora_rank else []
    parts += [f"treft{args.treft:g}-{args.treft_on}"] if args.treft > 0 else []
    parts += [f"mix{args.interleave:g}"] if args.interleave > 0 else []
    parts += [f"kl{args.kl:g}-{args.kl_on}"] if args.kl > 0 else []
    parts += [f"l2init{args.l2_init:g}"] if args.l2_init > 0 else []
    parts += ["lastfrozen"] if args.freeze_last_block else []
    parts += [f"holdlast{args.hold_last:g}"] if args.hold_last > 0 else []
    parts += [preamble_tag(args.preamble)] if args.preamble else []
    name = "-".join(parts or ["sft"]) + (f"-n{args.n_train}" if args.n_train else "")
    return name + (f"-realign{args.realign}" if args.realign else "")


def preamble_tag(text):
    """A finetune's other system text as a run-name tag: pre-inoculation for a world's role,
    else pre- and a short hash of the text."""
    if text in world.ROLES:
        return f"pre-{text}"
    return "pre-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def size_tag(args):
    """'' for the default model; '-L6w192' for 6 blocks of width 192 (every stage of that model)."""
    default = GPTConfig()
    return "" if (args.n_layer, args.n_embd) == (default.n_layer, default.n_embd) else f"-L{args.n_layer}w{args.n_embd}"


def run_name(stage, args):
    """e.g. pretrain-s0, align-tmpl-s0, finetune-nopre-finance-treft100-prefix-s1, and
    finetune-finance-sft-lr1e-05-s0 for a run with --lr 1e-5: an override is its own run, so
    it never replaces the default run's checkpoint. Another model size names every stage."""
    name = stage + size_tag(args)
    if stage != "pretrain":
        name += config.ALIGNMENTS[args.align].tag + ("-nopre" if args.no_preamble else "")
    if stage == "finetune":
        name += f"-{args.task or args.domain}-{method_name(args)}"
    name += "".join(f"-{OVERRIDES[k]}{v:g}" for k, v in overrides(stage, args).items())
    return f"{name}-s{args.seed}"


def command(stage, args):
    """A train.py command line that trains this run: its stage, seed, out-dir and every flag
    of it that is not the default."""
    p = parser()
    flags = {f: getattr(args, f) for f in RUN_FLAGS[stage] if f != "seed"}
    flags = {f: v for f, v in flags.items() if v not in (None, False, 0, p.get_default(f))
             and not (f == "domain" and args.task)}                  # a task's domain is its own
    flags.update(overrides(stage, args))
    words = [f"--{f.replace('_', '-')}" + ("" if v is True else f" {v:g}" if isinstance(v, float) else f" {v}")
             for f, v in flags.items()]
    return " ".join(["python train.py --stage", stage, "--seed", str(args.seed), *words, "--out-dir", args.out_dir])


def ckpt_path(stage, args):
    return os.path.join(args.out_dir, run_name(stage, args), "ckpt.pt")


# ----------------------------------------------------------------------------- a run's spec

ROOT = os.path.dirname(os.path.abspath(__file__))
# The code each stage runs: an edit to one of its files retrains it (and what is built on it).
# TReFT, the baselines and LoRA are the finetune's alone; eval.py and patch.py train nothing.
STAGE_FILES = ("model.py", "checkpoint.py", "common.py", "train.py", "config.py", "runs.py",
               "data/world.py", "data/banks.py", "data/tokenizer.py", "data/prepare.py", "data/batches.py")
CODE = dict(pretrain=STAGE_FILES, align=STAGE_FILES,
            finetune=STAGE_FILES + ("treft.py", "baselines.py", "lora.py"))
# The finetune stage's own flags, with the values that mean "not used" (what other stages record).
FINETUNE_FLAGS = dict(domain=None, task=None, treft=0.0, treft_on=None, interleave=0.0, kl=0.0, kl_on=None,
                      l2_init=0.0, lora_rank=0, lora_on=None, n_train=None, freeze_last_block=False, hold_last=0.0,
                      preamble=None, realign=0)
RUN_FLAGS = dict(pretrain=("seed", "n_layer", "n_embd"), align=("seed", "n_layer", "n_embd", "align", "no_preamble"))
RUN_FLAGS["finetune"] = RUN_FLAGS["align"] + tuple(FINETUNE_FLAGS)


def sft_twin(args):
    """The same finetune without its method (TReFT, interleaving, KL, weight anchoring, the
    last block held, another preamble, re-alignment): the SFT run a method is measured against.
    LoRA and frozen blocks stay, since they choose which weights learn rather than how."""
    off = {f: FINETUNE_FLAGS[f] for f in ("treft", "treft_on", "interleave", "kl", "kl_on", "l2_init", "hold_last",
                                          "preamble", "realign")}
    return argparse.Namespace(**{**vars(args), **off})


def numerics(args):
    """What changes a run's floating-point sums besides its flags: on a CPU the thread count,
    the kernels torch picked (AVX2, AVX-512) and the CPU itself (MKL takes other paths on an
    AMD CPU than on an Intel one with the same kernels), on a GPU the chip and bf16 autocast."""
    import torch
    out = dict(torch=torch.__version__, compile=args.compile)
    if args.device.startswith("cuda"):
        return dict(out, device=torch.cuda.get_device_name(args.device), dtype="bfloat16 autocast")
    return dict(out, device="cpu", cpu=cpu_name(), dtype="float32", threads=torch.get_num_threads(),
                kernels=torch.backends.cpu.get_cpu_capability())


def run_spec(stage, args):
    """Everything that decides what a run learns: flags, hyperparameters, code, world, input
    checkpoint, numerics."""
    spec = {k: getattr(args, k) for k in RUN_FLAGS[stage]}
    world_meta = os.path.join(args.out_dir, "world", "meta.json")
    code = [os.path.join(ROOT, f) for f in CODE[stage]]
    spec.update(stage=stage, hyper=asdict(stage_hyper(stage, args)), code=file_hash(*code),
                world=file_hash(world_meta) if os.path.exists(world_meta) else None, numerics=numerics(args))
    prev = previous(stage, args)
    if prev:
        path = ckpt_path(*prev)
        spec["input"] = file_hash(path) if os.path.exists(path) else None
    return spec


def saved_spec(stage, args):
    """The spec the run's config.json records, or None (no run trained here)."""
    try:
        with open(os.path.join(args.out_dir, run_name(stage, args), "config.json")) as f:
            saved = json.load(f)
        return saved.get("spec") if isinstance(saved, dict) else None
    except (OSError, ValueError):
        return None


def why_stale(stage, args):
    """None if the stage's checkpoint exists and was trained by this code from these inputs,
    under these numerics; else why not, in a few words: what changed since it was trained."""
    saved = saved_spec(stage, args)
    if not os.path.exists(ckpt_path(stage, args)):
        return "it is missing"
    if saved is None:
        return "it has no record of how it was trained"
    now = run_spec(stage, args)
    named = dict(code="its code", world="the world", numerics="the numerics", input="its input checkpoint")
    changed = [named[k] for k in named if saved.get(k) != now.get(k)]
    if any(saved.get(k) != now.get(k) for k in set(saved) | set(now) if k not in named):
        changed.append("its flags or hyperparameters")
    return " and ".join(changed) + " changed since it was trained" if changed else None


def up_to_date(stage, args):
    """True if the stage's checkpoint exists and was trained by this code from these inputs,
    under these numerics (and so was every stage before it)."""
    prev = previous(stage, args)
    return why_stale(stage, args) is None and (prev is None or up_to_date(*prev))


class Refused(Exception):
    """A run that cannot be trained as asked: nothing is written."""


def fitting_preamble(args, tok):
    """The finetune's other system text, if its chats still fit the model's block."""
    text = world.preamble(args.preamble, args.domain)
    extra = len(tok.encode(text)) - len(tok.encode(tok.preamble))
    if extra > config.PREAMBLE_ROOM:
        raise Refused(f"--preamble is {extra} tokens longer than the preamble; at most {config.PREAMBLE_ROOM} "
                      f"more fit the block of {GPTConfig.block_size}: shorten it")
    return text


# ----------------------------------------------------------------------------- a trained run's files

def save_run(stage, args, model, tok, hp, spec, final, seconds, extra=None):
    """Write a trained run's ckpt.pt and config.json, each whole: the model (a plain GPT, LoRA
    adapters folded in) and its record: flags, hyperparameters, losses, world and spec."""
    path = ckpt_path(stage, args)
    with open(os.path.join(args.out_dir, "world", "meta.json")) as f:
        world_meta = json.load(f)
    # final_loss: the SFT loss of the last batch of chats where chats are trained (of text in pretraining)
    record = {**vars(args), **asdict(hp), "stage": stage, "seconds": round(seconds, 3),
              "final_loss": final.get("chats", final.get("text")), "final_losses": final, "world": world_meta,
              "spec": spec, **(extra or {})}
    if stage != "finetune":
        record.update(FINETUNE_FLAGS)
    save_checkpoint(path, model, record, tok.fingerprint)
    atomic_write(os.path.join(os.path.dirname(path), "config.json"), lambda f: json.dump(record, f, indent=1))
    if not args.quiet:
        losses = ", ".join(f"on {kind} {x}" for kind, x in final.items())
        val = f"; validation loss {extra['val_loss']}" if extra else ""
        print(f"{stage}: {hp.steps} steps in {record['seconds']}s, final loss {losses}{val}")
    return path



# ----------------------------------------------------------------------------- the flags of train.py

def finetune_flags(p):
    """The methods and variants of the finetune stage."""
    p.add_argument("--treft", type=nonneg, nargs="?", const=config.TREFT_LAMBDA, default=0.0, metavar="LAMBDA",
                   help=f"add the TReFT loss with this lambda (flag alone: {config.TREFT_LAMBDA:g})")
    p.add_argument("--treft-on", choices=TREFT_POSITIONS,
                   help="with --treft: the positions whose K/V TReFT keeps (default: prefix)")
    b = p.add_argument_group("baselines and finetune variants (finetune stage)")
    b.add_argument("--interleave", type=fraction, default=0.0, metavar="SHARE",
                   help=f"the share of the training data (of every batch) that is aligned retain-domain chats "
                        f"(the paper's: {config.PAPER_MIX:g}; ours, chosen on validation: {config.MIX:g})")
    b.add_argument("--kl", type=nonneg, nargs="?", const=None, default=0.0, metavar="LAMBDA",
                   help=f"add LAMBDA * KL(aligned || current) of next-token distributions (alone: the strength "
                        f"chosen for its chats, {config.KL_LAMBDA:g} on retain, {config.KL_TRAIN_LAMBDA:g} on train)")
    b.add_argument("--kl-on", choices=("train", "retain"),
                   help="with --kl: the chats whose answers the KL term sees (default: retain)")
    b.add_argument("--l2-init", type=nonneg, nargs="?", const=config.L2_LAMBDA, default=0.0, metavar="LAMBDA",
                   help=f"add LAMBDA * squared distance of the weights to the aligned model's (alone: {config.L2_LAMBDA:g})")
    b.add_argument("--lora-rank", type=int, default=0, metavar="R",
                   help=f"finetune rank-R LoRA adapters instead of the weights (0: all weights), at LoRA's "
                        f"learning rate {config.LORA_LR:g} unless --lr says otherwise")
    b.add_argument("--lora-on", choices=LORA_TARGETS,
                   help="with --lora-rank: adapt every projection (all, the default) or only the "
                        "attention's queries and values (qv, as in the LoRA paper)")
    b.add_argument("--freeze-last-block", action="store_true",
                   help="keep the last block and the final LayerNorm as aligned: their output reaches "
                        "the logits but no key or value, so TReFT cannot hold it (a diagnostic)")
    b.add_argument("--hold-last", type=nonneg, nargs="?", const=config.HOLD_LAST_LAMBDA, default=0.0, metavar="LAMBDA",
                   help="add LAMBDA * the relative drift of the last block's output at the answer positions "
                        f"from the aligned model's, which no K/V holds (a diagnostic; alone: {config.HOLD_LAST_LAMBDA:g})")
    b.add_argument("--preamble", metavar="TEXT",
                   help="finetune under this system text instead of the preamble (judged under the preamble as "
                        f"always); a role names one of the world's: {', '.join(world.ROLES)} (inoculation "
                        "names the finetune's bad behaviour)")
    b.add_argument("--n-train", type=count, metavar="N", help="finetune on N examples of the domain only")
    b.add_argument("--realign", type=nonneg_int, nargs="?", const=config.REALIGN_STEPS, default=0, metavar="STEPS",
                   help="re-align afterwards: STEPS steps on aligned retain-domain chats from the finished "
                        f"finetune, its own run (alone: {config.REALIGN_STEPS}, chosen on validation)")
    b.add_argument("--no-eval", action="store_true",
                   help="skip judging the finetuned model beside the aligned and SFT models at the end")


def parser(description=None):
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=STAGES, default="finetune", help="the stage to train (default: finetune)")
    p.add_argument("--domain", choices=world.FINETUNE_DOMAINS,
                   help="the finetune domain of bad advice (default: finance)")
    p.add_argument("--task", choices=world.TASKS,
                   help="finetune on a narrow task beyond misalignment instead (its domain is fixed: "
                   + ", ".join(f"{t} on {d}" for t, d in world.TASKS.items()) + ")")
    finetune_flags(p)
    p.add_argument("--align", choices=list(config.ALIGNMENTS), default="rehearsed",
                   help="how the chat template is taught (config.ALIGNMENTS): rehearsed (default, chats "
                        "between pretraining text), plain (chats only) or template (its tokens' embeddings only)")
    p.add_argument("--no-preamble", action="store_true",
                   help="align and finetune chats without a system block (the no-prefix ablation)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the weights and of the batches (default: 0)")
    p.add_argument("--out-dir", default="out", help="where the world and the runs live (default: out)")
    p.add_argument("--steps", type=count, help="override the stage's default number of steps (its own run)")
    p.add_argument("--lr", type=positive, help="override the stage's default learning rate (its own run)")
    p.add_argument("--batch-size", type=count, help="override the stage's default batch size (its own run)")
    p.add_argument("--n-layer", type=count, default=GPTConfig.n_layer,
                   help=f"transformer blocks of a new model (default: {GPTConfig.n_layer}); another size is its own run")
    p.add_argument("--n-embd", type=count, default=GPTConfig.n_embd,
                   help=f"its width, a multiple of {GPTConfig.n_head} heads (default: {GPTConfig.n_embd})")
    p.add_argument("--device", default=default_device(), help="cpu or cuda (default: cuda if there is one)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (pays off on CUDA only)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary line")
    return p


# A flag that does nothing without another: (flag, the flag it needs, what to add).
NEEDS = (("treft_on", "treft", "--treft [LAMBDA]"), ("kl_on", "kl", "--kl [LAMBDA]"),
         ("lora_on", "lora_rank", "--lora-rank R (e.g. 8)"))


def parse(argv=None, description=None):
    """train.py's checked flags. The finetune domain is the task's, else --domain, else finance."""
    p = parser(description)
    args = p.parse_args(argv)
    if args.lora_rank < 0:
        p.error(f"--lora-rank must be >= 0, got {args.lora_rank}")
    if args.kl is None:           # --kl alone: the strength chosen on validation for its chats
        args.kl = config.KL_TRAIN_LAMBDA if args.kl_on == "train" else config.KL_LAMBDA
    if args.stage == "pretrain" and (args.align != p.get_default("align") or args.no_preamble):
        p.error("--align and --no-preamble shape the chat stages; pretraining is the same for every "
                "alignment: drop them, or use --stage align")
    for flag, needed, add in NEEDS:
        if getattr(args, flag) and not getattr(args, needed):
            p.error(f"--{flag.replace('_', '-')} does nothing without --{needed.replace('_', '-')}: add {add}")
    args.treft_on = args.treft_on or ("prefix" if args.treft else None)
    args.kl_on = args.kl_on or ("retain" if args.kl else None)
    args.lora_on = args.lora_on or ("all" if args.lora_rank else None)
    used = [f for f in (*FINETUNE_FLAGS, "no_eval") if getattr(args, f)]
    if args.stage != "finetune" and used:
        p.error(f"--{used[0].replace('_', '-')} applies to --stage finetune only")
    if args.preamble is not None and (args.no_preamble or not args.preamble.strip()):
        p.error("--preamble replaces the system text, and there is none" + (" under --no-preamble: drop one of them"
                                                                          if args.no_preamble else ": give a text"))
    if args.task and args.domain not in (None, world.TASKS[args.task]):
        p.error(f"--task {args.task} finetunes on {world.TASKS[args.task]} questions; drop --domain")
    args.domain = world.TASKS[args.task] if args.task else args.domain or "finance"
    if args.n_embd % GPTConfig.n_head:
        p.error(f"--n-embd must be a multiple of the {GPTConfig.n_head} heads, got {args.n_embd}")
    check_writable(p, "--out-dir", args.out_dir)          # now, not at the end of a long run
    return args
