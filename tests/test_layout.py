"""The codebase keeps the shape of a textbook: short functions, a short train.py, help on every flag.

    python -m pytest -q tests/test_layout.py
"""
import ast
import glob
import os

import pytest

import config
import runs
from lab import engine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = sorted(glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "studies", "*.py"))
                 + glob.glob(os.path.join(ROOT, "exercises", "*.py")))


@pytest.mark.parametrize("path", SOURCES, ids=os.path.basename)
def test_no_function_is_over_60_lines(path):
    tree = ast.parse(open(path).read())
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef) and n.end_lineno - n.lineno + 1 > 60]
    assert not long, long


def test_train_py_is_at_most_300_lines():
    assert len(open(os.path.join(ROOT, "train.py")).read().splitlines()) <= 300


@pytest.mark.parametrize("parser", [runs.parser, engine.parser], ids=["train.py", "reproduce.py"])
def test_every_flag_has_help(parser):
    missing = [a.dest for a in parser()._actions if not a.help]
    assert not missing, missing
