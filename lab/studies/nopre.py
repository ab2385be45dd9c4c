"""No system block at all (the paper's Table 11): where does the behaviour ride without a prefix?

Question: align and finetune with --no-preamble, so that the prefix is only
<|bos|><|user|>. Does patching the postfix then give back what patching the
prefix gave back before?

    python reproduce.py nopre      # about 8 min on a 2-core CPU
"""
from lab.studies.methods import Design, FinetuneStudy

DESIGN = Design(methods=("sft",), patch=True, train_flags=("--no-preamble",),
                sections=("methods", "patch", "drift", "segments"),
                plots=("tradeoff.png", "patching.png", "layers.png", "drift.png", "segments.png"),
                title="Results without a system block")
STUDY = FinetuneStudy("nopre", DESIGN)
