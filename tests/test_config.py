"""config.py: flags override the stage asked for only, LoRA learns at its own rate, run names say what ran
(an override included, so that it never replaces the default run).

    python -m pytest -q tests/test_config.py
"""
import json
import os

import pytest

import config
import runs


def hyper(stage, *argv):
    return runs.stage_hyper(stage, runs.parse(list(argv)))


def test_flags_override_the_stage_asked_for_only():
    assert hyper("finetune", "--steps", "7").steps == 7
    assert hyper("align", "--steps", "7") == config.ALIGNMENTS["rehearsed"].align     # built first: its defaults
    assert hyper("finetune", "--lora-rank", "8").lr == config.LORA_LR
    assert hyper("finetune", "--lora-rank", "8", "--lr", "1e-3").lr == 1e-3
    assert hyper("align", "--stage", "align", "--align", "plain").rehearse == 0


@pytest.mark.parametrize("argv, stage, name", [
    ([], "finetune", "finetune-finance-sft-s0"),
    (["--treft", "--seed", "2"], "finetune", "finetune-finance-treft100-prefix-s2"),
    (["--align", "template", "--no-preamble"], "align", "align-tmpl-nopre-s0"),
    (["--task", "tool", "--lora-rank", "8", "--lora-on", "qv"], "finetune", "finetune-tool-lora8qv-s0"),
    (["--kl", "--interleave", "0.5", "--n-train", "5"], "finetune", "finetune-finance-mix0.5-kl30-retain-n5-s0"),
    (["--align", "r1b8"], "align", "align-r1b8-s0"),
    ([], "pretrain", "pretrain-s0"),
    # an override of a default is its own run; the stages built first keep their names
    (["--lr", "1e-5"], "finetune", "finetune-finance-sft-lr1e-05-s0"),
    (["--stage", "align", "--steps", "50", "--batch-size", "8"], "align", "align-steps50-bs8-s0"),
    (["--stage", "align", "--steps", "50"], "pretrain", "pretrain-s0"),
    (["--steps", "120", "--lr", "1e-4"], "finetune", "finetune-finance-sft-s0"),     # the defaults: the same run
    (["--lora-rank", "8", "--lr", "1e-4"], "finetune", "finetune-finance-lora8-lr0.0001-s0"),
    # re-aligned afterwards: its own run, on top of the finetune it re-aligns
    (["--realign", "--seed", "1"], "finetune", f"finetune-finance-sft-realign{config.REALIGN_STEPS}-s1"),
    (["--treft", "--realign", "30", "--steps", "60"], "finetune", "finetune-finance-treft100-prefix-realign30-steps60-s0"),
])
def test_run_names(argv, stage, name):
    assert runs.run_name(stage, runs.parse(argv)) == name


def test_realign_trains_its_own_steps_and_the_finetune_before_it_its_own():
    args = runs.parse(["--realign", "30", "--steps", "60", "--lr", "1e-3"])
    assert runs.stage_hyper("finetune", args).steps == 30 and runs.stage_hyper("finetune", args).lr == 1e-3
    stage, before = runs.previous("finetune", args)
    assert runs.stage_hyper(stage, before).steps == 60 and runs.run_name(stage, before) == "finetune-finance-sft-steps60-lr0.001-s0"


def test_the_realign_default_is_the_one_validation_chose():
    """config.REALIGN_STEPS is the best mean validation EM-F1 of the conditional study's grid."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "results", "conditional", "summary.json")) as f:
        realign = json.load(f)["realign"]
    grid = {k[len("realign"):]: v for k, v in realign["validation"].items() if k.startswith("realign")}
    assert realign["points"]["realign"] == int(max(grid, key=lambda s: grid[s]["em_f1"]["mean"]))
    assert realign["points"]["realign"] == realign["default"] == config.REALIGN_STEPS
    assert realign["warmup"] == {s: int(int(s) * config.REALIGN_WARMUP) for s in grid}
