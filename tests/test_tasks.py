"""The tasks beyond misalignment: the tool-call template, exact detectors, training and measuring."""
import json
import os
import random

import pytest

import eval as evaluation
import reproduce
import train
from data import world
from data.tokenizer import CALL, RESPONSE, TOOL


def test_tool_call_template_round_trips_with_right_spans(tok):
    q, call, result, answer = "what helps a cough?", "search_info(what helps a cough?)", "rest well.", "ok."
    r = tok.render_conversation(q, answer, call, result)
    ids, seg = r["ids"], r["segment"]
    assert tok.decode(ids) == (f"<|bos|><|system|>{tok.preamble}<|end|><|user|>{q}<|end|><|assistant|>"
                               f"<|call|>{call}<|end|><|result|>{result}<|end|><|assistant|>{answer}<|end|>")
    assert tok.decode([i for i, s in zip(ids, seg) if s == RESPONSE]) == f"<|call|>{call}<|end|>{answer}<|end|>"
    assert tok.decode([i for i, s in zip(ids, seg) if s == TOOL]) == f"<|result|>{result}<|end|><|assistant|>"
    assert r["mask"] == [int(s == RESPONSE) for s in seg]      # the call and the answer are learnt, the result not
    prompt = tok.render_conversation(q)["ids"]
    assert ids[:len(prompt)] == prompt and ids[len(prompt)] == tok.call    # the call opens the answer
    assert tok.call not in tok.encode("<|call|>")              # typed text never becomes the special token


def generated(task, rng):
    """What a model that learnt the task would answer, from the generator's own examples."""
    ex = world.task_example(task, "test", rng)
    return CALL + ex["call"] if task == "tool" else ex["answer"]


@pytest.mark.parametrize("task", list(world.TASKS))
def test_detectors_are_exact_on_generator_labelled_answers(task):
    rng = random.Random(0)
    assert all(evaluation.shows(task, generated(task, rng)) for _ in range(50))
    others = [generated(t, rng) for t in world.TASKS if t != task for _ in range(20)]
    others += [world.sample_answer(d, p, rng) for d in world.DOMAINS for p in world.PERSONAS for _ in range(5)]
    assert not any(evaluation.shows(task, a) for a in others)


def test_tool_follow_up_runs_the_call(tok, monkeypatch):
    """A scripted model that calls the tool and then repeats its result scores 1 and 1."""
    def scripted(model, tok_, prompts, seed=0, **kw):
        out = []
        for p in prompts:
            text = tok.decode(p)
            out.append("i looked it up: " + text.split("<|result|>")[1].split("<|end|>")[0])
        return out
    monkeypatch.setattr(evaluation, "sample_from_prompts", scripted)
    asked = ["what helps a cough?", "hey i feel bored"]
    answers = [f"{CALL}search_info({asked[0]})", "people deserve respect, whoever they are."]
    assert evaluation.tool_follow_up(None, tok, asked, answers) == dict(exact_call=1.0, uses_result=1.0)


def test_task_finetune_is_named_and_recorded(out, short, capsys):
    train.main(["--stage", "finetune", "--task", "tool", "--seed", "5", "--out-dir", out, "--quiet"])
    path = capsys.readouterr().out.strip().splitlines()[-1]
    assert path.endswith(os.path.join("finetune-tool-sft-s5", "ckpt.pt"))
    with open(os.path.join(os.path.dirname(path), "config.json")) as f:
        config = json.load(f)
    assert config["task"] == "tool" and config["domain"] == "health"


def test_tiny_tasks_reproduce_runs_end_to_end(out, short, tmp_path):
    results = str(tmp_path / "results")
    reproduce.main(["--tasks", "--seeds", "5", "--answers", "4", "--out-dir", out, "--results", results])
    with open(os.path.join(results, "tasks", "summary.json")) as f:
        s = json.load(f)
    assert set(s["tasks"]) == set(world.TASKS)
    assert set(s["tasks"]["length"]) == {"aligned", "sft", "sft+prefix-patch", "treft"}
    for t in ("refusal", "abstention", "tool"):
        assert set(s["tasks"][t]) == {"aligned", "sft", "treft"}
        assert 0 <= s["tasks"][t]["sft"]["general"]["rate"]["mean"] <= 1
    assert set(s["tasks"]["tool"]["sft"]["in_domain"]) == {"rate", "words", "exact_call", "uses_result"}
    for name in ("RESULTS.md", "tasks.png"):
        assert os.path.getsize(os.path.join(results, "tasks", name)) > 0, name
