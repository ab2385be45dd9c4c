"""The main study from the plain alignment (chats only, no rehearsed text): the spread is a collapse.

Question: what does a narrow finetune spread when the alignment has overwritten
what pretraining built? (config.ALIGNMENTS["plain"])

    python reproduce.py plain      # about 10 min on a 2-core CPU
"""
from lab.studies.main import DESIGN as MAIN
from lab.studies.methods import Design, FinetuneStudy

DESIGN = Design(methods=MAIN.methods, patch=True, train_flags=("--align", "plain"), plots=MAIN.plots,
                title="Results from the plain alignment")
STUDY = FinetuneStudy("plain", DESIGN)
