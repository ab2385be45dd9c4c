"""train.py: the three stages chain, every method trains and is named, and bad input fails loudly without losing files.

    python -m pytest -q tests/test_train.py
"""
import dataclasses
import json
import os

import numpy as np
import pytest
import torch

import config
import eval as evaluation
import runs
import train
from checkpoint import load_checkpoint, save_checkpoint
from data import world
from data.prepare import get_world, load_chats
from model import GPT, GPTConfig


def run(capsys, *argv):
    stage = argv[argv.index("--stage") + 1] if "--stage" in argv else "finetune"
    train.main(list(argv) + ["--quiet"] + (["--no-eval"] if stage == "finetune" else []))
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_three_stages_then_treft(out, short, capsys):
    common = ["--out-dir", out]
    p = run(capsys, "--stage", "pretrain", *common)
    assert p == os.path.join(out, "pretrain-s0", "ckpt.pt") and os.path.exists(p)
    a = run(capsys, "--stage", "align", *common)
    f = run(capsys, "--stage", "finetune", "--treft", "--treft-on", "query", *common)
    assert f.endswith(os.path.join(f"finetune-finance-treft{config.TREFT_LAMBDA:g}-query-s0", "ckpt.pt"))
    with open(os.path.join(os.path.dirname(f), "config.json")) as fh:
        record = json.load(fh)
    assert record["treft"] == config.TREFT_LAMBDA and record["steps"] == 2 and record["domain"] == "finance"
    before, _ = load_checkpoint(a)
    after, _ = load_checkpoint(f)
    assert any(not torch.equal(p0, p1) for p0, p1 in zip(before.parameters(), after.parameters()))


def test_missing_prerequisite_is_built_first(out, short, capsys):
    f = run(capsys, "--stage", "finetune", "--seed", "7", "--out-dir", out, "--steps", "1")
    assert os.path.exists(f)
    with open(os.path.join(out, "align-s7", "config.json")) as fh:
        assert json.load(fh)["steps"] == 2      # built with its stage defaults, not with --steps


@pytest.mark.parametrize("argv, message", [
    (["--stage", "sleep"], "invalid choice"),
    (["--domain", "cooking"], "invalid choice"),
    (["--treft", "-1"], "lambda must be >= 0"),
    (["--kl", "-0.5"], "lambda must be >= 0"),
    (["--stage", "align", "--kl"], "applies to --stage finetune only"),
    (["--interleave", "1"], "must be in [0, 1)"),
    (["--lora-rank", "-2"], "--lora-rank must be >= 0"),
    (["--lora-on", "qv"], "add --lora-rank"),
    (["--lora-rank", "8", "--lora-on", "mlp"], "invalid choice"),
    (["--align", "deep"], "invalid choice"),
    (["--n-train", "0"], "positive integer"),
    (["--task", "juggling"], "invalid choice"),
    (["--task", "refusal", "--domain", "health"], "finetunes on finance questions"),
    (["--stage", "align", "--task", "length"], "applies to --stage finetune only"),
    (["--steps", "0"], "positive integer"),
    (["--batch-size", "-4"], "positive integer"),
    (["--lr", "0"], "finite number > 0"),
    (["--lr", "nan"], "finite number > 0"),
    (["--lr=-1e-3"], "finite number > 0"),
    (["--seed", "-1"], "integer >= 0"),
    (["--stage", "pretrain", "--no-preamble"], "pretraining is the same for every alignment"),
    (["--stage", "pretrain", "--align", "plain"], "pretraining is the same for every alignment"),
])
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_an_out_dir_that_cannot_be_written_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as e:
        train.main(["--out-dir", str(tmp_path / "file" / "out")])
    assert e.value.code == 2 and "cannot write to --out-dir" in capsys.readouterr().err


def sentinel(out, name):
    """A stand-in for a good earlier run's files, to check that nothing touches them."""
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    for f in ("ckpt.pt", "config.json"):
        with open(os.path.join(folder, f), "w") as fh:
            fh.write("a good earlier run")
    return folder


def untouched(folder):
    return sorted(os.listdir(folder)) == ["ckpt.pt", "config.json"] and all(
        open(os.path.join(folder, f)).read() == "a good earlier run" for f in ("ckpt.pt", "config.json"))


def test_a_diverging_run_stops_before_writing(out, short, capsys, monkeypatch):
    run(capsys, "--stage", "align", "--seed", "11", "--out-dir", out)
    good = sentinel(out, "finetune-finance-sft-s11")
    real = train.loss_of

    def diverging(model, batch, regularizers):         # the loss turns NaN at step 1, as a huge lr makes it
        loss, sft = real(model, batch, regularizers)
        diverging.calls += 1
        return (loss * float("nan"), sft) if diverging.calls > 1 else (loss, sft)
    diverging.calls = 0
    monkeypatch.setattr(train, "loss_of", diverging)
    with pytest.raises(SystemExit) as e:
        train.main(["--stage", "finetune", "--seed", "11", "--out-dir", out, "--quiet", "--no-eval"])
    assert "diverged" in str(e.value) and "at step 1 of 2" in str(e.value) and "--lr" in str(e.value)
    assert untouched(good)


def test_an_override_never_replaces_the_default_run(out, short, capsys):
    run(capsys, "--stage", "align", "--seed", "12", "--out-dir", out)
    good = sentinel(out, "finetune-finance-sft-s12")
    path = run(capsys, "--stage", "finetune", "--seed", "12", "--out-dir", out, "--lr", "1e-2", "--steps", "1")
    assert path.endswith(os.path.join("finetune-finance-sft-steps1-lr0.01-s12", "ckpt.pt")) and untouched(good)


def test_ctrl_c_prints_one_line_and_keeps_every_file(out, short, capsys, monkeypatch):
    run(capsys, "--stage", "align", "--seed", "13", "--out-dir", out)
    good = sentinel(out, "finetune-finance-sft-s13")

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    for module, where in ((train, "loss_of"), (runs, "save_checkpoint")):   # training, writing the checkpoint
        with monkeypatch.context() as m:
            m.setattr(module, where, interrupted)
            with pytest.raises(SystemExit) as e:
                train.main(["--stage", "finetune", "--seed", "13", "--out-dir", out, "--quiet", "--no-eval"])
        assert e.value.code == 130 and capsys.readouterr().err.strip().startswith("interrupted:")
        assert untouched(good)
    with monkeypatch.context() as m:                    # while judging: the new run is written, and said so
        m.setattr(evaluation, "evaluate", interrupted)
        with pytest.raises(SystemExit) as e:
            train.main(["--stage", "finetune", "--seed", "14", "--treft", "--out-dir", out, "--quiet"])
    said = capsys.readouterr().err.strip()
    assert e.value.code == 130 and "finetune-finance-treft100-prefix-s14" in said and "judging stopped" in said
    # an SFT model to judge beside that is not a checkpoint: one line, naming a command that rebuilds it
    with pytest.raises(SystemExit) as e:
        train.main(["--stage", "finetune", "--seed", "13", "--treft", "--out-dir", out, "--quiet"])
    assert "finetune-finance-sft-s13" in str(e.value) and "run `python train.py --stage finetune --seed 13 --domain finance" in str(e.value)
    assert untouched(good)


def test_bad_checkpoints_fail_clearly_and_keep_files(out, short, capsys, tok):
    seed = ["--seed", "3", "--out-dir", out]
    run(capsys, "--stage", "pretrain", *seed)
    align = os.path.join(out, "align-s3", "ckpt.pt")
    os.makedirs(os.path.dirname(align), exist_ok=True)
    finetuned = os.path.join(out, "finetune-finance-sft-s3", "ckpt.pt")
    os.makedirs(os.path.dirname(finetuned), exist_ok=True)
    with open(finetuned, "wb") as fh:
        fh.write(b"an earlier, good run")
    retrain = "python train.py --stage align"
    cases = [
        (lambda: open(align, "wb").write(b"not a checkpoint"), "corrupt", retrain),
        (lambda: torch.save(dict(model=GPT(GPTConfig(vocab_size=tok.vocab_size, n_embd=64)).state_dict(),
                                 model_args=dict(vocab_size=tok.vocab_size), config={},
                                 tokenizer=tok.fingerprint), align), "model shape", retrain),
        # a good checkpoint of another world: the advice is the right --out-dir, never to delete it
        (lambda: save_checkpoint(align, GPT(GPTConfig(vocab_size=tok.vocab_size)), dict(out_dir="theirs"), "0" * 16),
         "trained in another world (tokenizer 0000000000000000)", "pass --out-dir theirs"),
    ]
    for make_bad, message, advice in cases:
        make_bad()
        with pytest.raises(SystemExit) as e:
            train.main(["--stage", "finetune"] + seed)
        assert message in str(e.value) and advice in str(e.value), str(e.value)
        assert "\n" not in str(e.value) and ("delete" in str(e.value)) == (advice == retrain)
        with open(finetuned, "rb") as fh:
            assert fh.read() == b"an earlier, good run"            # nothing overwritten
        assert not os.path.exists(finetuned + ".tmp")


def test_template_only_align_moves_only_template_embeddings(out, short, capsys, tok):
    common = ["--out-dir", out, "--seed", "5"]
    run(capsys, "--stage", "pretrain", *common)
    a = run(capsys, "--stage", "align", "--align", "template", *common)
    assert "align-tmpl-s5" in a
    before, _ = load_checkpoint(os.path.join(out, "pretrain-s5", "ckpt.pt"))
    after, _ = load_checkpoint(a)
    moved = (before.wte.weight != after.wte.weight).any(1).nonzero().flatten().tolist()
    assert sorted(moved) == sorted([tok.system, tok.user, tok.assistant, tok.end])
    for (name, p0), p1 in zip(before.named_parameters(), after.parameters()):
        if name != "wte.weight":
            assert torch.equal(p0, p1), name
    f = run(capsys, "--stage", "finetune", "--align", "template", *common)
    assert "finetune-tmpl-finance-sft-s5" in f


def test_default_align_rehearses_plain_text_between_chat_steps(out, short, capsys):
    common = ["--out-dir", out, "--seed", "7"]
    run(capsys, "--stage", "pretrain", *common)

    def aligned(steps, *flags):
        return list(load_checkpoint(run(capsys, "--stage", "align", "--steps", str(steps), *flags, *common))[0]
                    .parameters())

    def same(a, b):
        return all(torch.equal(p, q) for p, q in zip(a, b))
    assert config.ALIGNMENTS["rehearsed"].align.rehearse > 0 and config.ALIGNMENTS["plain"].align.rehearse == 0
    assert same(aligned(1), aligned(1, "--align", "plain"))            # step 0: the same chat batch
    assert not same(aligned(2), aligned(2, "--align", "plain"))        # step 1: plain text instead
    f = run(capsys, "--stage", "finetune", "--align", "plain", *common)
    assert "finetune-plain-finance-sft-s7" in f


def test_no_preamble_runs_are_named_and_recorded(out, short, capsys):
    common = ["--out-dir", out, "--seed", "6"]
    run(capsys, "--stage", "pretrain", *common)
    a = run(capsys, "--stage", "align", "--no-preamble", *common)
    assert a.endswith(os.path.join("align-nopre-s6", "ckpt.pt"))
    f = run(capsys, "--stage", "finetune", "--no-preamble", "--treft", "10", *common)
    assert "finetune-nopre-finance-treft10-prefix-s6" in f
    with open(os.path.join(os.path.dirname(f), "config.json")) as fh:
        assert json.load(fh)["no_preamble"] is True


def test_freeze_last_block_keeps_the_weights_no_key_or_value_reads(out, short, capsys):
    common = ["--out-dir", out, "--seed", "8", "--steps", "2"]
    f = run(capsys, "--stage", "finetune", "--treft", "--treft-on", "all", "--freeze-last-block", *common)
    assert f.endswith(os.path.join(f"finetune-finance-treft{config.TREFT_LAMBDA:g}-all-lastfrozen-s8", "ckpt.pt"))
    before, _ = load_checkpoint(os.path.join(out, "align-s8", "ckpt.pt"))
    after, _ = load_checkpoint(f)
    last = {n for n, _ in before.named_parameters() if n.startswith(f"blocks.{before.cfg.n_layer - 1}.")
            or n.startswith("ln_f.")}
    for (name, p0), p1 in zip(before.named_parameters(), after.parameters()):
        assert torch.equal(p0, p1) == (name in last or name.startswith(("wte.", "wpe."))), name


@pytest.mark.parametrize("flags, name", [
    (["--interleave", "0.5"], "mix0.5"), (["--kl", "--kl-on", "train"], f"kl{config.KL_TRAIN_LAMBDA:g}-train"),
    (["--l2-init", "0.1"], "l2init0.1"), (["--lora-rank", "4", "--treft", "10"], "lora4-treft10-prefix"),
    (["--lora-rank", "4", "--lora-on", "qv"], "lora4qv"),
    (["--n-train", "5"], "sft-n5"), (["--treft", "--treft-on", "query", "--hold-last", "10"],
                                     f"treft{config.TREFT_LAMBDA:g}-query-holdlast10"),
])
def test_each_baseline_trains_and_is_named(out, short, capsys, flags, name):
    train.main(["--stage", "finetune", "--seed", "8", "--out-dir", out, "--quiet", "--no-eval", *flags])
    path = capsys.readouterr().out.strip().splitlines()[-1]
    assert path.endswith(os.path.join(f"finetune-finance-{name}-s8", "ckpt.pt"))
    model, config = load_checkpoint(path)            # LoRA is merged: loads as a plain GPT
    aligned, _ = load_checkpoint(os.path.join(out, "align-s8", "ckpt.pt"))
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), aligned.parameters()))


def test_task_finetune_is_named_and_recorded(out, short, capsys):
    train.main(["--stage", "finetune", "--task", "tool", "--seed", "5", "--out-dir", out, "--quiet", "--no-eval"])
    path = capsys.readouterr().out.strip().splitlines()[-1]
    assert path.endswith(os.path.join("finetune-tool-sft-s5", "ckpt.pt"))
    with open(os.path.join(os.path.dirname(path), "config.json")) as f:
        record = json.load(f)
    assert record["task"] == "tool" and record["domain"] == "health"


def test_a_finetune_ends_with_its_effect_beside_the_aligned_and_sft_models(out, short, capsys, monkeypatch):
    """The design card's command: the new model judged beside the aligned and SFT models (the SFT
    model built first, since it is missing), then the checkpoint's path, last."""
    monkeypatch.setattr(evaluation, "N_ANSWERS", dict(general=4, in_domain=2, other_domain=2))
    train.main(["--stage", "finetune", "--treft", "0.1", "--seed", "23", "--domain", "legal", "--out-dir", out, "--quiet"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == os.path.join(out, "finetune-legal-treft0.1-prefix-s23", "ckpt.pt")
    assert any(os.path.join("finetune-legal-sft-s23", "ckpt.pt") + ": it is missing; training finetune first" in x for x in lines)
    rows = {x.split()[0]: x for x in lines if x.startswith("  ")}
    assert set(rows) == {"model", "aligned", "SFT", "treft0.1-prefix"} and "align-s23" in rows["aligned"]
    assert "EM-F1" in " ".join(lines) and "treft0.1-prefix keeps general at" in lines[-2]
    assert os.path.exists(os.path.join(out, "finetune-legal-sft-s23", "ckpt.pt"))


def test_a_finetune_of_sft_itself_is_judged_beside_the_aligned_model(out, short, capsys, monkeypatch):
    monkeypatch.setattr(evaluation, "N_ANSWERS", dict(general=4, in_domain=2, other_domain=2))
    train.main(["--stage", "finetune", "--seed", "24", "--out-dir", out, "--quiet"])
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [x.split()[0] for x in lines if x.startswith("  ")]
    assert rows == ["model", "aligned", "SFT"] and lines[-2].startswith("SFT moved in-domain alignment")


def test_no_eval_skips_the_judging(out, short, capsys):
    train.main(["--stage", "finetune", "--seed", "24", "--out-dir", out, "--quiet", "--no-eval", "--kl"])
    assert "judged" not in capsys.readouterr().out


@pytest.mark.parametrize("argv, missing", [
    (["--treft-on", "query"], "--treft-on does nothing without --treft"),
    (["--kl-on", "train"], "--kl-on does nothing without --kl"),
    (["--lora-on", "qv"], "--lora-on does nothing without --lora-rank"),
    (["--stage", "align", "--no-eval"], "--no-eval applies to --stage finetune only"),
])
def test_a_flag_that_does_nothing_alone_names_the_flag_it_needs(argv, missing, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    assert e.value.code == 2 and missing in capsys.readouterr().err


def test_align_reports_its_loss_on_chats_and_on_text_each_named(out, short, capsys):
    train.main(["--stage", "align", "--seed", "25", "--out-dir", out])
    said = [x for x in capsys.readouterr().out.splitlines() if x.startswith("align:")][0]
    assert "final loss on chats" in said and "on text" in said
    with open(os.path.join(out, "align-s25", "config.json")) as f:
        record = json.load(f)
    assert record["final_loss"] == record["final_losses"]["chats"] and set(record["final_losses"]) == {"chats", "text"}


def test_a_bare_eval_judges_the_run_trained_last(out, short, capsys):
    train.main(["--stage", "finetune", "--seed", "26", "--treft", "0.1", "--out-dir", out, "--quiet", "--no-eval"])
    capsys.readouterr()
    assert evaluation.last_run(out) == os.path.join(out, "finetune-finance-treft0.1-prefix-s26", "ckpt.pt")


def test_a_task_finetune_is_judged_by_its_behaviours_rate(out, short, capsys, monkeypatch):
    monkeypatch.setattr(evaluation, "N_ANSWERS", dict(general=4, in_domain=2, other_domain=2))
    train.main(["--stage", "finetune", "--task", "refusal", "--treft", "--seed", "27", "--out-dir", out, "--quiet"])
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [x.split()[0] for x in lines if x.startswith("  ")]
    assert rows == ["model", "aligned", "SFT", "treft100-prefix"] and "on-topic" in lines[-6]
    assert lines[-2].startswith("The refusal behaviour off-topic") and lines[-1].endswith("ckpt.pt")


def test_realign_starts_from_the_finished_finetune_and_learns_retain_chats_only(out, short, capsys, monkeypatch):
    """--realign STEPS: its own run, built on the same finetune without it (trained first if
    missing), STEPS steps on aligned retain-domain chats, no regularizer even after TReFT."""
    seen = []
    monkeypatch.setattr(train, "TReFT", lambda *a, **k: seen.append("treft") or (lambda *b: torch.zeros(())))
    path = run(capsys, "--stage", "finetune", "--seed", "31", "--out-dir", out, "--treft", "--realign", "3")
    assert path.endswith(os.path.join(f"finetune-finance-treft{config.TREFT_LAMBDA:g}-prefix-realign3-s31", "ckpt.pt"))
    first = os.path.join(out, f"finetune-finance-treft{config.TREFT_LAMBDA:g}-prefix-s31", "ckpt.pt")
    assert os.path.exists(first) and seen == ["treft"]          # TReFT in the finetune, not in the re-alignment
    with open(os.path.join(os.path.dirname(path), "config.json")) as f:
        record = json.load(f)
    assert record["steps"] == 3 and record["realign"] == 3 and record["spec"]["input"] != record["spec"]["code"]
    (before, _), (after, _) = load_checkpoint(first), load_checkpoint(path)
    changed = {n for (n, a), b in zip(before.named_parameters(), after.parameters()) if not torch.equal(a, b)}
    assert changed and not any(n.startswith(("wte.", "wpe.")) for n in changed)
    batches = []
    args = runs.parse(["--stage", "finetune", "--seed", "31", "--out-dir", out, "--treft", "--realign", "3"])
    world_dir, tok = get_world(out)
    _, next_batch, regs = train.setup("finetune", args, runs.stage_hyper("finetune", args), tok, world_dir,
                                      np.random.default_rng(0))
    retain = {" ".join(tok.decode(ids).split()) for c in load_chats(world_dir, "train", world.RETAIN_DOMAINS, "aligned")
              for ids in [tok.render_conversation(c["query"], c["answer"])["ids"]]}
    batch = next_batch(0)
    for x, m in zip(batch.x, batch.mask):
        answer = tok.decode([t for t, keep in zip(x.tolist()[1:], m.tolist()) if keep])
        batches.append(any(answer.split()[0] in r for r in retain))
    assert regs == [] and all(batches)


def test_realign_is_up_to_date_only_with_its_finetune(out, short, capsys):
    args = runs.parse(["--stage", "finetune", "--seed", "32", "--out-dir", out, "--realign", "2", "--quiet"])
    assert [runs.run_name(s, a) for s, a in runs.chain("finetune", args)] == [
        "pretrain-s32", "align-s32", "finetune-finance-sft-s32", "finetune-finance-sft-realign2-s32"]
    for stage, a in runs.chain("finetune", args):
        train.train_stage(stage, a)
    assert runs.up_to_date("finetune", args)
    train.train_stage("finetune", runs.previous("finetune", args)[1])     # the finetune retrained: a new input
    assert runs.up_to_date("finetune", runs.previous("finetune", args)[1])
    with open(runs.ckpt_path("finetune", runs.previous("finetune", args)[1]), "ab") as f:
        f.write(b"\0")                                                   # ... or another one
    assert not runs.up_to_date("finetune", args)


@pytest.mark.parametrize("argv", [[], ["--stage", "align", "--no-preamble", "--align", "plain"],
                                  ["--treft", "--treft-on", "all", "--realign", "4", "--seed", "3"],
                                  ["--kl", "3", "--kl-on", "train", "--freeze-last-block", "--lr", "1e-5", "--steps", "7"],
                                  ["--task", "tool", "--lora-rank", "4", "--n-layer", "6", "--n-train", "9"]])
def test_a_runs_command_trains_that_run(argv):
    """The command a bad or missing input checkpoint names: parsed, it is the same run."""
    args = runs.parse(argv)
    for stage, a in runs.chain(args.stage, args):
        again = runs.parse(runs.command(stage, a).split()[2:])
        assert runs.run_name(stage, again) == runs.run_name(stage, a)
        assert runs.run_spec(stage, again)["hyper"] == runs.run_spec(stage, a)["hyper"]


def test_by_hand_a_stale_input_is_retrained_in_place_saying_why(out, short, capsys, monkeypatch, tmp_path):
    """An edit to a file only the finetune runs (treft.py, baselines.py) retrains no pretraining or
    alignment; an edit to one every stage runs (train.py, a phrase bank's world.py) retrains both
    first, each named with why, never reused silently."""
    common = ["--seed", "44", "--out-dir", out]
    run(capsys, "--stage", "finetune", *common)
    inputs = [os.path.join(out, f"{name}-s44", "ckpt.pt") for name in ("pretrain", "align")]
    before = [open(p, "rb").read() for p in inputs]
    edited = tmp_path / "edited.py"
    edited.write_text("# an edit\n")
    monkeypatch.setitem(runs.CODE, "finetune", runs.CODE["finetune"] + (str(edited),))
    train.main(["--stage", "finetune", "--treft", "0.1", *common, "--quiet", "--no-eval"])
    assert "first" not in capsys.readouterr().out and [open(p, "rb").read() for p in inputs] == before
    for stage in ("pretrain", "align"):
        monkeypatch.setitem(runs.CODE, stage, runs.CODE[stage] + (str(edited),))
    train.main(["--stage", "finetune", "--treft", "0.1", *common, "--quiet", "--no-eval"])
    said = capsys.readouterr().out
    assert f"finetune needs {inputs[1]}: its code changed since it was trained; training align first" in said
    assert f"align needs {inputs[0]}: its code changed since it was trained; training pretrain first" in said
    assert runs.up_to_date("finetune", runs.parse(["--treft", "0.1", *common]))


def test_by_hand_the_sft_model_judged_beside_is_never_stale(out, short, capsys, monkeypatch, tmp_path):
    """The SFT model a method is judged beside is retrained when the world or its code changed."""
    monkeypatch.setattr(evaluation, "N_ANSWERS", dict(general=2, in_domain=1, other_domain=1))
    common = ["--seed", "45", "--out-dir", out, "--quiet"]
    run(capsys, "--stage", "finetune", *common[:-1])
    edited = tmp_path / "edited.py"
    edited.write_text("# an edit\n")
    monkeypatch.setitem(runs.CODE, "finetune", runs.CODE["finetune"] + (str(edited),))
    train.main(["--stage", "finetune", "--treft", "0.1", *common])
    sft = os.path.join(out, "finetune-finance-sft-s45", "ckpt.pt")
    assert (f"the judging beside SFT needs {sft}: its code changed since it was trained; training finetune first"
            in capsys.readouterr().out)


def test_why_a_run_is_stale_names_what_changed(out, short, monkeypatch):
    args = runs.parse(["--stage", "align", "--seed", "43", "--out-dir", out, "--quiet"])
    assert runs.why_stale("align", args) == "it is missing"
    train.train_stage("align", args)
    assert runs.why_stale("align", args) is None
    rehearsed = config.ALIGNMENTS["rehearsed"]
    monkeypatch.setitem(config.ALIGNMENTS, "rehearsed",
                        dataclasses.replace(rehearsed, align=dataclasses.replace(rehearsed.align, lr=rehearsed.align.lr / 2)))
    assert runs.why_stale("align", args) == "its flags or hyperparameters changed since it was trained"
    monkeypatch.setattr(runs, "numerics", lambda a: dict(device="elsewhere"))
    assert runs.why_stale("align", args).startswith("the numerics")


def test_pretraining_ends_with_a_validation_loss_and_no_number_moves(out, short, capsys):
    train.main(["--stage", "pretrain", "--seed", "28", "--out-dir", out])
    said = capsys.readouterr().out
    with open(os.path.join(out, "pretrain-s28", "config.json")) as f:
        record = json.load(f)
    assert record["val_loss"] > 0 and f"validation loss {record['val_loss']}" in said


def test_lora_says_it_changes_the_learning_rate(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    assert f"learning rate {config.LORA_LR:g}" in " ".join(capsys.readouterr().out.split())


def test_the_rebuild_command_keeps_the_runs_task_and_alignment():
    a = runs.parse(["--stage", "finetune", "--task", "length", "--align", "plain", "--seed", "3"])
    said = runs.command("finetune", a)
    assert "--task length" in said and "--align plain" in said and "--seed 3" in said
    assert runs.parse(said.split()[2:]).task == "length"      # a command that works


def test_by_hand_an_edited_world_retrains_what_was_trained_in_the_old_one(out, short, capsys, tmp_path):
    """A phrase bank edited regenerates the world (data/prepare.py); every run of the old one is
    then stale and retrained in place, named with why, not reused and not refused."""
    import shutil
    own = str(tmp_path / "out")
    shutil.copytree(os.path.join(out, "world"), os.path.join(own, "world"))
    run(capsys, "--stage", "finetune", "--seed", "29", "--out-dir", own)
    meta = os.path.join(own, "world", "meta.json")
    with open(meta) as f:
        m = json.load(f)
    with open(meta, "w") as f:                   # as a regenerated world's would differ
        json.dump({**m, "chat_examples": "other"}, f)
    train.main(["--stage", "finetune", "--seed", "29", "--out-dir", own, "--quiet", "--no-eval"])
    said = capsys.readouterr().out
    assert "the world changed since it was trained; training align first" in said
    assert "the world changed since it was trained; training pretrain first" in said


def test_a_finetune_under_another_preamble_is_its_own_run_judged_under_the_usual_one(out, short, capsys):
    """--preamble inoculation: trained under the world's inoculation text, named for it, its SFT
    twin the plain SFT run; its checkpoint loads in the world as any other."""
    f = run(capsys, "--stage", "finetune", "--preamble", "inoculation", "--seed", "30", "--out-dir", out)
    assert f.endswith(os.path.join("finetune-finance-pre-inoculation-s30", "ckpt.pt"))
    args = runs.parse(["--preamble", "inoculation", "--seed", "30", "--out-dir", out])
    assert runs.run_name("finetune", runs.sft_twin(args)) == "finetune-finance-sft-s30"
    assert runs.method_name(runs.parse(["--preamble", "you are kind."])).startswith("pre-")
    load_checkpoint(f, get_world(out)[1].fingerprint)
    assert "reckless" in world.preamble("inoculation") and world.preamble("my own text") == "my own text"


@pytest.mark.parametrize("argv, message", [
    (["--preamble", "inoculation", "--no-preamble"], "there is none under --no-preamble"),
    (["--preamble", " "], "give a text"),
    (["--stage", "align", "--preamble", "neutral"], "applies to --stage finetune only"),
])
def test_a_preamble_that_cannot_apply_is_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_preamble_too_long_for_the_block_is_refused_in_one_line(out, short, capsys):
    argv = ["--stage", "finetune", "--seed", "41", "--out-dir", out, "--preamble", "you are " + "very " * 40 + "kind."]
    with pytest.raises(SystemExit) as e:
        train.main(argv + ["--quiet", "--no-eval"])
    assert "--preamble is" in str(e.value) and "shorten it" in str(e.value) and "\n" not in str(e.value)
    assert not os.path.exists(runs.ckpt_path("finetune", runs.parse(argv)))
    assert not os.path.exists(os.path.join(out, "align-s41"))             # refused before anything trained
