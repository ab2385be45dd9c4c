"""SFT, interleaving, KL on retain, TReFT and LoRA on each of the four finetune domains (the paper's Table 2).

Question: does what holds on finance hold on health, legal and car advice, with
LoRA adapters (the paper's setting) as well as with every weight learning?

    python reproduce.py domains    # about 15 min on a 2-core CPU
"""
from lab.studies.methods import Design, FinetuneStudy

DESIGN = Design(methods=("sft", "interleave", "kl-retain", "treft", "lora", "lora-treft"), domains=("finance", "health", "legal", "auto"),
                sections=("methods", "domains", "drift", "segments", "cost"),
                plots=("tradeoff.png", "em_f1.png", "drift.png", "segments.png"))
STUDY = FinetuneStudy("domains", DESIGN)
