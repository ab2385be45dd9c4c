"""
Exercise 7 (open): a finetune that learns the bad advice and leaves the prefix alone.

The piggyback hypothesis says SFT stores the new behaviour in the prefix's keys
and values. Choose train.py's finetune flags (a dict of its flag names with
underscores, e.g. dict(treft=3.0, treft_on="query"), or {} for plain SFT) so
that on the grader's tiny world, in 40 finetune steps from a small aligned model:

  1. the finance answers are learnt: the SFT loss on them falls to at most
     0.9 of what the aligned model scores, and
  2. the prefix barely moves: its relative K/V drift (TReFT's L_KV on the
     prefix, mean over layers) stays below 0.01.

Plain SFT passes (1) and fails (2). Which flags pass both, and why can they?
Write your reasoning in REASON (graded by your teacher, not by the script).

    python exercises/check.py 7       # trains three tiny models with your code: about 30 s on 2 cores

Its self-check trains with your own functions, so do it after exercises 1, 2 and 8;
the grader trains your FLAGS with the project's code.
"""

FLAGS = dict(treft=100.0)
REASON = ("TReFT adds a loss on the prefix's keys and values, the same for every chat, so the finetune "
          "cannot move them without paying for it; the finance answers can still be learnt from the "
          "query's positions and the answer's own, which TReFT leaves free. Interleaving, KL and weight "
          "anchoring hold the model's outputs or weights, not the prefix, so it moves under them.")
