"""SFT and TReFT on fewer finetune examples (the paper's Table 7): does the spread need many?

    python reproduce.py sizes      # about 6 min on a 2-core CPU
"""
from lab.studies.methods import Design, FinetuneStudy

SIZES = (25, 50, 100, 200)        # finetune examples (the other studies use all 500)
DESIGN = Design(methods=("sft", "treft"), sizes=SIZES, sections=("methods", "drift", "segments", "cost", "sweeps"),
                plots=("tradeoff.png", "drift.png", "segments.png"))
STUDY = FinetuneStudy("sizes", DESIGN)
