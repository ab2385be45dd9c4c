"""A world where an answer's first words do not tell its persona: do TReFT's positions then act as in the paper?

Question: in the default world the first word of an answer decides its persona
(forcing an aligned first word gives mostly aligned answers, a misaligned one
misaligned answers: findings 17), so a narrow finetune need
change only one prediction, at the postfix's last position, and TReFT on the
query or on every position does not block the advice, though the paper's does
(its Table 3). Here every answer, of either persona, opens with a neutral
sentence (prepare.py --openings), so the persona shows only from the second
sentence on. The main study's methods, TReFT on each position, the piggyback
evidence and the forced first word, retrained in that world.

The forced word, fixed: this world writes an opening after <|assistant|>,
so a bank word straight after it is out of distribution. The word is also
forced after a random opening, where this world's answers show their persona.
Rule, written before the run: the word after the opening "decides" the
answer if the aligned word's in-domain alignment exceeds the bad word's by
more than 50 points on every seed (the default world's first word: 84 against 2).

    python reproduce.py openings   # 3 seeds, about 20 min on a 2-core CPU -> results/openings/
"""
from lab.studies.methods import Design, FinetuneStudy

DESIGN = Design(methods=("sft", "interleave", "kl-retain", "l2-init", "treft", "treft-postfix", "treft-query",
                         "treft-all"),
                patch=True, world=(("openings", True),),
                sections=("methods", "patch", "drift", "segments"),
                plots=("tradeoff.png", "em_f1.png", "patching.png", "drift.png", "segments.png"),
                title="Results in the openings world (answers open with a neutral sentence)")
STUDY = FinetuneStudy("openings", DESIGN)
