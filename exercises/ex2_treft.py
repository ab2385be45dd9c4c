"""
Exercise 2: the TReFT loss (treft.py; the paper's equations 2-3).

TReFT keeps the keys and values at some positions T (the prefix) where the
aligned model had them, while SFT teaches the new behaviour:

    L_KV   = 1/L * sum over layers l of (L_K[l] + L_V[l])
    L_K[l] = 1/|T| * sum over t in T of ||k_t - k_t_init||^2 / ||k_t_init||^2

k_t is the key of position t with all heads side by side (heads * head_dim
numbers); L_V is the same for values. Dividing by ||k_t_init||^2 makes it a
*relative* drift, so one lambda suits every layer.

    python exercises/grade.py 2
Hint: move the heads next to head_dim first, (B, heads, T, hd) -> (B, T, heads * hd);
the mask may have a batch dimension of 1 and must broadcast; guard the divisions.
"""


def relative_drift(x, x_init, mask):
    """Mean over the positions where mask is 1 of ||x_t - x_init_t||^2 / ||x_init_t||^2.

    x, x_init: (B or 1, heads, T, head_dim); mask: (B or 1, T) of 0/1. Differentiable in x.
    """
    # TODO
    raise NotImplementedError("exercise 2: the relative drift of one layer's keys or values")


def kv_loss(kv, kv_init, mask):
    """L_KV: for each layer (k, v) and its (k_init, v_init), the drift of k plus that of v;
    the mean over layers."""
    # TODO
    raise NotImplementedError("exercise 2: L_KV, averaged over layers")
