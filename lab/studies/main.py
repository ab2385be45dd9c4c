"""The main study: SFT, three baselines and TReFT on finance, and the piggyback evidence on the SFT model.

Question: does a narrow finetune on bad financial advice spread to unrelated
questions (emergent misalignment), does TReFT stop the spread better than
interleaving, KL to the aligned model and weight anchoring, and does the
spread ride on the prefix (K/V patching, perturbation)?

    python reproduce.py            # 3 seeds, about 13 min on a 2-core CPU -> results/main/
"""
from lab.studies.methods import Design, FinetuneStudy

DESIGN = Design(methods=("sft", "interleave", "interleave-paper", "kl-retain", "l2-init", "treft"), patch=True,
                plots=("tradeoff.png", "em_f1.png", "patching.png", "layers.png", "drift.png", "segments.png"))
STUDY = FinetuneStudy("main", DESIGN)
