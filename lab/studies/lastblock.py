"""The paper's Table 3, tested where the evidence points: the computation after the last keys and values.

Question: in the paper, TReFT on the query or on every position blocks the
narrow learning (in-domain 79.0 and 76.9); here neither does (findings
chapter 3). TReFT on every position holds every key and value and still lets
the advice be learnt, so what learns it must be what no K/V carries: the last
block's output at the answer positions, read by the final LayerNorm and the
head. TReFT on the query and on all positions, each (a) as it is, (b) with
the last block and final LayerNorm frozen (--freeze-last-block), (c) with the
last block's output at the answer positions held near the aligned model's
(--hold-last, at TReFT's lambda), beside SFT and TReFT on the prefix.

Rule, written before the run: holding the computation after the last K/V
"blocks the advice, as in the paper's Table 3" for a position set if, pooled
over the 3 seeds, its in-domain alignment with (b) or (c) is at least 50
(the paper's query and all rows are 79 and 77; SFT's is about 2) and above
the same TReFT without it on every seed.

Added after the first run, whose (c) at TReFT's lambda held the output so
hard that no finetune learnt anything (in-domain and general the aligned
model's on every seed, with TReFT on the query as on all positions): the
output held alone, and the hold's lambda swept down (0.01, 0.1, 1), alone and
with TReFT on all positions. Rule for the sweep, before it ran: (c) shows the
Table 3 pattern for all positions at a lambda where the hold alone leaves the
advice learnt (in-domain under 20) and TReFT on all positions with it blocks
it (in-domain at least 50), on every seed.

    python reproduce.py lastblock   # 3 seeds -> results/lastblock/
"""
from lab.studies.methods import Design, FinetuneStudy

DESIGN = Design(methods=("sft", "treft", "treft-query", "treft-all", "treft-query-frozen", "treft-all-frozen",
                         "treft-query-hold", "treft-all-hold", "hold"),
                lambdas=(0.01, 0.1, 1.0), lambda_methods=("hold", "treft-all-hold"), lambda_flag="--hold-last",
                sections=("methods", "sweeps"), plots=("tradeoff.png",),
                title="The paper's Table 3 with the computation after the last keys and values held")
STUDY = FinetuneStudy("lastblock", DESIGN)
