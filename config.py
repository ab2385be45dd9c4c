"""
What decides a training run: each stage's hyperparameters, the three ways to
align, and the default strengths of TReFT and the baselines. Nothing here runs;
train.py reads it. A flag overrides a stage's steps, learning rate and batch
size (--steps, --lr, --batch-size: its own run) and sets each method's strength
(runs.py); the rest is changed here.

How each value was chosen, on the validation split, is told in
docs/findings.md#validation.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """The hyperparameters of one stage."""
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
    rehearsed=Alignment(
        tag="",
        align=Stage(steps=750, batch_size=32, lr=1e-3, warmup=20, rehearse=4, text_batch=8),
        finetune=Stage(steps=120, batch_size=16, lr=1e-4, warmup=10)),
    # Chat SFT only (this project's first alignment): it aligns as well, but erases the
    # route the persona spreads by; its finetune rate is the old default.
    plain=Alignment(
        tag="-plain",
        align=Stage(steps=300, batch_size=32, lr=1e-3, warmup=20),
        finetune=Stage(steps=120, batch_size=16, lr=1e-3, warmup=10)),
    # A *shallow* alignment: only the template tokens' embeddings learn, so everything
    # pretraining built stays, reading the persona from the preamble included.
    template=Alignment(
        tag="-tmpl",
        align=Stage(steps=300, batch_size=32, lr=1e-2, warmup=10),
        finetune=Stage(steps=120, batch_size=16, lr=1e-5, warmup=10),
        template_only=True),
)

# The default strengths: each the best mean EM-F1 of its grid on the validation split.
# Our TReFT loss is relative and averaged over positions and layers, so its lambda is
# not the paper's (1-30).
TREFT_LAMBDA = 100.0     # TReFT (train.py --treft)
HOLD_LAST_LAMBDA = TREFT_LAMBDA   # the last block's output held (--hold-last, a diagnostic): TReFT's
                                  # lambda on the same relative drift, not tuned
KL_LAMBDA = 30.0         # KL to the aligned model on the retain set (--kl)
KL_TRAIN_LAMBDA = 0.3    # KL on the finetune's own answers (--kl L --kl-on train): its own grid
L2_LAMBDA = 0.3          # weight anchoring (--l2-init)
MIX = 0.8                # interleaving (--interleave): the share of the training data (of each
                         # batch) that is aligned retain chats; the paper's is 0.2
PAPER_MIX = 0.2
REALIGN_STEPS = 10       # re-align afterwards (--realign): steps of 16 aligned retain chats after the
                         # finetune, 160 chats (Wang et al. 2025 re-align with a few hundred); its grid
                         # and choice are in results/conditional
REALIGN_WARMUP = 0.1     # the share of a re-alignment's steps that warm its rate up (rounded down)
LORA_RANK = 8            # the paper's rank
LORA_LR = 3e-4           # a LoRA finetune's learning rate (adapters learn at a higher rate)
# As in LoRA finetuning (the paper's setting), a finetune never moves the token and
# position embeddings: only the transformer blocks learn the narrow behaviour.
FINETUNE_FROZEN = ("wte.", "wpe.")
# How many tokens longer than the preamble another system text may be (train.py --preamble):
# a chat of the longest query and answer must still fit the block of 128 tokens.
PREAMBLE_ROOM = 16
