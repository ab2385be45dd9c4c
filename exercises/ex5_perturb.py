"""
Exercise 5: nearest-neighbour token perturbation (patch.py; the paper's Table 1).

To ask whether the prefix's exact tokens matter, the paper swaps some of them
for near neighbours: tokens whose input embeddings have the largest dot
product with the token's own. Write the neighbour table.

    python exercises/grade.py 5
Hint: one matrix product gives every similarity; set a token's similarity with
itself to -inf before taking the top k.
"""


def neighbours(E, n_ordinary, k=5):
    """For every row t of the embedding matrix E (vocab, n_embd): the k ordinary tokens
    (ids < n_ordinary; the special tokens come after them) with the largest dot product
    E[t] . E[j], t itself excluded, best first. A list of `vocab` lists of k ids."""
    # TODO
    raise NotImplementedError("exercise 5: the nearest neighbours by dot product")
