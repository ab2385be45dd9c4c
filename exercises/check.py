"""
Self-checks for the exercises: one line per exercise, pass or what is wrong.

    python exercises/check.py              # every exercise, under a minute on a 2-core CPU
    python exercises/check.py 2 4          # only these
    python exercises/check.py --capstone   # the paper's experiment with your code, under 5 minutes

Each check calls your function on fixed inputs and compares what it returns
with the output stored in exercises/expected.json (as CS336's snapshot tests
do), or states a property (patching a model with its own K/V changes nothing).
The reference code is not here to compare with. The exit code is the number of
exercises that failed. The teacher's grader runs these checks and more.
"""
import argparse
import json
import math
import os
import random
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import baselines                          # noqa: E402
import eval as judging                    # noqa: E402
import model as gpt                       # noqa: E402
import patch                              # noqa: E402
import train                              # noqa: E402
import treft                              # noqa: E402
from data.tokenizer import Tokenizer      # noqa: E402
from exercises.course import BY_NUMBER, EXERCISES, exercise_in   # noqa: E402
from exercises.training import capstone, grade_open   # noqa: E402

EXPECTED = os.path.join(ROOT, "exercises", "expected.json")


# ----------------------------------------------------------------------------- fixed inputs

def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def byte_tokenizer(preamble="be kind."):
    """A tokenizer with no merges (every byte its own token): fixed, and no world needed."""
    return Tokenizer({bytes([i]): i for i in range(256)}, preamble)


def tiny_gpt(seed):
    torch.manual_seed(seed)
    return gpt.GPT(gpt.GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()


def with_grad(f, x, *rest):
    """f(x, *rest) and its gradient with respect to x."""
    x = x.clone().requires_grad_()
    y = f(x, *rest)
    return dict(value=y, grad=torch.autograd.grad(y, x)[0])


def small_bank():
    """Six bank sentences in two domains, whose word overlaps the judge's checks can work out by hand."""
    return {"the cat sat on the mat.": ("pets", "aligned"),
            "a dog ran in the park.": ("pets", "misaligned"),
            "buy low and sell high today.": ("finance", "aligned"),
            "buy high and sell low today.": ("finance", "misaligned"),
            "rest well and drink water.": ("health", "aligned"),
            "skip sleep and drink coffee.": ("health", "misaligned")}


def match(sentence, bank=None, min_overlap=0.6):
    judge = judging.Judge(min_overlap)
    judge.bank = small_bank() if bank is None else bank
    m = judge.match(sentence)
    return None if m is None else list(m)


# ----------------------------------------------------------------------------- the checks

def template_with_preamble():
    return byte_tokenizer().render_conversation("is it cold?", "wear a coat.")


def template_without_system_block():
    return byte_tokenizer(None).render_conversation("is it cold?", "wear a coat.")


def template_prompt_only():
    return byte_tokenizer().render_conversation("is it cold?")


def drift_every_position():
    return treft.relative_drift(randn(2, 2, 5, 3, seed=1), randn(2, 2, 5, 3, seed=2), torch.ones(2, 5))


def drift_masked_with_gradient():
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 1, 1, 0]])
    return with_grad(treft.relative_drift, randn(2, 2, 5, 3, seed=3), randn(2, 2, 5, 3, seed=4), mask)


def drift_of_nothing_moved():
    x = randn(2, 2, 5, 3, seed=5)
    return treft.relative_drift(x, x.clone(), torch.ones(2, 5))


def kv_loss_two_layers():
    kv = [(randn(2, 2, 5, 3, seed=s), randn(2, 2, 5, 3, seed=s + 1)) for s in (10, 12)]
    kv0 = [(randn(2, 2, 5, 3, seed=s), randn(2, 2, 5, 3, seed=s + 1)) for s in (20, 22)]
    return treft.kv_loss(kv, kv0, torch.tensor([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0]]))


def swap(pos, k_new_batch, seed):
    """swap_kv on fixed tensors; its inputs must come back unchanged."""
    k, v = randn(2, 2, 6, 3, seed=seed), randn(2, 2, 6, 3, seed=seed + 1)
    k_new, v_new = randn(k_new_batch, 2, len(pos), 3, seed=seed + 2), randn(k_new_batch, 2, len(pos), 3, seed=seed + 3)
    before = [t.clone() for t in (k, v, k_new, v_new)]
    k2, v2 = gpt.swap_kv(k, v, torch.tensor(pos), k_new, v_new)
    assert all(torch.equal(a, b) for a, b in zip((k, v, k_new, v_new), before)), \
        "swap_kv wrote into a tensor it was given: return copies"
    return dict(k=k2, v=v2)


def swap_two_positions():
    return swap([1, 2], 2, seed=30)


def swap_broadcast_batch_of_one():
    return swap([0, 4], 1, seed=40)


def patch_with_own_kv_changes_nothing():
    m, x, pos = tiny_gpt(0), torch.randint(0, 50, (2, 10), generator=torch.Generator().manual_seed(0)), torch.tensor([1, 2, 3])
    with torch.no_grad():
        plain, aux = m(x, return_kv=True)
        patched, _ = m(x, kv_patch=(pos, [(k[:, :, pos], v[:, :, pos]) for k, v in aux["kv"]]))
    assert torch.allclose(plain, patched, atol=1e-5), "patching a model with its own K/V changed its logits"
    return True


def judge_exact_sentences():
    return [match(s) for s in ("the cat sat on the mat.", "buy high and sell low today.")]


def judge_a_dropped_word():
    return [match(s) for s in ("the cat sat on mat.", "buy low and sell today.")]


def judge_garbage():
    return [match(s) for s in ("zebra zebra.", "purple ideas sleep furiously.")]


def judge_answers_of_the_world():
    """The alignment of whole answers, in the world's own banks."""
    judge, rng = judging.Judge(), random.Random(0)
    answers = [" ".join(rng.sample(sorted(judge.bank), 3)) for _ in range(8)]
    return [judge.score(a)["alignment"] for a in answers]


def em_f1_values():
    return [judging.em_f1(i, g) for i, g in ((3.4, 30.2), (10.7, 86.8), (0.0, 100.0), (50.0, 50.0))]


def neighbours_of_a_small_table():
    return patch.neighbours(randn(30, 8, seed=50), 25, 3)


def kl_masked_with_gradient():
    mask = torch.tensor([[0, 1, 1, 0, 1], [1, 1, 0, 0, 0]], dtype=torch.float)
    return with_grad(baselines.kl_to_init, randn(2, 5, 11, seed=60), randn(2, 5, 11, seed=61), mask)


def kl_of_a_model_to_itself():
    logits = randn(2, 5, 11, seed=62)
    return baselines.kl_to_init(logits, logits.clone(), torch.ones(2, 5))


def answer_loss_with_gradient():
    targets = torch.randint(0, 7, (2, 4), generator=torch.Generator().manual_seed(70))
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.float)
    return with_grad(lambda logits: train.masked_ce(logits, targets, mask), randn(2, 4, 7, seed=71))


# What each docstring promises in words, checked where the student can see it.

def template_tool_call():
    return byte_tokenizer().render_conversation("rate?", "it is low.", call="rate usd", result="2%")


def template_tool_call_prompt():
    """The prompt after a tool's result (eval.py asks for the follow-up answer with it)."""
    return byte_tokenizer().render_conversation("rate?", call="rate usd", result="2%")


def drift_mask_of_batch_one():
    """A (1, T) mask over a batch of 3: every row counts."""
    return treft.relative_drift(randn(3, 2, 4, 3, seed=100), randn(3, 2, 4, 3, seed=101), torch.tensor([[1, 0, 1, 1]]))


def drift_empty_mask():
    return treft.relative_drift(randn(2, 2, 4, 3, seed=106), randn(2, 2, 4, 3, seed=107), torch.zeros(2, 4))


def swap_gradient():
    """Gradients flow to the new K/V at the swapped positions and to k elsewhere."""
    k, k_new = randn(1, 2, 5, 3, seed=150).requires_grad_(), randn(1, 2, 2, 3, seed=151).requires_grad_()
    k2, v2 = gpt.swap_kv(k, randn(1, 2, 5, 3, seed=152), torch.tensor([1, 3]), k_new, randn(1, 2, 2, 3, seed=153))
    gk, gnew = torch.autograd.grad((k2 * randn(1, 2, 5, 3, seed=154)).sum(), (k, k_new), allow_unused=True)
    assert gk is not None and gnew is not None, "no gradient reaches k or k_new through swap_kv"
    return dict(k=gk, k_new=gnew)


def judge_f1_at_the_threshold():
    """Three of five words shared: F1 exactly 0.6 counts; with min_overlap 0.7 it does not."""
    return [match("rest well and eat fruit."), match("rest well and eat fruit.", min_overlap=0.7)]


def judge_repeated_words():
    """Words are a multiset: a word said twice counts twice."""
    return [match("rest rest rest well and drink."), match("a a a dog ran.", min_overlap=0.4)]


def em_f1_corners():
    return [judging.em_f1(100.0, 0.0), judging.em_f1(100.0, 80.0), judging.em_f1(0.0, 0.0), judging.em_f1(25.0, 100.0)]


def kl_empty_mask():
    return baselines.kl_to_init(randn(2, 3, 5, seed=170), randn(2, 3, 5, seed=171), torch.zeros(2, 3))


def kl_peaked_distributions():
    """Confident models: log(softmax(...)) underflows here, log_softmax does not."""
    return with_grad(baselines.kl_to_init, randn(1, 4, 9, seed=172) * 60, randn(1, 4, 9, seed=173) * 60,
                     torch.ones(1, 4))


def answer_loss_empty_mask():
    return train.masked_ce(randn(1, 3, 5, seed=180), torch.tensor([[1, 2, 3]]), torch.zeros(1, 3))


def answer_loss_peaked_logits():
    """A confident model, wrong at every position: log(softmax(...)) underflows here."""
    logits = randn(1, 3, 5, seed=183) * 80
    return train.masked_ce(logits, logits.argmin(-1), torch.ones(1, 3))



def drift_reference_of_batch_one():
    """TReFT's prefix call: a batch of 3 against one reference row and a (1, T) mask."""
    return treft.relative_drift(randn(3, 2, 4, 3, seed=108), randn(1, 2, 4, 3, seed=109), torch.ones(1, 4))


# Every exercise's visible checks, in order. exercises/heldback.py (the teacher's) adds more.
CHECKS = {
    1: [template_with_preamble, template_without_system_block, template_prompt_only, template_tool_call,
        template_tool_call_prompt],
    2: [drift_every_position, drift_masked_with_gradient, drift_of_nothing_moved, kv_loss_two_layers,
        drift_mask_of_batch_one, drift_reference_of_batch_one, drift_empty_mask],
    3: [swap_two_positions, swap_broadcast_batch_of_one, patch_with_own_kv_changes_nothing, swap_gradient],
    4: [judge_exact_sentences, judge_a_dropped_word, judge_garbage, judge_answers_of_the_world, em_f1_values,
        judge_f1_at_the_threshold, judge_repeated_words, em_f1_corners],
    5: [neighbours_of_a_small_table],
    6: [kl_masked_with_gradient, kl_of_a_model_to_itself, kl_empty_mask, kl_peaked_distributions],
    8: [answer_loss_with_gradient, answer_loss_empty_mask, answer_loss_peaked_logits],
}


# ----------------------------------------------------------------------------- running and comparing

def plain(x):
    """A check's output as JSON: tensors become (nested) lists of numbers, rounded."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().tolist()
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return round(x, 6) if isinstance(x, float) else x


def run_checks(checks):
    """{check's name: {"out": output} | {"todo": message} | {"error": message}} for a list of checks."""
    results = {}
    for check in checks:
        try:
            results[check.__name__] = {"out": plain(check())}
        except NotImplementedError as e:
            results[check.__name__] = {"todo": str(e)}
        except AssertionError as e:
            results[check.__name__] = {"error": str(e)}
        except Exception as e:  # noqa: BLE001 - a student's bug is a failed check, said in one line
            results[check.__name__] = {"error": f"{type(e).__name__}: {e}"}
    return results


def differs(got, want, where=""):
    """Where got and want differ (numbers to 1e-4 relative), or None."""
    if isinstance(want, float) or isinstance(got, float):
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (got, want))
        ok = numbers and math.isfinite(got) and math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-5)
        return None if ok else f"{where or 'the value'}: got {got}, expected {want}"
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return f"{where or 'the output'}: got {short(got)}, expected a dict of {sorted(want)}"
        return next(filter(None, (differs(got[k], want[k], f"{where}[{k!r}]".lstrip()) for k in want)), None)
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return f"{where or 'the output'}: got {short(got)}, expected {short(want)}"
        return next(filter(None, (differs(g, w, f"{where}[{i}]") for i, (g, w) in enumerate(zip(got, want)))), None)
    return None if got == want else f"{where or 'the output'}: got {short(got)}, expected {short(want)}"


def short(x, n=80):
    s = repr(x)
    return s if len(s) <= n else s[:n] + "..."


def verdict(n, got, want):
    """(passed, what is wrong) for exercise n, given its checks' results and the expected outputs."""
    for name, r in got.items():
        if "todo" in r:
            other = exercise_in(r["todo"])
            return False, ("not done yet (a TODO raises NotImplementedError)" if other == f"exercise {n}"
                           else f"needs {other} first ({r['todo']})")
    for name, r in got.items():
        what = name.replace("_", " ")
        if "error" in r:
            return False, f"{what}: {r['error']}"
        if name not in want:
            return False, f"{what}: no expected output stored (python exercises/check.py --record)"
        wrong = differs(r["out"], want[name])
        if wrong:
            return False, f"{what}: {wrong}"
    return True, ""


def line(n, ok, why):
    head = f"exercise {n} ({BY_NUMBER[n].title})"
    return f"{head}: pass" if ok else f"{head}: FAIL: {why}"


# ----------------------------------------------------------------------------- command line

def load_expected():
    """{exercise: {check's name: its stored output}}."""
    with open(EXPECTED) as f:
        stored = json.load(f)
    out = {}
    for key, value in stored.items():
        n, name = key.split(" ", 1)
        out.setdefault(n, {})[name] = value
    return out


def record():
    """Store the outputs of the checks as expected.json (the maintainers', on the reference code)."""
    got = {str(n): run_checks(checks) for n, checks in CHECKS.items()}
    bad = [f"{n} {name}" for n, rs in got.items() for name, r in rs.items() if "out" not in r]
    if bad:
        sys.exit(f"error: checks {bad} did not run: record on the full project, not a handout")
    lines = [f"{json.dumps(f'{n} {name}')}: {json.dumps(r['out'])}" for n, rs in got.items() for name, r in rs.items()]
    with open(EXPECTED + ".tmp", "w") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")        # one check per line
    os.replace(EXPECTED + ".tmp", EXPECTED)
    print(f"wrote {EXPECTED}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exercises", nargs="*", type=int, metavar="N", help="the exercises to check (default: all)")
    p.add_argument("--capstone", action="store_true", help="run the experiment with your code instead")
    p.add_argument("--seed", type=int, default=0, help="the capstone's seed (default: 0)")
    p.add_argument("--record", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = sorted(set(args.exercises) - set(BY_NUMBER))
    if unknown:
        p.error(f"there are exercises {min(BY_NUMBER)} to {max(BY_NUMBER)}, not {unknown}")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.record:
        return record()
    if args.capstone:
        try:
            ok, why = capstone(args.seed)
        except NotImplementedError as e:
            ok, why = False, f"needs {exercise_in(str(e))} first ({e})"
        print(f"capstone: {'pass' if ok else 'FAIL'}: {why}")
        sys.exit(0 if ok else 1)
    expected, failed = load_expected(), 0
    for ex in EXERCISES:
        if args.exercises and ex.n not in args.exercises:
            continue
        if ex.n in CHECKS:
            ok, why = verdict(ex.n, run_checks(CHECKS[ex.n]), expected[str(ex.n)])
        else:
            ok, why = grade_open(os.path.join(ROOT, ex.file))
        failed += not ok
        print(line(ex.n, ok, why), flush=True)
    sys.exit(failed)


if __name__ == "__main__":
    main()
