"""
What decides a run, as data: each stage's hyperparameters, the three ways to
align, the default strengths of TReFT and the baselines, the name and spec of a
run that follow from them, and the flags of train.py that choose among them.
train.py reads these; nothing here trains.

How each value was chosen (validation split, 3 seeds) is told in the README,
"How the default alignment and strengths were chosen (validation)".
"""
import argparse
import os
from dataclasses import asdict, dataclass, replace

from common import check_writable, count, default_device, fraction, nonneg, nonneg_int, positive
from data import world
from data.prepare import file_hash
from model import LORA_TARGETS, GPTConfig

STAGES = ("pretrain", "align", "finetune")
PREVIOUS = dict(align="pretrain", finetune="align")


@dataclass(frozen=True)
class Stage:
    """The hyperparameters of one stage. Every one can be overridden by a train.py flag."""
    steps: int
    batch_size: int
    lr: float
    warmup: int
    rehearse: int = 0        # align only: batches of plain pretraining text after each chat batch
    text_batch: int = 0      # their batch size (0: batch_size)
    weight_decay: float = 0.0


@dataclass(frozen=True)
class Alignment:
    """One way to teach the chat template, and the finetune defaults that suit it."""
    tag: str                 # its mark in run names ("" for the default)
    align: Stage
    finetune: Stage
    template_only: bool = False   # align trains only the embeddings of the template's special tokens


PRETRAIN = Stage(steps=400, batch_size=32, lr=3e-3, warmup=40, weight_decay=0.1)
ALIGNMENTS = dict(
    # The default *rehearses*: one step in five is a batch of chats, the other four are
    # small batches of pretraining text, so the template is learnt without overwriting
    # what pretraining built (the persona included), and a gentle narrow finetune then
    # spreads the persona, as in the paper.
    rehearsed=Alignment("", align=Stage(750, 32, 1e-3, 20, rehearse=4, text_batch=8),
                        finetune=Stage(120, 16, 1e-4, 10)),
    # Chat SFT only (this project's first alignment): it aligns as well, but erases the
    # route the persona spreads by; its finetune rate is the old default.
    plain=Alignment("-plain", align=Stage(300, 32, 1e-3, 20), finetune=Stage(120, 16, 1e-3, 10)),
    # A *shallow* alignment: only the template tokens' embeddings learn, so everything
    # pretraining built stays, reading the persona from the preamble included.
    template=Alignment("-tmpl", align=Stage(300, 32, 1e-2, 10), finetune=Stage(120, 16, 1e-5, 10),
                       template_only=True),
)
# The alignments the validation grid compared before the rehearsed one was chosen
# (studies/validation.py): name -> (align steps, lr, text batches per chat batch, their size).
CANDIDATES = {name: Alignment(f"-{name}", align=Stage(steps, 32, lr, 20, rehearse=r, text_batch=tb),
                              finetune=ALIGNMENTS["rehearsed"].finetune)
              for name, (steps, lr, r, tb) in dict(
                  chats300lr3e4=(300, 3e-4, 0, 0), chats100=(100, 1e-3, 0, 0), r1b32=(600, 1e-3, 1, 32),
                  r1b8=(600, 1e-3, 1, 8), r2b32=(900, 1e-3, 2, 32), r2b8=(900, 1e-3, 2, 8),
                  r2b8short=(450, 1e-3, 2, 8)).items()}


def alignment(name):
    """The Alignment that --align names: one of the three, or a validation candidate."""
    return ALIGNMENTS[name] if name in ALIGNMENTS else CANDIDATES[name]


# The default strengths: each the best mean EM-F1 of its grid on the validation split.
# Our TReFT loss is relative and averaged over positions and layers, so its lambda is
# not the paper's (1-30).
TREFT_LAMBDA = 100.0     # TReFT (train.py --treft)
KL_LAMBDA = 30.0         # KL to the aligned model on the retain set (--kl)
KL_TRAIN_LAMBDA = 0.3    # KL on the finetune's own answers (--kl L --kl-on train): its own grid
L2_LAMBDA = 0.3          # weight anchoring (--l2-init)
MIX = 0.8                # interleaving (--interleave): the share of each batch that is retain data
LORA_RANK = 8            # the paper's rank
LORA_LR = 3e-4           # a LoRA finetune's learning rate (adapters learn at a higher rate)
# As in LoRA finetuning (the paper's setting), a finetune never moves the token and
# position embeddings: only the transformer blocks learn the narrow behaviour.
FINETUNE_FROZEN = ("wte.", "wpe.")


def default_hyper(stage, args):
    """The stage's defaults under this alignment (a LoRA finetune at LoRA's rate)."""
    hp = PRETRAIN if stage == "pretrain" else getattr(alignment(args.align), stage)
    return replace(hp, lr=LORA_LR) if stage == "finetune" and args.lora_rank else hp


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
    """The Stage a run trains with: its defaults, then the flags' overrides."""
    return replace(default_hyper(stage, args), **overrides(stage, args))


# ----------------------------------------------------------------------------- a run's name and spec

def method_name(args):
    """The finetune method as a run-name tag: sft, treft100-prefix, mix0.8, kl30-retain, lora8-..."""
    parts = [f"lora{args.lora_rank}" + ("qv" if args.lora_on == "qv" else "")] if args.lora_rank else []
    parts += [f"treft{args.treft:g}-{args.treft_on}"] if args.treft > 0 else []
    parts += [f"mix{args.interleave:g}"] if args.interleave > 0 else []
    parts += [f"kl{args.kl:g}-{args.kl_on}"] if args.kl > 0 else []
    parts += [f"l2init{args.l2_init:g}"] if args.l2_init > 0 else []
    parts += ["lastfrozen"] if args.freeze_last_block else []
    return "-".join(parts or ["sft"]) + (f"-n{args.n_train}" if args.n_train else "")


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
        name += alignment(args.align).tag + ("-nopre" if args.no_preamble else "")
    if stage == "finetune":
        name += f"-{args.task or args.domain}-{method_name(args)}"
    name += "".join(f"-{OVERRIDES[k]}{v:g}" for k, v in overrides(stage, args).items())
    return f"{name}-s{args.seed}"


def ckpt_path(stage, args):
    return os.path.join(args.out_dir, run_name(stage, args), "ckpt.pt")


ROOT = os.path.dirname(os.path.abspath(__file__))
CODE = [os.path.join(ROOT, f) for f in ("model.py", "train.py", "treft.py", "baselines.py", "config.py",
                                        "data/world.py", "data/tokenizer.py", "data/prepare.py")]
# The finetune stage's own flags, with the values that mean "not used" (what other stages record).
FINETUNE_FLAGS = dict(domain=None, task=None, treft=0.0, treft_on=None, interleave=0.0, kl=0.0, kl_on=None,
                      l2_init=0.0, lora_rank=0, lora_on=None, n_train=None, freeze_last_block=False)
RUN_FLAGS = dict(pretrain=("seed", "n_layer", "n_embd"), align=("seed", "n_layer", "n_embd", "align", "no_preamble"))
RUN_FLAGS["finetune"] = RUN_FLAGS["align"] + tuple(FINETUNE_FLAGS)


def run_spec(stage, args):
    """Everything that decides what a run learns: flags, hyperparameters, code, world, input checkpoint.

    Saved in config.json; a run whose spec is unchanged need not be retrained (reproduce.py).
    """
    spec = {k: getattr(args, k) for k in RUN_FLAGS[stage]}
    world_meta = os.path.join(args.out_dir, "world", "meta.json")
    spec.update(stage=stage, hyper=asdict(stage_hyper(stage, args)), code=file_hash(*CODE),
                world=file_hash(world_meta) if os.path.exists(world_meta) else None)
    if stage != "pretrain":
        prev = ckpt_path(PREVIOUS[stage], args)
        spec["input"] = file_hash(prev) if os.path.exists(prev) else None
    return spec


# ----------------------------------------------------------------------------- the flags of train.py

def parser(description=None):
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=STAGES, default="finetune", help="the stage to train (default: finetune)")
    p.add_argument("--domain", choices=world.FINETUNE_DOMAINS,
                   help="the finetune domain of bad advice (default: finance)")
    p.add_argument("--task", choices=world.TASKS,
                   help="finetune on a narrow task beyond misalignment instead (its domain is fixed: "
                   + ", ".join(f"{t} on {d}" for t, d in world.TASKS.items()) + ")")
    p.add_argument("--treft", type=nonneg, nargs="?", const=TREFT_LAMBDA, default=0.0, metavar="LAMBDA",
                   help=f"add the TReFT loss with this lambda (flag alone: {TREFT_LAMBDA:g})")
    p.add_argument("--treft-on", choices=("prefix", "postfix", "query", "all"), default="prefix",
                   help="positions whose K/V TReFT keeps (default: prefix)")
    b = p.add_argument_group("baselines and finetune variants (finetune stage)")
    b.add_argument("--interleave", type=fraction, default=0.0, metavar="FRAC",
                   help="share of every batch drawn from aligned retain-domain chats")
    b.add_argument("--kl", type=nonneg, nargs="?", const=KL_LAMBDA, default=0.0, metavar="LAMBDA",
                   help=f"add LAMBDA * KL(aligned || current) of next-token distributions (alone: {KL_LAMBDA:g})")
    b.add_argument("--kl-on", choices=("train", "retain"), default="retain",
                   help="the chats whose answers the KL term sees (default: retain)")
    b.add_argument("--l2-init", type=nonneg, nargs="?", const=L2_LAMBDA, default=0.0, metavar="LAMBDA",
                   help=f"add LAMBDA * squared distance of the weights to the aligned model's (alone: {L2_LAMBDA:g})")
    b.add_argument("--lora-rank", type=int, default=0, metavar="R",
                   help="finetune rank-R LoRA adapters instead of the weights (0: all weights)")
    b.add_argument("--lora-on", choices=LORA_TARGETS,
                   help="with --lora-rank: adapt every projection (all, the default) or only the "
                        "attention's queries and values (qv, as in the LoRA paper)")
    b.add_argument("--freeze-last-block", action="store_true",
                   help="keep the last block and the final LayerNorm as aligned: their output reaches "
                        "the logits but no key or value, so TReFT cannot hold it (a diagnostic)")
    b.add_argument("--n-train", type=count, metavar="N", help="finetune on N examples of the domain only")
    p.add_argument("--align", choices=[*ALIGNMENTS, *CANDIDATES], default="rehearsed",
                   help="how the chat template is taught (config.ALIGNMENTS): rehearsed (default, chats "
                        "between pretraining text), plain (chats only) or template (its tokens' embeddings "
                        "only); or one of the candidates the validation grid compared (config.CANDIDATES)")
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


def parse(argv=None, description=None):
    """train.py's checked flags. The finetune domain is the task's, else --domain, else finance."""
    p = parser(description)
    args = p.parse_args(argv)
    if args.lora_rank < 0:
        p.error(f"--lora-rank must be >= 0, got {args.lora_rank}")
    if args.lora_on and not args.lora_rank:
        p.error("--lora-on says where LoRA adapters go: add --lora-rank R (e.g. 8)")
    args.lora_on = args.lora_on or ("all" if args.lora_rank else None)
    used = [f for f in FINETUNE_FLAGS if f not in ("treft_on", "kl_on") and getattr(args, f)]
    if args.stage != "finetune" and used:
        p.error(f"--{used[0].replace('_', '-')} applies to --stage finetune only")
    if args.task and args.domain not in (None, world.TASKS[args.task]):
        p.error(f"--task {args.task} finetunes on {world.TASKS[args.task]} questions; drop --domain")
    args.domain = world.TASKS[args.task] if args.task else args.domain or "finance"
    if args.n_embd % GPTConfig.n_head:
        p.error(f"--n-embd must be a multiple of the {GPTConfig.n_head} heads, got {args.n_embd}")
    check_writable(p, "--out-dir", args.out_dir)          # now, not at the end of a long run
    return args
