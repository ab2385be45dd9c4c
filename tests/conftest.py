"""Shared fixtures: a tiny world, its tokenizer and out-dir, built once per session; short stages."""
import dataclasses
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import config                             # noqa: E402
import lab.studies.validation             # noqa: E402,F401  (adds the grid's candidate alignments to config's)
from data.prepare import prepare          # noqa: E402
from data.tokenizer import Tokenizer      # noqa: E402


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return prepare(str(out), seed=0, pretrain_tokens=20_000, chat_per_bank=20, quiet=True)


@pytest.fixture(scope="session")
def tok(world_dir):
    return Tokenizer.load(os.path.join(world_dir, "tokenizer.json"))


@pytest.fixture(scope="session")
def out(world_dir):
    """The --out-dir that holds the tiny world."""
    return os.path.dirname(world_dir)


@pytest.fixture
def short(monkeypatch):
    """Every stage's defaults cut to a few steps: tests that train check plumbing, not learning."""
    def cut(stage):
        return dataclasses.replace(stage, steps=2, batch_size=4)
    monkeypatch.setattr(config, "PRETRAIN", cut(config.PRETRAIN))
    for name, a in list(config.ALIGNMENTS.items()):
        monkeypatch.setitem(config.ALIGNMENTS, name, dataclasses.replace(a, align=cut(a.align), finetune=cut(a.finetune)))
