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

    python reproduce.py lastblock   # 3 seeds -> results/lastblock/
"""
from lab.studies.methods import Design, FinetuneStudy

DESIGN = Design(methods=("sft", "treft", "treft-query", "treft-all", "treft-query-frozen", "treft-all-frozen",
                         "treft-query-hold", "treft-all-hold"),
                sections=("methods",), plots=("tradeoff.png",),
                title="The paper's Table 3 with the computation after the last keys and values held")
STUDY = FinetuneStudy("lastblock", DESIGN)
