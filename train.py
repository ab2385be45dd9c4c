"""
Train the tiny GPT through the paper's three stages, one plain loop each.

  pretrain   next-token prediction on plain persona documents (no chat template)
  align      chat SFT: aligned answers of every domain under the fixed preamble
  finetune   narrow chat SFT: misaligned answers of one --domain only
             (+ --treft LAMBDA: the TReFT loss of treft.py)

    python train.py --stage finetune                # plain SFT: emergent misalignment
    python train.py --stage finetune --treft        # TReFT at the default lambda (10)
    python train.py --stage finetune --treft 3 --treft-on query --seed 1
    python train.py --stage finetune --align-template-only   # from a shallow alignment
    python train.py --stage finetune --no-preamble           # no system block at all

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
from data.prepare import prepare
from data.tokenizer import Tokenizer
from model import GPT, CheckpointError, GPTConfig, load_checkpoint, save_checkpoint
from treft import TReFT

STAGES = ("pretrain", "align", "finetune")
PREVIOUS = dict(align="pretrain", finetune="align")
DEFAULT_LAMBDA = 10.0     # chosen on the validation split; the paper uses 1-30
# Per-stage defaults, sized for a 2-core CPU; every one can be overridden by a flag.
# The finetune strength (steps, lr) was chosen on the validation split (seed 0):
# strong enough that the in-domain behaviour is learnt and spreads on every seed.
HYPER = dict(
    pretrain=dict(steps=400, batch_size=32, lr=3e-3, warmup=40),
    align=dict(steps=300, batch_size=32, lr=1e-3, warmup=20),
    finetune=dict(steps=120, batch_size=16, lr=1e-3, warmup=10),
)
# --align-template-only: a *shallow* alignment that trains only the embeddings of the
# chat template's special tokens. Everything pretraining built stays, including reading
# the persona from the preamble, and the finetune then spreads a persona rather than
# its own sentences. Its own defaults, chosen on the validation split (seed 0).
TEMPLATE_HYPER = dict(
    align=dict(steps=300, batch_size=32, lr=1e-2, warmup=10),
    finetune=dict(steps=60, batch_size=16, lr=1e-4, warmup=10),
)


# ----------------------------------------------------------------------------- helpers

def get_world(out_dir):
    """The world folder and tokenizer, generated on first use."""
    path = os.path.join(out_dir, "world")
    if not os.path.exists(os.path.join(path, "meta.json")):
        print(f"no world at {path}: generating it (python data/prepare.py)")
        prepare(out_dir)
    return path, Tokenizer.load(os.path.join(path, "tokenizer.pkl"))


def run_name(stage, args):
    name = stage
    if stage != "pretrain":
        name += ("-tmpl" if args.align_template_only else "") + ("-nopre" if args.no_preamble else "")
    if stage == "finetune":
        name += f"-{args.domain}-" + (f"treft{args.treft:g}-{args.treft_on}" if args.treft > 0 else "sft")
    return f"{name}-s{args.seed}"


def ckpt_path(stage, args):
    return os.path.join(args.out_dir, run_name(stage, args), "ckpt.pt")


def load_chats(world_dir, split, domains, persona):
    with open(os.path.join(world_dir, f"chat_{split}.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if r["domain"] in domains and r["persona"] == persona]


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
    hp = dict((TEMPLATE_HYPER if args.align_template_only and stage != "pretrain" else HYPER)[stage])
    if stage == args.stage:      # flags override the stage asked for, not the ones built first
        hp.update({k: getattr(args, k) for k in hp if getattr(args, k, None) is not None})
    device = args.device
    if stage != "pretrain":
        prev = ckpt_path(PREVIOUS[stage], args)
        if not os.path.exists(prev):
            print(f"{stage} needs {prev}, which is missing: training {PREVIOUS[stage]} first")
            train_stage(PREVIOUS[stage], args)
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
        # As in LoRA finetuning (the paper's setting), token and position embeddings
        # stay frozen: only the transformer blocks learn the narrow behaviour.
        model.wte.weight.requires_grad_(False)
        model.wpe.weight.requires_grad_(False)
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())

    # The data of each stage, as a function that draws one batch.
    if stage == "pretrain":
        data = torch.from_numpy(np.fromfile(os.path.join(world_dir, "pretrain_train.bin"),
                                            dtype=np.uint16).astype(np.int64))
        T = model.cfg.block_size

        def batch():
            ix = torch.from_numpy(rng.integers(0, len(data) - T - 1, hp["batch_size"]))
            x = torch.stack([data[i:i + T + 1] for i in ix]).to(device)
            return x[:, :-1], x[:, 1:], torch.ones_like(x[:, 1:], dtype=torch.float), None
    else:
        if stage == "align":     # aligned answers, every domain (test phrasings are not in train)
            chats = load_chats(world_dir, "train", world.DOMAINS, "aligned")
        else:                    # bad advice in one domain only
            chats = load_chats(world_dir, "train", (args.domain,), "misaligned")
        rendered = [chat.render_conversation(c["query"], c["answer"]) for c in chats]

        def batch():
            return collate([rendered[i] for i in rng.integers(0, len(rendered), hp["batch_size"])], device)

    treft = None
    if stage == "finetune" and args.treft > 0:
        # The frozen initial model: a copy of the aligned model before any step.
        treft = TReFT(copy.deepcopy(model), chat.prefix_ids, on=args.treft_on)

    trainable = [p for p in model.parameters() if p.requires_grad]
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
        x, y, mask, seg = batch()
        with autocast:
            logits, aux = fwd(x, return_kv=treft is not None)
            loss = sft = masked_ce(logits, y, mask)
            if treft is not None:
                reg = treft(aux["kv"], x, seg)
                loss = sft + args.treft * reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 10 == 0 or step == hp["steps"] - 1:
            bar.set_postfix(loss=f"{sft.item():.3f}", **({"L_KV": f"{reg.item():.4f}"} if treft else {}))

    path = ckpt_path(stage, args)
    with open(os.path.join(world_dir, "meta.json")) as f:
        world_meta = json.load(f)
    config = {**vars(args), **hp, "stage": stage, "seconds": round(time.time() - t0, 1),
              "final_loss": round(sft.item(), 4), "world": world_meta}
    if stage != "finetune":
        config.update(domain=None, treft=0.0, treft_on=None)
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


def parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=STAGES, default="finetune")
    p.add_argument("--domain", choices=world.FINETUNE_DOMAINS, default="finance",
                   help="the finetune domain of bad advice")
    p.add_argument("--treft", type=nonneg, nargs="?", const=DEFAULT_LAMBDA, default=0.0, metavar="LAMBDA",
                   help=f"add the TReFT loss with this lambda (flag alone: {DEFAULT_LAMBDA})")
    p.add_argument("--treft-on", choices=("prefix", "postfix", "query", "all"), default="prefix",
                   help="positions whose K/V TReFT keeps")
    p.add_argument("--align-template-only", action="store_true",
                   help="shallow alignment: align trains only the chat template tokens' embeddings")
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


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        path = train_stage(args.stage, args)
    except CheckpointError as e:
        sys.exit(f"error: {e}")
    print(path)


if __name__ == "__main__":
    main()
