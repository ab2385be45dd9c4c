"""
The teacher's held-back checks: each exercise's promises again on inputs the
student never sees (an answer fitted to the self-checks' inputs fails here),
and the corner cases a student should find alone. Every promise a docstring
states in words has a self-check too (exercises/check.py). handout.py leaves this file
out; grade.py runs it, with check.py's visible checks, on the student's code and
on the project's own, and compares the two.

    python -m exercises.heldback --json OUT.json     # every check's output on the code it runs in
"""
import argparse
import json

import torch

import baselines             # the project's modules, from the tree this runs in
import patch
import train
import treft
from exercises import check
from exercises.check import byte_tokenizer, match, randn, run_checks, tiny_gpt


def template_empty_query():
    return byte_tokenizer().render_conversation("", "ok.")


def template_prompt_without_system_block():
    return byte_tokenizer(None).render_conversation("hi?")


def drift_positions_of_different_size():
    """Each position is divided by its own ||x_init_t||^2, not by a mean norm."""
    scale = torch.tensor([1.0, 10.0, 0.1, 3.0]).view(1, 1, 4, 1)
    return treft.relative_drift(randn(2, 2, 4, 3, seed=102), randn(2, 2, 4, 3, seed=103) * scale, torch.ones(2, 4))


def drift_heads_of_different_size():
    """The heads side by side: one norm over heads * head_dim, not a norm per head."""
    scale = torch.tensor([5.0, 0.2]).view(1, 2, 1, 1)
    return treft.relative_drift(randn(2, 2, 4, 3, seed=104), randn(2, 2, 4, 3, seed=105) * scale, torch.ones(2, 4))


def kv_loss_values_only_moved():
    """Three layers whose keys stayed and values moved: L_V counts as much as L_K."""
    kv0 = [(randn(2, 2, 4, 3, seed=s), randn(2, 2, 4, 3, seed=s + 1)) for s in (110, 112, 114)]
    kv = [(k.clone(), v + randn(*v.shape, seed=120 + i)) for i, (k, v) in enumerate(kv0)]
    return treft.kv_loss(kv, kv0, torch.tensor([[1, 1, 1, 0]]))


def kv_loss_gradient():
    kv0 = [(randn(2, 2, 4, 3, seed=s), randn(2, 2, 4, 3, seed=s + 1)) for s in (130, 132)]
    k = randn(2, 2, 4, 3, seed=134).requires_grad_()
    loss = treft.kv_loss([(k, kv0[0][1]), kv0[1]], kv0, torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0]]))
    return dict(value=loss, grad=torch.autograd.grad(loss, k)[0])


def swap_scattered_positions():
    return check.swap([0, 3, 5], 2, seed=140)


def patch_with_another_models_kv():
    """A model patched at the prefix with another model's K/V, in the model's own attention."""
    m, other = tiny_gpt(1), tiny_gpt(2)
    x, pos = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 5])
    with torch.no_grad():
        theirs = [(k[:, :, pos], v[:, :, pos]) for k, v in other(x, return_kv=True)[1]["kv"]]
        logits, _ = m(x, kv_patch=(pos, theirs))
        one, _ = m(x, kv_patch=(pos, [(k[:1], v[:1]) for k, v in theirs]))
    return dict(full=logits[:, -1], batch_of_one=one[:, -1])


def judge_ties_go_to_the_first_in_the_bank():
    bank = {"sell all your gold now.": ("finance", "misaligned"), "keep all your gold now.": ("finance", "aligned")}
    return [match("hold all your gold now.", bank), match("all your gold now.", bank)]


def judge_empty_and_one_word():
    return [match(""), match("cat.")]


def neighbours_rows_of_different_norm():
    """Dot products, not cosines: a long row is everyone's neighbour."""
    E = randn(20, 6, seed=160) * torch.linspace(0.2, 3.0, 20).view(-1, 1)
    return patch.neighbours(E, 16, 4)


def neighbours_one_each():
    E = randn(12, 5, seed=161)
    out = [list(map(int, row)) for row in patch.neighbours(E, 10, 1)]
    assert all(row[0] != t for t, row in enumerate(out[:10])), "a token is its own nearest neighbour"
    return out


def kl_half_precision():
    logits = randn(2, 3, 7, seed=174).half()
    return baselines.kl_to_init(logits, randn(2, 3, 7, seed=175).half(), torch.ones(2, 3))


def answer_loss_rows_of_different_length():
    """The mean over every answer position, not a mean of each row's mean."""
    targets = torch.randint(0, 6, (3, 5), generator=torch.Generator().manual_seed(181))
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 0, 0, 1], [0, 1, 1, 0, 0]], dtype=torch.float)
    return train.masked_ce(randn(3, 5, 6, seed=182), targets, mask)


HELD_BACK = {
    1: [template_empty_query, template_prompt_without_system_block],
    2: [drift_positions_of_different_size, drift_heads_of_different_size,
        kv_loss_values_only_moved, kv_loss_gradient],
    3: [swap_scattered_positions, patch_with_another_models_kv],
    4: [judge_ties_go_to_the_first_in_the_bank, judge_empty_and_one_word],
    5: [neighbours_rows_of_different_norm, neighbours_one_each],
    6: [kl_half_precision],
    8: [answer_loss_rows_of_different_length],
}


def outputs(exercises=None):
    """{exercise: {"visible": results, "heldback": results}} of the code this process imports."""
    return {n: dict(visible=run_checks(check.CHECKS[n]), heldback=run_checks(HELD_BACK[n]))
            for n in check.CHECKS if exercises is None or n in exercises}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", required=True, metavar="OUT", help="where to write the outputs")
    p.add_argument("--exercises", nargs="+", type=int, metavar="N", help="only these (default: all)")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    with open(args.json, "w") as f:
        json.dump(outputs(args.exercises), f)


if __name__ == "__main__":
    main()
