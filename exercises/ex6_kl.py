"""
Exercise 6: one baseline, KL to the initial model (baselines.py; the paper's Table 3).

Instead of pinning keys and values, this baseline keeps the next-token
distributions close to the aligned model's: at every answer position t,

    KL(p_init || p_now) = sum over tokens w of p_init(w) * (log p_init(w) - log p_now(w))

averaged over the positions where mask is 1. train.py adds lambda times it to
the SFT loss (python train.py --stage finetune --kl 30).

    python exercises/grade.py 6
Hint: work with log_softmax, in float32, never with log(softmax(...)).
"""


def kl_to_init(logits, init_logits, mask):
    """logits, init_logits: (B, T, vocab); mask: (B, T) of 0/1. A scalar, differentiable in logits."""
    # TODO
    raise NotImplementedError("exercise 6: KL(initial || current) on the answer positions")
