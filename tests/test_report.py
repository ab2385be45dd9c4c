"""report.py: it imports no torch, and a finetune study's page shows each section that has data.

    python -m pytest -q tests/test_report.py
"""
import json
import os
import subprocess
import sys

from lab import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_report_imports_no_torch():
    code = "import sys; from lab import report; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def summary(per_seed=(40.0, 50.0)):
    s = report.stats(list(per_seed))
    cell = {k: s for k in ("general", "in_domain", "other_domain", "em_f1", "misaligned_rate", "persona_transfer",
                           "leakage", "coherence")}
    return dict(study="main", command="python reproduce.py", commit="abc1234", machine="a CPU", torch="2.x",
                seconds=1, seeds=[0, 1], answers=8, methods={"finance": {"aligned": cell, "sft": cell, "treft": cell}},
                sweeps={}, drift={}, segment_drift={})


def test_stats_are_mean_spread_and_seeds():
    assert report.stats([1.0, 3.0]) == dict(mean=2.0, sd=1.4142, per_seed=[1.0, 3.0])
    assert report.stats([5.0])["sd"] == 0.0


def test_methods_page_has_the_sections_with_data_only(tmp_path):
    page = report.methods_markdown(summary(), "Results", "a note")
    assert page.startswith("# Results") and "a note" in page and "`python reproduce.py` at commit `abc1234`" in page
    assert "| TReFT (prefix) | 45.0 ± 7.1 |" in page and "| paper: general / in-domain / EM-F1 |" in page
    assert "piggyback evidence" not in page and "Training cost" not in page        # no patch, no cost: no section
    s = dict(summary(), cost={"sft": 0.1, "treft": 0.11}, cost_rounds=3, cost_steps=30)
    assert "| TReFT (prefix) | 0.110 | 1.10 |" in report.methods_markdown(s, "Results", "")
    json.dumps(s)                                                                    # a summary is plain JSON


def test_interleavings_label_gives_its_share_as_the_paper_counts_it():
    """The share of the training data that is retain chats, as the paper's '20% retain set' counts it."""
    s = dict(config=dict(methods={"interleave": ["--interleave", "0.8"], "interleave-paper": ["--interleave", "0.2"]}))
    assert report.label("interleave", s) == "data interleaving, 80% retain data"
    assert report.label("interleave-paper", s) == "data interleaving (the paper's share), 20% retain data"
    assert report.PAPER_TABLE3["interleave-paper"] == (64.1, 15.3, 73.0)
