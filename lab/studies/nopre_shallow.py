"""No system block, from the shallow alignment: here the behaviour moves to the postfix.

Question: the nopre study's ablation when the alignment moved only the template
tokens' embeddings (config.ALIGNMENTS["template"]), so that the spread is the
villain persona: does patching the postfix's K/V then give back what patching
the prefix did with a preamble?

    python reproduce.py nopre_shallow   # about 5 min on a 2-core CPU
"""
from lab.studies.methods import Design, FinetuneStudy
from lab.studies.nopre import DESIGN as NOPRE

DESIGN = Design(methods=NOPRE.methods, patch=True, train_flags=("--align", "template", "--no-preamble"),
                sections=NOPRE.sections, plots=NOPRE.plots, title="Results without a system block, shallow alignment")
STUDY = FinetuneStudy("nopre_shallow", DESIGN)
