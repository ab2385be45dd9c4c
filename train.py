"""
Train the tiny GPT through the paper's three stages, one plain loop for all.

  pretrain   next-token prediction on plain persona documents (no chat template)
  align      chat SFT: aligned answers of every domain under the fixed preamble,
             each chat batch followed by batches of pretraining text (rehearsal)
  finetune   narrow chat SFT: bad advice in one --domain only (+ --treft LAMBDA: the
             TReFT loss of treft.py, or a baseline of baselines.py: --interleave, --kl,
             --l2-init; or --realign STEPS afterwards on aligned retain chats), or
             one narrow --task beyond misalignment (the paper's Section 6)

    python train.py --stage finetune                # plain SFT: emergent misalignment
    python train.py --stage finetune --treft        # TReFT at the default lambda (100)
    python train.py --stage finetune --treft 0.1 --treft-on query --seed 1 --domain legal
    python train.py --stage finetune --lora-rank 8 --lora-on qv --treft 30 --treft-on all
    python train.py --stage finetune --task refusal     # also abstention, tool, length

Every stage is the same loop: draw a batch, set the lr, forward, loss, backward,
clip, step. What differs between stages and methods is set up before the loop:
the model and which of its weights learn, a function that draws a batch, and
(lambda, regularizer) pairs added to the SFT loss (hyperparameters: config.py;
the flags and the run names they give: runs.py).

A stage whose input checkpoint is missing or stale (trained by other code, in
another world, under other flags or numerics: runs.why_stale) builds it first,
in place, saying why. Each run writes {out-dir}/{run name}/ckpt.pt and
config.json; pretraining also its loss on held-out text. A finetune judges the new
model beside the aligned model and the SFT model of the same seed and domain
(eval.py; --no-eval skips it), and the checkpoint's path is the last line.
"""
import copy
import math
import os
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

import config
import eval as evaluation
from baselines import HoldLastOutput, KLToInit, L2ToInit, interleaved
from checkpoint import CheckpointError, load_checkpoint
from common import atomic_write
from data import world
from data.batches import collate, held_out_text, render, sampler, text_batches
from data.prepare import get_world, load_chats, load_task
from lora import add_lora, merge_lora
from model import GPT, GPTConfig
from runs import (Refused, ckpt_path, command, fitting_preamble, method_name, parse, previous, run_name, run_spec,
                  save_run, saved_spec, sft_twin, stage_hyper, up_to_date, why_stale)
from treft import TReFT

# ----------------------------------------------------------------------------- each stage's setup

def freeze(model, names):
    """Stop every parameter whose name starts with one of `names` from learning."""
    for name, p in model.named_parameters():
        if name.startswith(tuple(names)):
            p.requires_grad_(False)


def load_input(stage, args, tok):
    prev = previous(stage, args)
    return load_checkpoint(ckpt_path(*prev), tok.fingerprint, fix=command(*prev),
                           world_dir=os.path.join(args.out_dir, "world"))[0]


def pretrain_setup(args, hp, tok, world_dir, rng):
    """A fresh model; batches of plain text; no regularizer."""
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=args.n_layer, n_embd=args.n_embd)).to(args.device)
    text = text_batches(world_dir, rng, hp.batch_size, model.cfg.block_size, args.device)
    return model, lambda step: text(), []


def rehearsal(chats, text, rehearse):
    """align's schedule: a batch of chats, then `rehearse` batches of plain pretraining
    text, and again, so that learning the template does not overwrite what pretraining built."""
    def next_batch(step):
        return text() if step % (rehearse + 1) else chats()
    return next_batch


def align_setup(args, hp, tok, world_dir, rng):
    """The pretrained model; aligned chats of every domain, each batch followed by `rehearse`
    batches of plain text. The template-only alignment trains just the template's embeddings."""
    model = load_input("align", args, tok)
    if config.ALIGNMENTS[args.align].template_only:
        freeze(model, [""])
        model.wte.weight.requires_grad_(True)
        rows = torch.zeros(model.cfg.vocab_size, 1)
        rows[[tok.system, tok.user, tok.assistant, tok.end]] = 1
        model.wte.weight.register_hook(lambda grad: grad * rows.to(grad.device))
    model.to(args.device)
    draw = sampler(render(tok, load_chats(world_dir, "train", world.DOMAINS, "aligned")), rng)
    text = text_batches(world_dir, rng, hp.text_batch or hp.batch_size, model.cfg.block_size, args.device)

    def chats():
        return collate(draw(hp.batch_size), args.device)
    return model, rehearsal(chats, text, hp.rehearse), []


def finetune_setup(args, hp, tok, world_dir, rng):
    """The aligned model (LoRA-wrapped if asked); the narrow chats, with retain chats mixed in
    for --interleave; TReFT, KL and weight anchoring as regularizers."""
    model = load_input("finetune", args, tok)
    needs_init = args.treft or args.kl or args.hold_last
    init = copy.deepcopy(model).to(args.device).eval() if needs_init else None     # the frozen start
    freeze(model, config.FINETUNE_FROZEN)
    if args.lora_rank:
        add_lora(model, args.lora_rank, args.lora_on)
    if args.freeze_last_block:     # a diagnostic: what these compute reaches the logits but no K/V
        freeze(model, [f"blocks.{model.cfg.n_layer - 1}.", "ln_f."])
    model.to(args.device)
    chats = load_task(world_dir, "train", args.task) if args.task else \
        load_chats(world_dir, "train", (args.domain,), "misaligned")
    if args.n_train:               # a smaller finetune set (the size sweep)
        chats = [chats[i] for i in rng.permutation(len(chats))[:args.n_train]]
    draw = sampler(render(tok, chats), rng)
    # Aligned chats of the retain-only domains, never evaluated: interleaving's and KL's data.
    draw_retain = sampler(render(tok, load_chats(world_dir, "train", world.RETAIN_DOMAINS, "aligned")), rng)
    mixed = interleaved(draw, draw_retain, hp.batch_size, args.interleave)
    regularizers = []
    if args.treft:
        regularizers.append((args.treft, TReFT(init, tok, on=args.treft_on)))
    if args.kl:
        retain = (lambda: collate(draw_retain(hp.batch_size), args.device)) if args.kl_on == "retain" else None
        regularizers.append((args.kl, KLToInit(model, init, retain)))
    if args.l2_init:
        regularizers.append((args.l2_init, L2ToInit([p for p in model.parameters() if p.requires_grad])))
    if args.hold_last:
        regularizers.append((args.hold_last, HoldLastOutput(model, init)))
    return model, lambda step: collate(mixed(), args.device), regularizers


def realign_setup(args, hp, tok, world_dir, rng):
    """Re-align afterwards (Wang et al. 2025): the finished finetune (the same run without
    --realign), trained on aligned chats of the retain-only domains; no regularizer."""
    model = load_input("finetune", args, tok)
    freeze(model, config.FINETUNE_FROZEN)
    if args.lora_rank:
        add_lora(model, args.lora_rank, args.lora_on)
    draw = sampler(render(tok, load_chats(world_dir, "train", world.RETAIN_DOMAINS, "aligned")), rng)
    return model.to(args.device), lambda step: collate(draw(hp.batch_size), args.device), []


def setup(stage, args, hp, tok, world_dir, rng):
    """(model, next_batch(step), [(lambda, regularizer)]) of a stage."""
    if stage == "finetune":
        return (realign_setup if args.realign else finetune_setup)(args, hp, tok, world_dir, rng)
    return (pretrain_setup if stage == "pretrain" else align_setup)(args, hp, tok, world_dir, rng)


# ----------------------------------------------------------------------------- the loop

def masked_ce(logits, targets, mask):
    """L_SFT: the mean cross-entropy of the next tokens (targets, (B, T)) over every position of
    the batch where mask (B, T) is 1, the answer's; 0 where there is none. logits: (B, T, vocab)."""
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return (ce * mask.flatten()).sum() / mask.sum().clamp_min(1)


def loss_of(model, batch, regularizers):
    """(the loss to minimise, the SFT part of it): L_SFT + the sum of lambda * regularizer."""
    logits, aux = model(batch.x, return_kv=True)
    loss = sft = masked_ce(logits, batch.y, batch.mask)
    for lam, reg in regularizers:
        loss = loss + lam * reg(batch, logits, aux["kv"])
    return loss, sft


class Diverged(Exception):
    """The loss or the gradient norm stopped being a finite number: the run stops, writing nothing."""


def check_finite(recent, first_step, stage, hp):
    """recent: one bool tensor per step since first_step (loss and gradient norm both finite).
    Checked every few steps, with the progress bar, so a healthy run waits for no extra sync."""
    bad = (~torch.stack(recent)).nonzero()
    if len(bad):
        raise Diverged(f"{stage} diverged: the loss or its gradient is not a finite number at step "
                       f"{first_step + bad[0].item()} of {hp.steps} (lr {hp.lr:g}); nothing was written; "
                       f"try a lower --lr")


def lr_at(step, steps, lr, warmup):
    """Linear warmup, then cosine decay to a tenth."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def build_if_stale(stage, args, needed_by, progress=None):
    """Train a run that `needed_by` builds on or judges beside if it is missing or stale, saying why.
    A checkpoint with no record of its training is not ours to replace: it is loaded, or refused."""
    if os.path.exists(ckpt_path(stage, args)) and saved_spec(stage, args) is None:
        return
    if not up_to_date(stage, args):
        why = why_stale(stage, args) or "a run it is built on is stale"
        print(f"{needed_by} needs {ckpt_path(stage, args)}: {why}; training {stage} first")
        train_stage(stage, args, progress)


def train_stage(stage, args, progress=None):
    """Train one stage (building a missing input first) and return its checkpoint path.
    progress(text), if given, hears how far the stage is every few steps (reproduce.py's bar)."""
    world_dir, tok = get_world(args.out_dir)
    if args.no_preamble and stage != "pretrain":
        tok = tok.with_preamble(None)
    if args.preamble and stage == "finetune":           # trained under another system text
        tok = tok.with_preamble(fitting_preamble(args, tok))
    prev = previous(stage, args)
    if prev:                                      # never built on a run of other code, world or numerics
        build_if_stale(*prev, stage, progress)
    hp, spec = stage_hyper(stage, args), run_spec(stage, args)
    torch.manual_seed(args.seed)                  # seeded here, after any stage built first
    rng = np.random.default_rng(args.seed)
    model, next_batch, regularizers = setup(stage, args, hp, tok, world_dir, rng)

    # One group: weight decay reaches every trained parameter, biases and LayerNorm gains too,
    # where nanoGPT decays only the 2-D weights. It keeps the loop plain, and changing it now
    # would change every trained number.
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=hp.lr,
                            betas=(0.9, 0.95), weight_decay=hp.weight_decay)
    fwd = torch.compile(model) if args.compile else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if args.device.startswith("cuda") else nullcontext()
    n_params = sum(p.numel() for p in model.parameters())
    bar = tqdm(range(hp.steps), desc=f"{run_name(stage, args)} ({n_params / 1e6:.2f}M params)",
               disable=args.quiet, mininterval=2)
    model.train()
    t0, recent, last = time.time(), [], {}
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, hp.steps, hp.lr, hp.warmup)
        batch = next_batch(step)
        with autocast:
            loss, sft = loss_of(fwd, batch, regularizers)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent.append(torch.isfinite(loss.detach()) & torch.isfinite(norm))
        last["text" if batch.segment is None else "chats"] = sft.detach()   # the last loss of each kind
        if step % 10 == 0 or step == hp.steps - 1:
            check_finite(recent, step + 1 - len(recent), stage, hp)
            recent = []
            bar.set_postfix(sft=f"{sft.item():.3f}", loss=f"{loss.item():.3f}")
            if progress:
                progress(f"{stage} {step + 1}/{hp.steps}")
    final = {kind: round(x.item(), 4) for kind, x in sorted(last.items())}
    seconds, extra = time.time() - t0, {}
    if stage == "pretrain":        # held-out text, drawn by no random number: nothing trained moves
        with torch.no_grad():
            val = held_out_text(world_dir, model.cfg.block_size, args.device)
            extra["val_loss"] = round(masked_ce(model(val.x)[0], val.y, val.mask).item(), 4)
    return save_run(stage, args, merge_lora(model).cpu(), tok, hp, spec, final, seconds, extra)


# ----------------------------------------------------------------------------- what a finetune did

def show_effect(args, path):
    """Judge the new model beside the aligned model and the SFT model of the same seed and
    domain (trained first if missing or stale), as eval.py judges one model."""
    sft = sft_twin(args)
    build_if_stale("finetune", sft, "the judging beside SFT")
    roles = [("aligned", "align", args), ("SFT", "finetune", sft)]
    roles += [(method_name(args), "finetune", args)] if ckpt_path("finetune", sft) != path else []  # unless SFT
    world_dir, tok = get_world(args.out_dir)
    tok = tok.with_preamble(None) if args.no_preamble else tok
    models = [(role, run_name(stage, a), load_checkpoint(ckpt_path(stage, a), tok.fingerprint, fix=command(stage, a),
                                                         world_dir=world_dir)[0].to(args.device))
              for role, stage, a in roles]
    evaluation.compare(models, tok, args.domain, args.task)


# ----------------------------------------------------------------------------- command line

def main(argv=None):
    args, path = parse(argv, __doc__), None
    try:
        path = train_stage(args.stage, args)
        atomic_write(os.path.join(args.out_dir, evaluation.LAST_RUN), path + "\n")     # what a bare eval.py judges
        if args.stage == "finetune" and not args.no_eval:
            show_effect(args, path)
    except (CheckpointError, Diverged, Refused) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:         # in training nothing is written; in the judging the run is
        done = f"{path} is written, the judging stopped" if path else "the run stopped before writing"
        print(f"\ninterrupted: {done}; every other file is as it was", file=sys.stderr)
        sys.exit(130)
    print(path)


if __name__ == "__main__":
    main()
