"""Every baseline and TReFT variant on finance: positions, KL on train, LoRA, and the lambda sweep.

Question: the paper's Table 3 in full (TReFT on the prefix, postfix, query and
all positions; KL on train and on retain), LoRA with and without TReFT, and
how EM-F1 moves with TReFT's lambda (Figure 9).

    python reproduce.py extended   # about 10 min on a 2-core CPU, reusing the main study's runs
"""
from lab.studies.methods import Design, FinetuneStudy

LAMBDAS = (0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000)     # the Figure 9 sweep, TReFT on the prefix
DESIGN = Design(methods=("sft", "interleave", "kl-retain", "kl-train", "l2-init", "treft", "treft-postfix",
                         "treft-query", "treft-all", "lora", "lora-treft"), lambdas=LAMBDAS,
                sections=("methods", "drift", "segments", "cost", "sweeps"),
                plots=("tradeoff.png", "em_f1.png", "lambda.png", "drift.png", "segments.png"))
STUDY = FinetuneStudy("extended", DESIGN)
