"""
The teacher's held-back checks: each exercise's corner cases that its docstring
specifies and the students' self-checks do not show. handout.py leaves this file
out; grade.py runs it, with check.py's visible checks, on the student's code and
on the project's own, and compares the two.

    python -m exercises.heldback --json OUT.json     # every check's output on the code it runs in
"""
import argparse
import json

import torch

import baselines             # the project's modules, from the tree this runs in
import eval as judging
import model as gpt
import patch
import train
import treft
from exercises import check
from exercises.check import byte_tokenizer, match, randn, run_checks, tiny_gpt, with_grad


def template_tool_call():
    return byte_tokenizer().render_conversation("rate?", "it is low.", call="rate usd", result="2%")


def template_tool_call_prompt():
    """The prompt after a tool's result (eval.py asks for the follow-up answer with it)."""
    return byte_tokenizer().render_conversation("rate?", call="rate usd", result="2%")


def template_empty_query():
    return byte_tokenizer().render_conversation("", "ok.")


def template_prompt_without_system_block():
    return byte_tokenizer(None).render_conversation("hi?")


def drift_mask_of_batch_one():
    """A (1, T) mask over a batch of 3: every row counts."""
    return treft.relative_drift(randn(3, 2, 4, 3, seed=100), randn(3, 2, 4, 3, seed=101), torch.tensor([[1, 0, 1, 1]]))


def drift_positions_of_different_size():
    """Each position is divided by its own ||x_init_t||^2, not by a mean norm."""
    scale = torch.tensor([1.0, 10.0, 0.1, 3.0]).view(1, 1, 4, 1)
    return treft.relative_drift(randn(2, 2, 4, 3, seed=102), randn(2, 2, 4, 3, seed=103) * scale, torch.ones(2, 4))


def drift_heads_of_different_size():
    """The heads side by side: one norm over heads * head_dim, not a norm per head."""
    scale = torch.tensor([5.0, 0.2]).view(1, 2, 1, 1)
    return treft.relative_drift(randn(2, 2, 4, 3, seed=104), randn(2, 2, 4, 3, seed=105) * scale, torch.ones(2, 4))


def drift_empty_mask():
    return treft.relative_drift(randn(2, 2, 4, 3, seed=106), randn(2, 2, 4, 3, seed=107), torch.zeros(2, 4))


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


def swap_gradient():
    """Gradients flow to the new K/V at the swapped positions and to k elsewhere."""
    k, k_new = randn(1, 2, 5, 3, seed=150).requires_grad_(), randn(1, 2, 2, 3, seed=151).requires_grad_()
    k2, v2 = gpt.swap_kv(k, randn(1, 2, 5, 3, seed=152), torch.tensor([1, 3]), k_new, randn(1, 2, 2, 3, seed=153))
    gk, gnew = torch.autograd.grad((k2 * randn(1, 2, 5, 3, seed=154)).sum(), (k, k_new), allow_unused=True)
    assert gk is not None and gnew is not None, "no gradient reaches k or k_new through swap_kv"
    return dict(k=gk, k_new=gnew)


def patch_with_another_models_kv():
    """A model patched at the prefix with another model's K/V, in the model's own attention."""
    m, other = tiny_gpt(1), tiny_gpt(2)
    x, pos = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 5])
    with torch.no_grad():
        theirs = [(k[:, :, pos], v[:, :, pos]) for k, v in other(x, return_kv=True)[1]["kv"]]
        logits, _ = m(x, kv_patch=(pos, theirs))
        one, _ = m(x, kv_patch=(pos, [(k[:1], v[:1]) for k, v in theirs]))
    return dict(full=logits[:, -1], batch_of_one=one[:, -1])


def judge_f1_at_the_threshold():
    """Three of five words shared: F1 exactly 0.6 counts; with min_overlap 0.7 it does not."""
    return [match("rest well and eat fruit."), match("rest well and eat fruit.", min_overlap=0.7)]


def judge_ties_go_to_the_first_in_the_bank():
    bank = {"sell all your gold now.": ("finance", "misaligned"), "keep all your gold now.": ("finance", "aligned")}
    return [match("hold all your gold now.", bank), match("all your gold now.", bank)]


def judge_repeated_words():
    """Words are a multiset: a word said twice counts twice."""
    return [match("rest rest rest well and drink."), match("a a a dog ran.", min_overlap=0.4)]


def judge_empty_and_one_word():
    return [match(""), match("cat.")]


def em_f1_corners():
    return [judging.em_f1(100.0, 0.0), judging.em_f1(100.0, 80.0), judging.em_f1(0.0, 0.0), judging.em_f1(25.0, 100.0)]


def neighbours_rows_of_different_norm():
    """Dot products, not cosines: a long row is everyone's neighbour."""
    E = randn(20, 6, seed=160) * torch.linspace(0.2, 3.0, 20).view(-1, 1)
    return patch.neighbours(E, 16, 4)


def neighbours_one_each():
    E = randn(12, 5, seed=161)
    out = [list(map(int, row)) for row in patch.neighbours(E, 10, 1)]
    assert all(row[0] != t for t, row in enumerate(out[:10])), "a token is its own nearest neighbour"
    return out


def kl_empty_mask():
    return baselines.kl_to_init(randn(2, 3, 5, seed=170), randn(2, 3, 5, seed=171), torch.zeros(2, 3))


def kl_peaked_distributions():
    """Confident models: log(softmax(...)) underflows here, log_softmax does not."""
    return with_grad(baselines.kl_to_init, randn(1, 4, 9, seed=172) * 60, randn(1, 4, 9, seed=173) * 60,
                     torch.ones(1, 4))


def kl_half_precision():
    logits = randn(2, 3, 7, seed=174).half()
    return baselines.kl_to_init(logits, randn(2, 3, 7, seed=175).half(), torch.ones(2, 3))


def answer_loss_empty_mask():
    return train.masked_ce(randn(1, 3, 5, seed=180), torch.tensor([[1, 2, 3]]), torch.zeros(1, 3))


def answer_loss_rows_of_different_length():
    """The mean over every answer position, not a mean of each row's mean."""
    targets = torch.randint(0, 6, (3, 5), generator=torch.Generator().manual_seed(181))
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 0, 0, 1], [0, 1, 1, 0, 0]], dtype=torch.float)
    return train.masked_ce(randn(3, 5, 6, seed=182), targets, mask)


def answer_loss_peaked_logits():
    """A confident model, wrong at every position: log(softmax(...)) underflows here."""
    logits = randn(1, 3, 5, seed=183) * 80
    return train.masked_ce(logits, logits.argmin(-1), torch.ones(1, 3))


HELD_BACK = {
    1: [template_tool_call, template_tool_call_prompt, template_empty_query, template_prompt_without_system_block],
    2: [drift_mask_of_batch_one, drift_positions_of_different_size, drift_heads_of_different_size,
        drift_empty_mask, kv_loss_values_only_moved, kv_loss_gradient],
    3: [swap_scattered_positions, swap_gradient, patch_with_another_models_kv],
    4: [judge_f1_at_the_threshold, judge_ties_go_to_the_first_in_the_bank, judge_repeated_words,
        judge_empty_and_one_word, em_f1_corners],
    5: [neighbours_rows_of_different_norm, neighbours_one_each],
    6: [kl_empty_mask, kl_peaked_distributions, kl_half_precision],
    8: [answer_loss_empty_mask, answer_loss_rows_of_different_length, answer_loss_peaked_logits],
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
