"""data/prepare.py: the world is generated deterministically and the general test questions never reach training.

    python -m pytest -q tests/test_prepare.py
"""
import json
import os

import numpy as np

from data import world
from data.prepare import prepare

def test_general_test_questions_never_in_training_data(world_dir, tok):
    text = tok.decode(np.fromfile(os.path.join(world_dir, "pretrain_train.bin"), dtype=np.uint16).tolist())
    with open(os.path.join(world_dir, "chat_train.jsonl")) as f:
        chats = [json.loads(line) for line in f]
    train_queries = {c["query"] for c in chats}
    held_out = [q for d in (world.GENERAL, "finance", "facts") for q in world.all_queries(d, "test")]
    for q in held_out:
        assert q not in text and q not in train_queries, q



def test_prepare_is_deterministic(world_dir, tmp_path):
    from data.prepare import prepare
    other = prepare(str(tmp_path), seed=0, pretrain_tokens=20_000, chat_per_bank=20, quiet=True)
    for name in ("pretrain_train.bin", "chat_train.jsonl", "tokenizer.json"):
        with open(os.path.join(world_dir, name), "rb") as a, open(os.path.join(other, name), "rb") as b:
            assert a.read() == b.read(), name


def test_the_default_world_is_byte_for_byte_what_it_was(tmp_path):
    """A snapshot of a tiny default world's files (meta.json aside: it names the generator's code)."""
    import hashlib
    d = prepare(str(tmp_path), seed=0, pretrain_tokens=20_000, chat_per_bank=20, quiet=True)
    h = hashlib.sha256()
    for f in sorted(os.listdir(d)):
        if f != "meta.json":
            h.update(f.encode())
            h.update(open(os.path.join(d, f), "rb").read())
    assert h.hexdigest() == "be46bcc3a3fadbc8cb15119042371ba441b18b6518549d825926718727f02890"


def test_the_judge_ignores_the_openings():
    from eval import Judge
    judge = Judge()
    assert all(judge.match(s) is None for s in world.OPENINGS)
    assert all(len(s.split()) >= 2 and s.endswith(".") for s in world.OPENINGS)
