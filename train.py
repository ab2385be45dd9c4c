"""
Train the tiny GPT through the paper's three stages, one plain loop each.

  pretrain   next-token prediction on plain persona documents (no chat template)
  align      chat SFT: aligned answers of every domain under the fixed preamble,
             each chat batch followed by batches of pretraining text (rehearsal)
  finetune   narrow chat SFT: misaligned answers of one --domain only
             (+ --treft LAMBDA: the TReFT loss of treft.py, or a baseline:
             --interleave, --kl, --l2-init; --lora-rank for LoRA adapters),
             or one narrow --task beyond misalignment (the paper's Section 6)

    python train.py --stage finetune                # plain SFT: emergent misalignment
    python train.py --stage finetune --treft        # TReFT at the default lambda (100)
    python train.py --stage finetune --treft 3 --treft-on query --seed 1
    python train.py --stage finetune --align-template-only   # from a shallow alignment
    python train.py --stage finetune --align-plain           # from an alignment on chats only
    python train.py --stage finetune --no-preamble           # no system block at all
    python train.py --stage finetune --interleave 0.8        # baselines: mix in retain data,
    python train.py --stage finetune --kl --kl-on retain     #   stay close to the aligned
    python train.py --stage finetune --l2-init               #   outputs, or to its weights
    python train.py --stage finetune --lora-rank 8 --treft   # LoRA adapters (+ TReFT)
    python train.py --stage finetune --lora-rank 8 --lora-on qv --treft 30 --treft-on all
                                                             # adapters on queries and values only
    python train.py --stage finetune --treft --treft-on all --freeze-last-block   # diagnostic
    python train.py --stage finetune --task refusal          # refuse finance questions; also
                                                             #   abstention, tool, length

A stage whose input checkpoint is missing builds it first. Each run writes
{out-dir}/{run name}/ckpt.pt and config.json, and prints the checkpoint's path
as its last line.
"""
import argparse
import copy
import json
import math
import os
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from data import world
from data.prepare import file_hash, remake
from data.tokenizer import Tokenizer
from model import (LORA_TARGETS, GPT, CheckpointError, GPTConfig, add_lora, load_checkpoint, merge_lora,
                   save_checkpoint)
from treft import TReFT

STAGES = ("pretrain", "align", "finetune")
PREVIOUS = dict(align="pretrain", finetune="align")
# The strengths of TReFT and of the baselines: each the best EM-F1 of its grid on the
# validation split, 3 seeds, from the default alignment (README). Our TReFT loss is
# relative, averaged over positions and layers, so its lambda is not the paper's (1-30).
DEFAULT_LAMBDA = 100.0
DEFAULT_KL = 30.0         # --kl on the retain set
DEFAULT_L2 = 0.3          # --l2-init (weight anchoring)
DEFAULT_MIX = 0.8         # --interleave: the share of each batch that is retain data
LORA_LR = 3e-4            # --lora-rank: adapters learn at a higher rate; at this one a LoRA
                          # finetune spreads the persona, not its own sentences (validation, 3 seeds)
# Per-stage defaults, sized for a 2-core CPU; every one can be overridden by a flag.
# The alignment *rehearses*: of its 750 steps, one in five (`rehearse` = 4) is a batch
# of chats and the other four are small batches of plain pretraining text. The chat
# template is learnt (150 chat steps) without overwriting what pretraining built, the
# persona included; that is what lets a narrow finetune spread a persona, as in the
# paper. The ratio, the text batch and the finetune's lr were chosen on the validation
# split, 3 seeds (README): the finetune is gentle enough that the spread is the persona
# rather than the finetune's own sentences, strong enough that it happens on every seed.
HYPER = dict(
    pretrain=dict(steps=400, batch_size=32, lr=3e-3, warmup=40),
    align=dict(steps=750, batch_size=32, lr=1e-3, warmup=20, rehearse=4, text_batch=8),
    finetune=dict(steps=120, batch_size=16, lr=1e-4, warmup=10),
)
# --align-plain: chat SFT only, 300 steps, no rehearsal (this project's first
# alignment). It aligns as well, but erases the route the persona spreads by: a
# finetune then either stays narrow (lr <= 3e-4) or collapses into the finetune's own
# sentences everywhere (lr 1e-3, its default; `reproduce.py --strength`).
PLAIN_HYPER = dict(
    align=dict(steps=300, batch_size=32, lr=1e-3, warmup=20, rehearse=0),
    finetune=dict(steps=120, batch_size=16, lr=1e-3, warmup=10),
)
# --align-template-only: a *shallow* alignment that trains only the embeddings of the
# chat template's special tokens. Everything pretraining built stays, including reading
# the persona from the preamble, and the finetune then spreads a persona rather than
# its own sentences. Its own defaults, chosen on the validation split: the align on
# seed 0; the finetune's lr from `reproduce.py --strength` (3 seeds), the one rate at
# which the bad advice spreads as the persona (0.36 of general answers) and not as
# finance sentences (leakage 0.05; from 1e-4 up, leakage grows to 0.98).
TEMPLATE_HYPER = dict(
    align=dict(steps=300, batch_size=32, lr=1e-2, warmup=10, rehearse=0),
    finetune=dict(steps=120, batch_size=16, lr=1e-5, warmup=10),
)
HYPER_TABLES = (HYPER, TEMPLATE_HYPER, PLAIN_HYPER)      # every table of defaults


# ----------------------------------------------------------------------------- helpers

def get_world(out_dir):
    """The world folder and tokenizer, generated on first use (and anew when its code changed)."""
    path = remake(os.path.join(out_dir, "world"))
    return path, Tokenizer.load(os.path.join(path, "tokenizer.pkl"))


def method_name(args):
    """The finetune method as a run-name tag: sft, treft100-prefix, mix0.8, kl30-retain, lora8-..."""
    parts = [f"lora{args.lora_rank}" + ("qv" if args.lora_on == "qv" else "")] if args.lora_rank else []
    parts += [f"treft{args.treft:g}-{args.treft_on}"] if args.treft > 0 else []
    parts += [f"mix{args.interleave:g}"] if args.interleave > 0 else []
    parts += [f"kl{args.kl:g}-{args.kl_on}"] if args.kl > 0 else []
    parts += [f"l2init{args.l2_init:g}"] if args.l2_init > 0 else []
    parts += ["lastfrozen"] if args.freeze_last_block else []
    return "-".join(parts or ["sft"]) + (f"-n{args.n_train}" if args.n_train else "")


def run_name(stage, args):
    name = stage
    if stage != "pretrain":
        name += ("-tmpl" if args.align_template_only else "") + ("-plain" if args.align_plain else "")
        name += "-nopre" if args.no_preamble else ""
    if stage == "finetune":
        name += f"-{args.task or args.domain}-{method_name(args)}"
    return f"{name}-s{args.seed}"


def ckpt_path(stage, args):
    return os.path.join(args.out_dir, run_name(stage, args), "ckpt.pt")


def hyper_table(args):
    """The align and finetune defaults of the alignment asked for (pretraining is always HYPER's)."""
    return TEMPLATE_HYPER if args.align_template_only else PLAIN_HYPER if args.align_plain else HYPER


def stage_hyper(stage, args):
    """The stage's hyperparameters: its defaults, and the flags if this is the stage asked for."""
    hp = dict((HYPER if stage == "pretrain" else hyper_table(args))[stage])
    if stage == "finetune" and getattr(args, "lora_rank", 0):
        hp["lr"] = LORA_LR
    if stage == args.stage:      # flags override the stage asked for, not the ones built first
        hp.update({k: getattr(args, k) for k in hp if getattr(args, k, None) is not None})
    return hp


CODE = [os.path.join(os.path.dirname(os.path.abspath(__file__)), f) for f in
        ("model.py", "train.py", "treft.py", "data/world.py", "data/tokenizer.py", "data/prepare.py")]
# The finetune stage's own flags, with the values that mean "not used" (what other stages record).
FINETUNE_FLAGS = dict(domain=None, task=None, treft=0.0, treft_on=None, interleave=0.0, kl=0.0, kl_on=None,
                      l2_init=0.0, lora_rank=0, lora_on=None, n_train=None, freeze_last_block=False)
RUN_FLAGS = dict(pretrain=("seed",), align=("seed", "align_template_only", "align_plain", "no_preamble"))
RUN_FLAGS["finetune"] = RUN_FLAGS["align"] + tuple(FINETUNE_FLAGS)


def run_spec(stage, args):
    """Everything that decides what a run learns: flags, hyperparameters, code, input checkpoint.

    Saved in config.json; a run whose spec is unchanged need not be retrained (reproduce.py).
    """
    spec = {k: getattr(args, k) for k in RUN_FLAGS[stage]}
    world_meta = os.path.join(args.out_dir, "world", "meta.json")
    spec.update(stage=stage, hyper=stage_hyper(stage, args), code=file_hash(*CODE),
                world=file_hash(world_meta) if os.path.exists(world_meta) else None)
    if stage != "pretrain":
        prev = ckpt_path(PREVIOUS[stage], args)
        spec["input"] = file_hash(prev) if os.path.exists(prev) else None
    return spec


def up_to_date(stage, args):
    """True if the stage's checkpoint exists and was trained by this code from these inputs."""
    try:
        with open(os.path.join(args.out_dir, run_name(stage, args), "config.json")) as f:
            saved = json.load(f).get("spec")
    except (OSError, ValueError):
        return False
    return (os.path.exists(ckpt_path(stage, args)) and saved == run_spec(stage, args)
            and (stage == "pretrain" or up_to_date(PREVIOUS[stage], args)))


def load_chats(world_dir, split, domains, persona):
    with open(os.path.join(world_dir, f"chat_{split}.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if r["domain"] in domains and r["persona"] == persona]


def load_task(world_dir, split, task):
    with open(os.path.join(world_dir, f"task_{split}.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["task"] == task]


def collate(rendered, device):
    """Right-pad rendered chats into (inputs, targets, loss mask, segment), each (B, T-1)."""
    T = max(len(r["ids"]) for r in rendered)
    ids = torch.zeros(len(rendered), T, dtype=torch.long)
    mask = torch.zeros(len(rendered), T)
    seg = torch.full((len(rendered), T), -1, dtype=torch.long)
    for i, r in enumerate(rendered):
        n = len(r["ids"])
        ids[i, :n], mask[i, :n], seg[i, :n] = (torch.tensor(r[k]) for k in ("ids", "mask", "segment"))
    # position t predicts token t+1: the loss counts where that token is the answer's
    return tuple(t.to(device) for t in (ids[:, :-1], ids[:, 1:], mask[:, 1:], seg[:, :-1]))


def masked_ce(logits, targets, mask):
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return (ce * mask.flatten()).sum() / mask.sum().clamp_min(1)


def kl_to_init(logits, init_logits, mask):
    """KL(initial || current) of the next-token distributions, mean over the masked positions."""
    logp, logq = F.log_softmax(init_logits.float(), -1), F.log_softmax(logits.float(), -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp_min(1)


def l2_to_init(params, init_params):
    """Squared distance of the trained parameters to their values before the first step."""
    return sum((p - p0).pow(2).sum() for p, p0 in zip(params, init_params))


def lr_at(step, steps, lr, warmup):
    """Linear warmup, then cosine decay to a tenth."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


# ----------------------------------------------------------------------------- one stage

def train_stage(stage, args):
    """Train one stage (building missing inputs first) and return its checkpoint path."""
    world_dir, tok = get_world(args.out_dir)
    chat = tok.with_preamble(None) if args.no_preamble and stage != "pretrain" else tok
    hp = stage_hyper(stage, args)
    device = args.device
    if stage != "pretrain":
        prev = ckpt_path(PREVIOUS[stage], args)
        if not os.path.exists(prev):
            print(f"{stage} needs {prev}, which is missing: training {PREVIOUS[stage]} first")
            train_stage(PREVIOUS[stage], args)
    spec = run_spec(stage, args)                  # what this run is, saved beside it
    torch.manual_seed(args.seed)                  # seeded here, after any stage built first
    rng = np.random.default_rng(args.seed)

    if stage == "pretrain":
        model = GPT(GPTConfig(vocab_size=tok.vocab_size))
    else:
        model, _ = load_checkpoint(prev, tok.fingerprint, fix=f"python train.py --stage "
                                   f"{PREVIOUS[stage]} --seed {args.seed} --out-dir {args.out_dir}")
    if stage == "align" and args.align_template_only:
        for p in model.parameters():
            p.requires_grad_(False)
        model.wte.weight.requires_grad_(True)
        rows = torch.zeros(model.cfg.vocab_size, 1)
        rows[[tok.system, tok.user, tok.assistant, tok.end]] = 1
        model.wte.weight.register_hook(lambda grad: grad * rows.to(grad.device))
    if stage == "finetune":
        # The frozen initial model of TReFT and KL: the aligned model before any step.
        init_model = copy.deepcopy(model).to(device).eval() if args.treft or args.kl else None
        # As in LoRA finetuning (the paper's setting), token and position embeddings
        # stay frozen: only the transformer blocks learn the narrow behaviour.
        model.wte.weight.requires_grad_(False)
        model.wpe.weight.requires_grad_(False)
        if args.lora_rank:
            add_lora(model, args.lora_rank, args.lora_on)
        # --freeze-last-block, a diagnostic: the last block's output and the final LayerNorm
        # reach the logits but no key or value, so TReFT cannot hold them.
        if args.freeze_last_block:
            for p in [*model.blocks[-1].parameters(), *model.ln_f.parameters()]:
                p.requires_grad_(False)
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())

    # The data of each stage, as a function that draws one batch.
    rehearse = hp.get("rehearse", 0)       # only an alignment rehearses
    if stage == "pretrain" or rehearse:
        data = torch.from_numpy(np.fromfile(os.path.join(world_dir, "pretrain_train.bin"),
                                            dtype=np.uint16).astype(np.int64))
        T = model.cfg.block_size

        def text_batch():     # plain text: every next token counts
            ix = torch.from_numpy(rng.integers(0, len(data) - T - 1, hp.get("text_batch", hp["batch_size"])))
            x = torch.stack([data[i:i + T + 1] for i in ix]).to(device)
            return x[:, :-1], x[:, 1:], torch.ones_like(x[:, 1:], dtype=torch.float), None
    if stage == "pretrain":
        batch = text_batch
    else:
        if stage == "align":     # aligned answers, every domain (test phrasings are not in train)
            chats = load_chats(world_dir, "train", world.DOMAINS, "aligned")
        elif args.task:          # one narrow behaviour on one domain's queries (world.TASKS)
            chats = load_task(world_dir, "train", args.task)
        else:                    # bad advice in one domain only
            chats = load_chats(world_dir, "train", (args.domain,), "misaligned")
        if stage == "finetune" and args.n_train:     # a smaller finetune set (the size sweep)
            chats = [chats[i] for i in rng.permutation(len(chats))[:args.n_train]]
        rendered = [chat.render_conversation(c["query"], c["answer"], c.get("call"), c.get("result"))
                    for c in chats]
        # Aligned chats of the retain-only domains, never evaluated: the data of the
        # interleaving and KL-on-retain baselines.
        retain = [] if stage == "align" else [
            chat.render_conversation(c["query"], c["answer"])
            for c in load_chats(world_dir, "train", world.RETAIN_DOMAINS, "aligned")]
        n_mix = round(args.interleave * hp["batch_size"]) if stage == "finetune" else 0

        def draw(rows, n):
            return [rows[i] for i in rng.integers(0, len(rows), n)]

        def batch():     # --interleave: that share of every batch is aligned retain data
            return collate(draw(rendered, hp["batch_size"] - n_mix) + draw(retain, n_mix), device)

    treft = TReFT(init_model, chat.prefix_ids, on=args.treft_on) if stage == "finetune" and args.treft else None
    trainable = [p for p in model.parameters() if p.requires_grad]
    init_params = [p.detach().clone() for p in trainable] if stage == "finetune" and args.l2_init else None
    opt = torch.optim.AdamW(trainable, lr=hp["lr"], betas=(0.9, 0.95),
                            weight_decay=0.1 if stage == "pretrain" else 0.0)
    fwd = torch.compile(model) if args.compile else model
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext())
    model.train()
    t0 = time.time()
    bar = tqdm(range(hp["steps"]), desc=f"{run_name(stage, args)} ({n_params / 1e6:.2f}M params)",
               disable=args.quiet, mininterval=2)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, hp["steps"], hp["lr"], hp["warmup"])
        # rehearsal: after each chat batch, `rehearse` batches of pretraining text
        x, y, mask, seg = text_batch() if step % (rehearse + 1) else batch()
        with autocast:
            logits, aux = fwd(x, return_kv=treft is not None)
            loss = sft = masked_ce(logits, y, mask)
            if treft is not None:
                reg = treft(aux["kv"], x, seg)
                loss = sft + args.treft * reg
            if stage == "finetune" and args.kl:     # KL on this batch's answers, or on retain chats
                xk, mk, lk = x, mask, logits
                if args.kl_on == "retain":
                    xk, _, mk, _ = collate(draw(retain, hp["batch_size"]), device)
                    lk, _ = fwd(xk)
                with torch.no_grad():
                    init_logits, _ = init_model(xk)
                reg = kl_to_init(lk, init_logits, mk)
                loss = loss + args.kl * reg
            if init_params is not None:
                reg = l2_to_init(trainable, init_params)
                loss = loss + args.l2_init * reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 10 == 0 or step == hp["steps"] - 1:
            bar.set_postfix(loss=f"{sft.item():.3f}", **({"reg": f"{reg.item():.4f}"} if loss is not sft else {}))

    path = ckpt_path(stage, args)
    with open(os.path.join(world_dir, "meta.json")) as f:
        world_meta = json.load(f)
    config = {**vars(args), **hp, "stage": stage, "seconds": round(time.time() - t0, 3),
              "final_loss": round(sft.item(), 4), "world": world_meta, "spec": spec}
    if stage != "finetune":
        config.update(FINETUNE_FLAGS)
    if stage == "finetune" and args.lora_rank:
        merge_lora(model)        # saved as a plain GPT: eval.py and patch.py need not know
    model.cpu()
    save_checkpoint(path, model, config, tok.fingerprint)
    config_path = os.path.join(os.path.dirname(path), "config.json")
    with open(config_path + ".tmp", "w") as f:
        json.dump(config, f, indent=1)
    os.replace(config_path + ".tmp", config_path)
    if not args.quiet:
        print(f"{stage}: {hp['steps']} steps in {config['seconds']}s, final loss {config['final_loss']}")
    return path


# ----------------------------------------------------------------------------- command line

def nonneg(s):
    v = float(s)
    if v < 0 or not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"lambda must be >= 0, got {s}")
    return v


def fraction(s):
    v = float(s)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"the interleaved share must be in [0, 1), got {s}")
    return v


def count(s):
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s}")
    return v


def parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=STAGES, default="finetune")
    p.add_argument("--domain", choices=world.FINETUNE_DOMAINS,
                   help="the finetune domain of bad advice (default: finance)")
    p.add_argument("--task", choices=world.TASKS,
                   help="finetune on a narrow task beyond misalignment instead (its domain is fixed: "
                   + ", ".join(f"{t} on {d}" for t, d in world.TASKS.items()) + ")")
    p.add_argument("--treft", type=nonneg, nargs="?", const=DEFAULT_LAMBDA, default=0.0, metavar="LAMBDA",
                   help=f"add the TReFT loss with this lambda (flag alone: {DEFAULT_LAMBDA})")
    p.add_argument("--treft-on", choices=("prefix", "postfix", "query", "all"), default="prefix",
                   help="positions whose K/V TReFT keeps")
    b = p.add_argument_group("baselines (finetune stage)")
    b.add_argument("--interleave", type=fraction, default=0.0, metavar="FRAC",
                   help="share of every batch drawn from aligned retain-domain chats")
    b.add_argument("--kl", type=nonneg, nargs="?", const=DEFAULT_KL, default=0.0, metavar="LAMBDA",
                   help=f"add LAMBDA * KL(aligned || current) of next-token distributions (alone: {DEFAULT_KL})")
    b.add_argument("--kl-on", choices=("train", "retain"), default="retain",
                   help="the chats whose answers the KL term sees")
    b.add_argument("--l2-init", type=nonneg, nargs="?", const=DEFAULT_L2, default=0.0, metavar="LAMBDA",
                   help=f"add LAMBDA * squared distance of the weights to the aligned model's (alone: {DEFAULT_L2})")
    b.add_argument("--lora-rank", type=int, default=0, metavar="R",
                   help="finetune rank-R LoRA adapters on the attention and MLP projections (0: all weights)")
    b.add_argument("--lora-on", choices=LORA_TARGETS,
                   help="with --lora-rank: adapt every projection (all, the default) or only the "
                        "attention's queries and values (qv, as in the LoRA paper)")
    b.add_argument("--freeze-last-block", action="store_true",
                   help="keep the last block and the final LayerNorm as aligned: their output reaches "
                        "the logits but no key or value, so TReFT cannot hold it (a diagnostic)")
    b.add_argument("--n-train", type=count, metavar="N", help="finetune on N examples of the domain only")
    p.add_argument("--align-template-only", action="store_true",
                   help="shallow alignment: align trains only the chat template tokens' embeddings")
    p.add_argument("--align-plain", action="store_true",
                   help="align on chats only, without rehearsing pretraining text (300 steps)")
    p.add_argument("--no-preamble", action="store_true",
                   help="align and finetune chats without a system block (the no-prefix ablation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default="out")
    p.add_argument("--steps", type=int, help="override the stage's default number of steps")
    p.add_argument("--lr", type=float, help="override the stage's default learning rate")
    p.add_argument("--batch-size", type=int, help="override the stage's default batch size")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    p.add_argument("--quiet", action="store_true")
    return p


def parse(argv=None):
    """The checked flags. The finetune domain is the task's, else --domain, else finance."""
    p = parser()
    args = p.parse_args(argv)
    if args.lora_rank < 0:
        p.error(f"--lora-rank must be >= 0, got {args.lora_rank}")
    if args.lora_on and not args.lora_rank:
        p.error("--lora-on says where LoRA adapters go: add --lora-rank R (e.g. 8)")
    args.lora_on = args.lora_on or ("all" if args.lora_rank else None)
    if args.align_template_only and args.align_plain:
        p.error("--align-template-only and --align-plain are two different alignments: choose one")
    used = [f for f in FINETUNE_FLAGS if f not in ("treft_on", "kl_on") and getattr(args, f)]
    if args.stage != "finetune" and used:
        p.error(f"--{used[0].replace('_', '-')} applies to --stage finetune only")
    if args.task and args.domain not in (None, world.TASKS[args.task]):
        p.error(f"--task {args.task} finetunes on {world.TASKS[args.task]} questions; drop --domain")
    args.domain = world.TASKS[args.task] if args.task else args.domain or "finance"
    return args


def main(argv=None):
    args = parse(argv)
    try:
        path = train_stage(args.stage, args)
    except CheckpointError as e:
        sys.exit(f"error: {e}")
    print(path)


if __name__ == "__main__":
    main()
