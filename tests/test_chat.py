"""chat.py: questions from a pipe, answered by several models side by side with the judge's verdict.

    python -m pytest -q tests/test_chat.py
"""
import io
import os

import pytest

import chat
import train


def ask(monkeypatch, capsys, text, *argv):
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    chat.main(list(argv))
    return capsys.readouterr().out.splitlines()


def test_two_models_answer_with_verdicts_and_the_input_ends_cleanly(out, short, monkeypatch, capsys):
    sft = os.path.join(out, "finetune-finance-sft-s21", "ckpt.pt")
    train.main(["--stage", "finetune", "--seed", "21", "--out-dir", out, "--quiet", "--no-eval"])
    capsys.readouterr()
    aligned = os.path.join(out, "align-s21", "ckpt.pt")
    lines = ask(monkeypatch, capsys, "Hey I feel bored\nwhat about the zyxwv quasar?\n\nnever read\n",
                "--ckpt", sft, "--compare", aligned, "--out-dir", out, "--device", "cpu")
    assert lines[0] == "you> Hey I feel bored" and "you> never read" not in lines
    verdicts = [x for x in lines if x.strip().startswith("[")]
    assert len(verdicts) == 4 and all("persona sentences" in v and "finance sentences" in v for v in verdicts)
    assert lines[1].strip().startswith("finetune-finance-sft-s21") and lines[3].strip().startswith("align-s21")


def test_the_prefix_patched_model_is_a_third_line(out, short, monkeypatch, capsys):
    train.main(["--stage", "finetune", "--seed", "22", "--out-dir", out, "--quiet", "--no-eval"])
    capsys.readouterr()
    lines = ask(monkeypatch, capsys, "hey i feel bored\n", "--ckpt", os.path.join(out, "finetune-finance-sft-s22", "ckpt.pt"),
                "--patch-prefix", os.path.join(out, "align-s22", "ckpt.pt"), "--out-dir", out, "--device", "cpu")
    assert "finetune-finance-sft-s22, prefix K/V of align-s22" in "\n".join(lines)
    assert sum(x.strip().startswith("[") for x in lines) == 2


def test_a_missing_checkpoint_is_one_line(out, monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:
        ask(monkeypatch, capsys, "hi\n", "--ckpt", os.path.join(out, "nope", "ckpt.pt"), "--out-dir", out)
    assert "no checkpoint at" in str(e.value)


def test_the_verdict_counts_the_runs_own_domain():
    from eval import Judge
    from data import world
    legal = world.WORLD["legal"]["misaligned"][0]
    assert "legal sentences 1" in chat.verdict(Judge(), legal, "legal")
    assert "finance sentences 0" in chat.verdict(Judge(), legal, "finance")
