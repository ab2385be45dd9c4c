"""The main study and TReFT's positions from a shallow alignment (template tokens only): EM proper.

Question: when the alignment moves only the template tokens' embeddings, does a
narrow finetune spread the villain persona itself, and does TReFT on each
position stop it? (config.ALIGNMENTS["template"])

    python reproduce.py shallow    # about 15 min on a 2-core CPU
"""
from lab.studies.main import DESIGN as MAIN
from lab.studies.methods import Design, FinetuneStudy

DESIGN = Design(methods=MAIN.methods + ("treft-postfix", "treft-query", "treft-all"), patch=True,
                train_flags=("--align", "template"), plots=MAIN.plots, title="Results from the shallow alignment")
STUDY = FinetuneStudy("shallow", DESIGN)
