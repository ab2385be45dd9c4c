"""reproduce.py: the run cache, a tiny main study end to end, seeds in parallel, and what a summary records.

    python -m pytest -q tests/test_reproduce.py
"""
import dataclasses
import json
import os
import statistics
import subprocess
from types import SimpleNamespace

import pytest
import torch

import config
import runs
import train
from lab import engine, report
from lab.studies import methods


def test_up_to_date_reuses_only_unchanged_runs(out, short, capsys, monkeypatch):
    args = runs.parse(["--stage", "finetune", "--seed", "9", "--out-dir", out, "--quiet"])
    assert not runs.up_to_date("finetune", args)
    train.train_stage("finetune", args)
    assert runs.up_to_date("finetune", args)
    other = runs.parse(["--stage", "finetune", "--seed", "9", "--out-dir", out, "--steps", "3"])
    assert runs.run_name("finetune", other) != runs.run_name("finetune", args)   # an override: its own run
    assert not runs.up_to_date("finetune", other)
    rehearsed = config.ALIGNMENTS["rehearsed"]                     # other default hyperparameters ...
    monkeypatch.setitem(config.ALIGNMENTS, "rehearsed", dataclasses.replace(
        rehearsed, finetune=dataclasses.replace(rehearsed.finetune, steps=3)))
    assert not runs.up_to_date("finetune", args)
    monkeypatch.setitem(config.ALIGNMENTS, "rehearsed", dataclasses.replace(
        rehearsed, align=dataclasses.replace(rehearsed.align, steps=3)))
    train.train_stage("align", args)                               # ... or a new input checkpoint
    monkeypatch.setitem(config.ALIGNMENTS, "rehearsed", rehearsed)
    assert not runs.up_to_date("finetune", args)


def test_a_run_trained_under_other_numerics_is_not_reused(out, short):
    """A run by hand (two threads) sums in another order than a study's worker (one): never reused."""
    args = runs.parse(["--stage", "finetune", "--seed", "10", "--out-dir", out, "--quiet"])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        for stage in runs.STAGES:
            train.train_stage(stage, args)
        assert runs.up_to_date("finetune", args)
        torch.set_num_threads(threads)
        assert not runs.up_to_date("finetune", args)
    finally:
        torch.set_num_threads(threads)
    spec = runs.run_spec("pretrain", args)["numerics"]
    assert spec["threads"] == threads and spec["device"] == "cpu" and spec["kernels"] and spec["cpu"] and spec["torch"]


def test_tiny_main_study_runs_end_to_end(out, short, tmp_path, monkeypatch):
    results = str(tmp_path / "results")
    monkeypatch.setattr(methods, "COST_STEPS", 5)              # the report must say what was timed
    monkeypatch.setattr(methods, "COST_ROUNDS", 2)
    monkeypatch.setattr(engine, "ROOT", str(tmp_path))         # as if these were the project's own results/ ...
    monkeypatch.setattr(engine, "requote", lambda: pytest.fail("a run rewrote the tracked pages"))   # ... never the docs
    engine.main(["main", "--seeds", "0", "--methods", "sft", "treft", "--answers", "2", "--trials", "1",
                    "--out-dir", out, "--results", results])
    folder = os.path.join(results, "main")
    with open(os.path.join(folder, "summary.json")) as f:
        s = json.load(f)
    assert s["study"] == "main" and s["command"].startswith("python reproduce.py main")
    assert s["commit"] == engine.git_commit() and s["torch"] and s["machine"]
    assert set(s["methods"]["finance"]) == {"aligned", "sft", "treft"}
    assert s["methods"]["finance"]["sft"]["em_f1"]["per_seed"]
    assert set(s["patch"]) >= {"none", "prefix", "postfix", "query", "all", "layers", "perturb", "first_word"}
    assert set(s["drift"]) == {"sft", "treft"} and set(s["cost"]) == {"sft", "treft"}
    with open(os.path.join(folder, "runs.jsonl")) as f:
        kinds = [json.loads(line)["kind"] for line in f]
    assert kinds.count("eval") == 3 and kinds.count("patch") == 1 and kinds.count("drift") == 2
    assert not os.path.exists(os.path.join(folder, "runs.jsonl.partial"))
    d = s["segment_drift"]
    assert kinds.count("segment_drift") == 2 and set(d) == {"sft", "treft"} and set(d["sft"]) == {"in_domain", "general"}
    for m in ("sft", "treft"):     # the prefix is the same in every chat: one drift, that of drift.png's layers
        prefix = [d[m][c]["prefix"]["mean"] for c in ("in_domain", "general")]
        layers = statistics.mean(x["mean"] for x in s["drift"][m])
        assert prefix[0] == pytest.approx(prefix[1], abs=1e-4) and prefix[0] == pytest.approx(layers, abs=1e-4)
    assert min(d["sft"]["general"][seg]["mean"] for seg in ("prefix", "query", "postfix", "response")) > 0
    for name in ("RESULTS.md", "tradeoff.png", "em_f1.png", "patching.png", "layers.png", "drift.png", "segments.png"):
        assert os.path.getsize(os.path.join(folder, name)) > 0, name
    page = open(os.path.join(folder, "RESULTS.md")).read()
    assert "TReFT (prefix)" in page and "Where finetuning moves the K/V" in page and "first word forced" in page
    assert s["cost_steps"] == 5 and f"{s['cost_rounds']} turns of 5 steps" in page
    os.remove(os.path.join(folder, "RESULTS.md"))          # --report writes the same page from the summary
    engine.main(["main", "--report", "--results", results])
    assert open(os.path.join(folder, "RESULTS.md")).read() == page


@pytest.fixture
def forked(monkeypatch):
    """Workers forked, not spawned, so that they see this test's `short` stages."""
    monkeypatch.setattr(engine, "START_METHOD", "fork")


def test_parallel_seeds_give_what_one_process_gives(out, short, forked, tmp_path, monkeypatch):
    """--jobs 2 trains each seed in its own process; one process, reusing those runs,
    measures the same numbers, and per-seed lists follow --seeds in both."""
    from lab.studies import sizes
    monkeypatch.setattr(sizes.DESIGN, "sizes", (5,))
    monkeypatch.setattr(sizes.DESIGN, "sections", ("methods", "sweeps"))      # no cost benchmark
    common = ["sizes", "--seeds", "1", "0", "--methods", "sft", "--answers", "2", "--out-dir", out]
    engine.main([*common, "--jobs", "2", "--results", str(tmp_path / "a")])
    engine.main([*common, "--jobs", "1", "--results", str(tmp_path / "b")])
    a, b = (json.loads((tmp_path / r / "sizes" / "summary.json").read_text()) for r in "ab")
    assert a["methods"] == b["methods"] and a["sweeps"] == b["sweeps"] and a["seeds"] == [1, 0]
    rows = [json.loads(line) for line in (tmp_path / "a" / "sizes" / "runs.jsonl").read_text().splitlines()]
    evals = sorted((r["seed"], r["method"]) for r in rows if r["kind"] == "eval" and not r["sweep"])
    assert evals == [(0, "aligned"), (0, "sft"), (1, "aligned"), (1, "sft")]


def test_a_worker_stops_once_its_parent_is_gone(monkeypatch):
    """A killed reproduce.py cannot tell its workers; each notices its parent is gone and exits."""
    parents = iter([100, 100, 1])                   # the parent, twice, then init: it died

    def exit_now(code):
        raise SystemExit(code)
    monkeypatch.setattr(engine.os, "getppid", lambda: next(parents))
    monkeypatch.setattr(engine.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(engine.os, "_exit", exit_now)
    with pytest.raises(SystemExit):
        engine.exit_when_orphaned(100)


def test_default_jobs_one_process_per_seed_on_a_cpu_only(monkeypatch):
    monkeypatch.setattr(engine.os, "cpu_count", lambda: 2)
    assert engine.default_jobs("cpu", 3) == 3 and engine.default_jobs("cpu", 1) == 1
    assert engine.default_jobs("cpu", 10) == 3           # no more than the cores + 1
    assert engine.default_jobs("cuda", 3) == 1


def test_the_commit_is_the_projects_own(tmp_path, monkeypatch):
    """Run from inside another repository, the commit recorded is still the project's."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    own = subprocess.run(["git", "-C", engine.ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    assert engine.git_commit().split("+")[0] == (own or "unknown")


def test_every_study_is_listed_and_bad_choices_are_refused(capsys):
    engine.main(["--list"])
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(engine.STUDIES)
    for argv in (["nosuch"], ["tasks", "--methods", "sft"], ["main", "--methods", "magic"], ["--seeds", "-1"]):
        with pytest.raises(SystemExit) as e:
            engine.main(argv)
        assert e.value.code == 2, argv


def test_unwritable_folders_and_a_missing_summary_are_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for flag in ("--out-dir", "--results"):
        with pytest.raises(SystemExit) as e:
            engine.main(["main", flag, str(tmp_path / "file" / "x")])
        assert e.value.code == 2 and f"cannot write to {flag}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        engine.main(["main", "--report", "--results", str(tmp_path / "none")])
    assert "run `python reproduce.py main` first" in str(e.value)


@pytest.mark.parametrize("page", ["README.md", "docs/findings.md"])
def test_the_quoted_results_are_what_the_committed_summaries_give(page):
    """README.md's headline table and docs/findings.md's tables are generated, never typed."""
    text = open(os.path.join(engine.ROOT, page)).read()
    blocks = list(report.QUOTE.finditer(text))
    assert blocks, f"{page} quotes no results"
    assert report.requote(text, engine.study_page) == text, \
        f"{page} differs from the committed summaries: python reproduce.py STUDY --report rewrites it"
    start = blocks[0].end(1)                                        # a line typed into a quote is rewritten
    assert report.requote(text[:start] + "| typed | 99.9 |\n" + text[start:], engine.study_page) == text


def test_the_bar_hears_how_far_each_stage_is(out, short):
    """The first runs of a study take minutes: the bar shows the running stage's steps meanwhile."""
    heard = []
    sweep = engine.Sweep(SimpleNamespace(out_dir=out, device="cpu"), None, status=lambda *kt: heard.append(kt))
    sweep.checkpoint("align", 23)
    assert heard == [("seed 23", "pretrain 1/2"), ("seed 23", "pretrain 2/2"),
                     ("seed 23", "align 1/2"), ("seed 23", "align 2/2")]
