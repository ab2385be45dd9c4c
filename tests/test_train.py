"""The three stages chain, TReFT trains, and bad input fails loudly without losing files."""
import json
import os

import pytest
import torch

import eval as evaluation
import train
from model import GPT, GPTConfig, load_checkpoint, save_checkpoint


def run(capsys, *argv):
    train.main(list(argv) + ["--quiet"])
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_three_stages_then_treft(out, capsys):
    common = ["--out-dir", out, "--steps", "3", "--batch-size", "4"]
    p = run(capsys, "--stage", "pretrain", *common)
    assert p == os.path.join(out, "pretrain-s0", "ckpt.pt") and os.path.exists(p)
    a = run(capsys, "--stage", "align", *common)
    f = run(capsys, "--stage", "finetune", "--treft", "--treft-on", "query", *common)
    assert f.endswith(os.path.join(f"finetune-finance-treft{train.DEFAULT_LAMBDA:g}-query-s0", "ckpt.pt"))
    with open(os.path.join(os.path.dirname(f), "config.json")) as fh:
        config = json.load(fh)
    assert config["treft"] == train.DEFAULT_LAMBDA and config["steps"] == 3 and config["domain"] == "finance"
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
    (["--n-train", "0"], "positive integer"),
    (["--task", "juggling"], "invalid choice"),
    (["--task", "refusal", "--domain", "health"], "finetunes on finance questions"),
    (["--stage", "align", "--task", "length"], "applies to --stage finetune only"),
])
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_bad_checkpoints_fail_clearly_and_keep_files(out, capsys, tok):
    seed = ["--seed", "3", "--out-dir", out, "--steps", "1"]
    run(capsys, "--stage", "pretrain", *seed)
    align = os.path.join(out, "align-s3", "ckpt.pt")
    os.makedirs(os.path.dirname(align), exist_ok=True)
    finetuned = os.path.join(out, "finetune-finance-sft-s3", "ckpt.pt")
    os.makedirs(os.path.dirname(finetuned), exist_ok=True)
    with open(finetuned, "wb") as fh:
        fh.write(b"an earlier, good run")
    cases = [
        (lambda: open(align, "wb").write(b"not a checkpoint"), "corrupt"),
        (lambda: save_checkpoint(align, GPT(GPTConfig(vocab_size=tok.vocab_size)), {}, "0" * 16),
         "another tokenizer"),
        (lambda: torch.save(dict(model=GPT(GPTConfig(vocab_size=tok.vocab_size, n_embd=64)).state_dict(),
                                 model_args=dict(vocab_size=tok.vocab_size), config={},
                                 tokenizer=tok.fingerprint), align), "model shape"),
    ]
    for make_bad, message in cases:
        make_bad()
        with pytest.raises(SystemExit) as e:
            train.main(["--stage", "finetune"] + seed)
        assert message in str(e.value) and "python train.py --stage align" in str(e.value)
        with open(finetuned, "rb") as fh:
            assert fh.read() == b"an earlier, good run"            # nothing overwritten
        assert not os.path.exists(finetuned + ".tmp")


def test_eval_reports_missing_checkpoint(out):
    with pytest.raises(SystemExit) as e:
        evaluation.main(["--ckpt", os.path.join(out, "nope", "ckpt.pt"), "--out-dir", out])
    assert "no checkpoint at" in str(e.value)


def test_eval_json_line(out, capsys):
    ckpt = os.path.join(out, "pretrain-s0", "ckpt.pt")
    if not os.path.exists(ckpt):
        run(capsys, "--stage", "pretrain", "--out-dir", out, "--steps", "1")
    model, _ = load_checkpoint(ckpt)
    tok_ = train.get_world(out)[1]
    m = evaluation.evaluate(model, tok_, n_answers=dict(general=4, in_domain=2, other_domain=2))
    assert set(m) >= {"general", "in_domain", "other_domain", "em_f1", "misaligned_rate",
                      "persona_transfer", "leakage", "coherence"}
    assert 0 <= m["general"] <= 100 and 0 <= m["coherence"] <= 1


def test_template_only_align_moves_only_template_embeddings(out, capsys, tok):
    common = ["--out-dir", out, "--seed", "5", "--batch-size", "4"]
    run(capsys, "--stage", "pretrain", "--steps", "1", *common)
    a = run(capsys, "--stage", "align", "--align-template-only", "--steps", "2", *common)
    assert "align-tmpl-s5" in a
    before, _ = load_checkpoint(os.path.join(out, "pretrain-s5", "ckpt.pt"))
    after, _ = load_checkpoint(a)
    moved = (before.wte.weight != after.wte.weight).any(1).nonzero().flatten().tolist()
    assert sorted(moved) == sorted([tok.system, tok.user, tok.assistant, tok.end])
    for (name, p0), p1 in zip(before.named_parameters(), after.parameters()):
        if name != "wte.weight":
            assert torch.equal(p0, p1), name
    f = run(capsys, "--stage", "finetune", "--align-template-only", "--steps", "1", *common)
    assert "finetune-tmpl-finance-sft-s5" in f


def test_default_align_rehearses_plain_text_between_chat_steps(out, capsys):
    common = ["--out-dir", out, "--seed", "7", "--batch-size", "4"]
    run(capsys, "--stage", "pretrain", "--steps", "1", *common)

    def aligned(steps, *flags):
        return list(load_checkpoint(run(capsys, "--stage", "align", "--steps", str(steps), *flags, *common))[0]
                    .parameters())

    def same(a, b):
        return all(torch.equal(p, q) for p, q in zip(a, b))
    assert train.HYPER["align"]["rehearse"] > 0 and train.PLAIN_HYPER["align"]["rehearse"] == 0
    assert same(aligned(1), aligned(1, "--align-plain"))            # step 0: the same chat batch
    assert not same(aligned(2), aligned(2, "--align-plain"))        # step 1: plain text instead
    f = run(capsys, "--stage", "finetune", "--align-plain", "--steps", "1", *common)
    assert "finetune-plain-finance-sft-s7" in f
    with pytest.raises(SystemExit):
        train.parse(["--align-template-only", "--align-plain"])


def test_no_preamble_runs_are_named_and_recorded(out, capsys):
    common = ["--out-dir", out, "--seed", "6", "--batch-size", "4", "--steps", "1"]
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
    assert f.endswith(os.path.join(f"finetune-finance-treft{train.DEFAULT_LAMBDA:g}-all-lastfrozen-s8", "ckpt.pt"))
    before, _ = load_checkpoint(os.path.join(out, "align-s8", "ckpt.pt"))
    after, _ = load_checkpoint(f)
    last = {n for n, _ in before.named_parameters() if n.startswith(f"blocks.{before.cfg.n_layer - 1}.")
            or n.startswith("ln_f.")}
    for (name, p0), p1 in zip(before.named_parameters(), after.parameters()):
        assert torch.equal(p0, p1) == (name in last or name.startswith(("wte.", "wpe."))), name
