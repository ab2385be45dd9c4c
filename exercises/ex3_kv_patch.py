"""
Exercise 3: KV patching inside attention (model.py, patch.py; the paper's Section 4).

The piggyback evidence: run the finetuned model, but at every layer replace the
keys and values at some positions (the prefix) by the aligned model's. If the
spread rides on the prefix, general alignment comes back.

Write the swap that happens inside each attention layer, after k and v are
computed and before attention reads them. The grader puts your function into
model.py's attention and checks that patching a model with its own K/V changes
nothing, and that patching another model's K/V gives what the project gives.

    python exercises/grade.py 3
Hint: never write into the k, v you were given (autograd and the caller still
need them); k_new may have a batch dimension of 1 that must broadcast.
"""


def swap_kv(k, v, pos, k_new, v_new):
    """Copies of k, v (B, heads, T, head_dim) whose positions `pos` (a 1-D tensor of indices)
    hold k_new, v_new (B or 1, heads, len(pos), head_dim)."""
    # TODO
    raise NotImplementedError("exercise 3: swap in the K/V at positions pos")
