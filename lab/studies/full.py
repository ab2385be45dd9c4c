"""Everything on one GPU: every domain, every method, the lambda and size sweeps, and patching.

    python reproduce.py full --device cuda --jobs 3   # sized for one GPU (minutes there, hours on a CPU)
"""
from lab.studies.extended import LAMBDAS
from lab.studies.methods import Design, FinetuneStudy
from lab.studies.sizes import SIZES

DESIGN = Design(methods=("sft", "interleave", "kl-retain", "l2-init", "treft", "treft-postfix", "treft-query",
                         "treft-all", "kl-train", "lora", "lora-treft"),
                domains=("finance", "health", "legal", "auto"), lambdas=LAMBDAS, sizes=SIZES, patch=True)
STUDY = FinetuneStudy("full", DESIGN)
