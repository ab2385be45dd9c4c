"""The baselines of train.py and LoRA: zero at their reference, positive away from it, identity at start."""
import copy
import json
import os
import statistics

import pytest
import torch

import reproduce
import train
from model import GPT, GPTConfig, add_lora, load_checkpoint, merge_lora


def tiny():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=16))


def nudge(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))


def test_kl_is_zero_at_the_reference_and_positive_away():
    model, x = tiny(), torch.randint(0, 50, (3, 10))
    ref = copy.deepcopy(model)
    mask = torch.ones(3, 10)
    assert train.kl_to_init(model(x)[0], ref(x)[0], mask).item() == pytest.approx(0, abs=1e-6)
    nudge(model)
    assert train.kl_to_init(model(x)[0], ref(x)[0], mask).item() > 1e-4
    assert train.kl_to_init(model(x)[0], ref(x)[0], torch.zeros(3, 10)).item() == 0   # masked out


def test_l2_anchor_is_zero_at_init_and_positive_away():
    model = tiny()
    init = [p.detach().clone() for p in model.parameters()]
    assert train.l2_to_init(list(model.parameters()), init).item() == 0
    nudge(model)
    assert train.l2_to_init(list(model.parameters()), init).item() > 0


@pytest.mark.parametrize("on", ["all", "qv"])
def test_lora_starts_as_the_identity_and_merges_exactly(on):
    model, x = tiny(), torch.randint(0, 50, (2, 12))
    before, aux0 = model(x, return_kv=True)
    add_lora(model, rank=4, on=on)
    assert torch.equal(model(x)[0], before)                      # B = 0: the same logits
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith((".A", ".B")) for n in trainable)
    assert on == "all" or all(".attn.c_attn." in n for n in trainable)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(".B"):
                p.normal_(0, 0.1)
    adapted, aux = model(x, return_kv=True)
    assert not torch.allclose(adapted, before)
    # qv leaves the key projection alone: the first layer's keys (its input is the
    # embeddings, which LoRA never changes) are exactly the base model's.
    assert torch.equal(aux["kv"][0][0], aux0["kv"][0][0]) == (on == "qv")
    assert not torch.equal(aux["kv"][0][1], aux0["kv"][0][1])   # the values move either way
    merge_lora(model)
    assert torch.allclose(model(x)[0], adapted, atol=1e-5)
    assert set(model.state_dict()) == set(tiny().state_dict())   # a plain GPT again


@pytest.mark.parametrize("flags, name", [
    (["--interleave", "0.5"], "mix0.5"), (["--kl", "--kl-on", "train"], f"kl{train.DEFAULT_KL:g}-train"),
    (["--l2-init", "0.1"], "l2init0.1"), (["--lora-rank", "4", "--treft", "10"], "lora4-treft10-prefix"),
    (["--lora-rank", "4", "--lora-on", "qv"], "lora4qv"),
    (["--n-train", "5"], "sft-n5"),
])
def test_each_baseline_trains_and_is_named(out, short, capsys, flags, name):
    train.main(["--stage", "finetune", "--seed", "8", "--out-dir", out, "--quiet", *flags])
    path = capsys.readouterr().out.strip().splitlines()[-1]
    assert path.endswith(os.path.join(f"finetune-finance-{name}-s8", "ckpt.pt"))
    model, config = load_checkpoint(path)            # LoRA is merged: loads as a plain GPT
    aligned, _ = load_checkpoint(os.path.join(out, "align-s8", "ckpt.pt"))
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), aligned.parameters()))


def test_up_to_date_reuses_only_unchanged_runs(out, short, capsys):
    args = train.parse(["--stage", "finetune", "--seed", "9", "--out-dir", out, "--quiet"])
    assert not train.up_to_date("finetune", args)
    train.train_stage("finetune", args)
    assert train.up_to_date("finetune", args)
    other = train.parse(["--stage", "finetune", "--seed", "9", "--out-dir", out, "--steps", "3"])
    assert not train.up_to_date("finetune", other)             # other hyperparameters
    align = train.parse(["--stage", "align", "--seed", "9", "--out-dir", out, "--quiet", "--steps", "3"])
    train.train_stage("align", align)                          # a new input checkpoint
    assert not train.up_to_date("finetune", args)


def test_tiny_reproduce_runs_end_to_end(out, short, tmp_path, capsys, monkeypatch):
    results = str(tmp_path / "results")
    monkeypatch.setattr(reproduce, "COST_STEPS", 5)              # the report must say what was timed
    reproduce.main(["--seeds", "0", "--methods", "sft", "treft", "--lambdas", "1", "--sizes", "5",
                    "--answers", "4", "--trials", "1", "--out-dir", out, "--results", results])
    with open(os.path.join(results, "summary.json")) as f:
        s = json.load(f)
    assert set(s["methods"]["finance"]) == {"aligned", "sft", "treft"}
    assert s["methods"]["finance"]["sft"]["em_f1"]["per_seed"] and s["commit"]
    assert set(s["patch"]) >= {"none", "prefix", "postfix", "query", "all", "layers", "perturb", "first_word"}
    assert s["sweeps"]["lambda"]["treft"]["1.0"]["general"]["per_seed"]
    assert s["sweeps"]["size"]["sft"]["5"] and set(s["drift"]) == {"sft", "treft"}
    assert set(s["cost"]) >= {"sft", "treft"}                   # both trained by this run, so timed
    with open(os.path.join(results, "runs.jsonl")) as f:
        kinds = [json.loads(line)["kind"] for line in f]
    assert kinds.count("eval") == 1 + 2 + 1 + 2 and kinds.count("patch") == 1 and kinds.count("drift") == 2
    d = s["segment_drift"]
    assert kinds.count("segment_drift") == 2 and set(d) == {"sft", "treft"} and set(d["sft"]) == {"in_domain", "general"}
    for m in ("sft", "treft"):     # the prefix is the same in every chat: one drift, that of drift.png's layers
        prefix = [d[m][c]["prefix"]["mean"] for c in ("in_domain", "general")]
        layers = statistics.mean(x["mean"] for x in s["drift"][m])
        assert prefix[0] == pytest.approx(prefix[1], abs=1e-4) and prefix[0] == pytest.approx(layers, abs=1e-4)
    assert min(d["sft"]["general"][seg]["mean"] for seg in ("prefix", "query", "postfix", "response")) > 0
    for name in ("RESULTS.md", "tradeoff.png", "em_f1.png", "patching.png", "layers.png", "lambda.png",
                 "drift.png", "segments.png"):
        assert os.path.getsize(os.path.join(results, name)) > 0, name
    page = open(os.path.join(results, "RESULTS.md")).read()
    assert "TReFT (prefix)" in page and "Where finetuning moves the K/V" in page and "first word forced" in page
    assert s["cost_steps"] == 5 and f"{s['cost_rounds']} turns of 5 steps" in page


def test_tiny_lora_qv_study_sweeps_the_three_positions(out, short, tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "COST_STEPS", 5)
    results = str(tmp_path / "results")
    reproduce.main(["--lora-qv", "--seeds", "0", "--lambdas", "1", "--answers", "4", "--out-dir", out,
                    "--results", results])
    with open(os.path.join(results, "lora-qv", "summary.json")) as f:
        s = json.load(f)
    assert set(s["methods"]["finance"]) == {"aligned", "lora-qv"} and "patch" not in s
    assert set(s["sweeps"]["lambda"]) == set(reproduce.LORA_QV_SWEEP) == {
        "lora-qv-treft-prefix", "lora-qv-treft-query", "lora-qv-treft-all"}
    assert all(set(points) == {"1.0"} for points in s["sweeps"]["lambda"].values())
    page = open(os.path.join(results, "lora-qv", "RESULTS.md")).read()
    assert "TReFT's positions by lambda" in page and "LoRA r8 on q, v + TReFT (query)" in page
    assert os.path.getsize(os.path.join(results, "lora-qv", "lambda.png")) > 0
    with pytest.raises(SystemExit):
        reproduce.main(["--lora-qv", "--variants", "--out-dir", out, "--results", results])


def test_parallel_seeds_give_what_one_process_gives(out, short, tmp_path):
    """--jobs 2 trains each seed in its own process; one process, reusing those runs,
    measures the same numbers, and per-seed lists follow --seeds in both."""
    common = ["--seeds", "1", "0", "--methods", "sft", "--answers", "4", "--no-patch", "--out-dir", out]
    reproduce.main([*common, "--jobs", "2", "--results", str(tmp_path / "a")])
    reproduce.main([*common, "--jobs", "1", "--results", str(tmp_path / "b")])
    a, b = (json.loads((tmp_path / r / "summary.json").read_text()) for r in "ab")
    assert a["methods"] == b["methods"] and a["seeds"] == [1, 0]
    rows = [json.loads(line) for line in (tmp_path / "a" / "runs.jsonl").read_text().splitlines()]
    evals = sorted((r["seed"], r["method"]) for r in rows if r["kind"] == "eval")
    assert evals == [(0, "aligned"), (0, "sft"), (1, "aligned"), (1, "sft")]


def test_default_jobs_one_process_per_seed_on_a_cpu_only(monkeypatch):
    monkeypatch.setattr(reproduce.os, "cpu_count", lambda: 2)
    assert reproduce.default_jobs("cpu", 3) == 3 and reproduce.default_jobs("cpu", 1) == 1
    assert reproduce.default_jobs("cpu", 10) == 3           # no more than the cores + 1
    assert reproduce.default_jobs("cuda", 3) == 1


def test_tiny_strength_study_keeps_the_main_runs(out, short, tmp_path, monkeypatch):
    """The strength grid trains in out/strength/*, so the main runs' checkpoints stay as they were."""
    monkeypatch.setattr(reproduce, "FINETUNE_LRS", (1e-5,))
    main_sft = train.parse(["--stage", "finetune", "--seed", "11", "--out-dir", out, "--quiet"])
    path = train.train_stage("finetune", main_sft)
    before = open(path, "rb").read()
    results = str(tmp_path / "results")
    reproduce.main(["--strength", "--seeds", "11", "--answers", "4", "--out-dir", out, "--results", results])
    assert open(path, "rb").read() == before and train.up_to_date("finetune", main_sft)
    with open(os.path.join(results, "strength", "summary.json")) as f:
        s = json.load(f)
    assert s["split"] == "val" and set(s["strength"]) == set(reproduce.ALIGNS)
    for lrs in s["strength"].values():
        assert set(lrs) == {"0"} | {f"{lr:g}" for lr in reproduce.FINETUNE_LRS}
        assert set(lrs["1e-05"]) == {"none", "prefix", "query"} and set(lrs["0"]) == {"none"}
    for name, flags in reproduce.ALIGNS.items():                       # the stock alignments are shared
        aligned = train.run_name("align", train.parse(["--stage", "align", "--seed", "11", *flags]))
        assert os.path.islink(os.path.join(out, "strength", name, aligned)), name
    for name in ("RESULTS.md", "strength.png"):
        assert os.path.getsize(os.path.join(results, "strength", name)) > 0, name
    for flag in ("--align-plain", "--align-template-only"):            # it runs every alignment itself
        with pytest.raises(SystemExit):
            reproduce.main(["--strength", flag, "--out-dir", out, "--results", results])
