"""TReFT's positions under LoRA on the attention's queries and values only, over a grid of lambdas.

Question: the paper finetunes LoRA adapters; with adapters on q and v only (the
LoRA paper's choice) no adapter reaches an MLP, so whatever the finetune changes
must pass through keys and values. Does TReFT on the prefix, the query and all
positions then block the bad advice in the paper's order (its Table 3, with
lambda an axis rather than a choice)?

    python reproduce.py lora_qv    # about 14 min on a 2-core CPU
"""
from lab.studies.methods import Design, FinetuneStudy

DESIGN = Design(methods=("lora-qv",), lambdas=(1, 3, 10, 30, 100),
                lambda_methods=("lora-qv-treft-prefix", "lora-qv-treft-query", "lora-qv-treft-all"),
                sections=("methods", "segments", "positions", "sweeps"),
                plots=("tradeoff.png", "em_f1.png", "lambda.png", "segments.png"))
STUDY = FinetuneStudy("lora_qv", DESIGN)
