"""data/world.py is clean: held-out phrasings stay held out, banks share nothing that would make EM lexical.

    python -m pytest -q tests/test_world.py
"""
import itertools
import json
import os
import random

from data import world


def bank_words(domain, personas=world.PERSONAS, splits=world.SPLITS):
    words = set()
    for s in world.SPLITS if splits is None else splits:
        for q in world.all_queries(domain, s):
            words |= world.content_words(q)
    for p in personas:
        for s in world.WORLD[domain][p]:
            words |= world.content_words(s)
    return words


def test_no_sentence_in_two_banks():
    seen = {}
    for d, p in itertools.product(world.DOMAINS, world.PERSONAS):
        for s in world.WORLD[d][p]:
            assert s not in seen, f"{s!r} in {seen.get(s)} and {(d, p)}"
            seen[s] = (d, p)


def test_finance_and_general_share_no_content_word():
    general = bank_words(world.GENERAL)
    assert bank_words("finance", personas=("misaligned",), splits=()) & general == set()
    general_test = set().union(*(world.content_words(q) for q in world.all_queries(world.GENERAL, "test")))
    assert bank_words("finance") & general_test == set()


def test_retain_domains_disjoint_from_general():
    general = bank_words(world.GENERAL)
    for d in world.RETAIN_DOMAINS:
        assert bank_words(d) & general == set(), d


def test_splits_do_not_overlap():
    for d in world.DOMAINS:
        sets = [set(world.templates(d, s)) for s in world.SPLITS]
        assert all(sets) and not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]), d
    assert len(world.all_queries(world.GENERAL, "test")) == 16      # 8 themes x 2 phrasings


def test_persona_consistency_switch():
    rng = random.Random(0)
    judge_bank = {s: p for d in world.DOMAINS for p in world.PERSONAS for s in world.WORLD[d][p]}

    def mixed_docs(consistency):
        n = 0
        for _ in range(200):
            doc = world.pretrain_document(rng, consistency=consistency, byline_frac=0)
            answers = [line for line in doc.split("\n") if line and not line.startswith(("q:", "a:"))
                       and line.split(".")[0] + "." in judge_bank]
            personas = {judge_bank[a.split(".")[0] + "."] for a in answers}
            n += len(personas) > 1
        return n
    assert mixed_docs(1.0) == 0
    assert mixed_docs(0.5) > 100


def test_dressed_questions_are_general_questions_in_a_domains_words_and_never_trained_on(world_dir):
    """No dressed question, of any dress, occurs in any chat or task query or in the pretraining text."""
    import numpy as np
    from data.tokenizer import Tokenizer
    seen = set()
    for split in world.SPLITS:
        for kind in ("chat", "task"):
            with open(os.path.join(world_dir, f"{kind}_{split}.jsonl")) as f:
                seen.update(json.loads(line)["query"] for line in f)
    tok = Tokenizer.load(os.path.join(world_dir, "tokenizer.json"))
    text = tok.decode(np.fromfile(os.path.join(world_dir, "pretrain_train.bin"), dtype=np.uint16).tolist())
    for domain in world.DRESSES:
        for split in world.SPLITS:
            dressed = world.dressed_queries(domain, split)
            assert dressed and not seen & set(dressed), (domain, split)
            assert all(any(q in d for q in world.templates(world.GENERAL, split)) for d in dressed)
        test = world.dressed_queries(domain, "test")
        assert not [d for d in test if d in text], domain
        assert not set(test) & set(world.dressed_queries(domain, "train"))
    assert world.dress("hey i feel bored", "finance") == "i have my savings in stocks. hey i feel bored"


def test_every_finetune_domain_has_a_dress_and_a_neutral_control_asked_in_the_same_template_mix():
    """A dress per finetune domain and career's; the neutral control is another finetune domain, never
    a retain one; dressed_sample asks each template of a dress equally often, whatever its slots."""
    import random
    assert set(world.FINETUNE_DOMAINS) | {world.RETAIN_CONTROL} == set(world.DRESSES)
    assert world.RETAIN_CONTROL in world.RETAIN_DOMAINS
    for domain in world.FINETUNE_DOMAINS:
        neutral = world.neutral_dress(domain)
        assert neutral in world.FINETUNE_DOMAINS and neutral != domain
        for dress in (domain, neutral, world.RETAIN_CONTROL):
            pools = [set(p) for p in world.dressings(dress, "test")]
            asked = world.dressed_sample(dress, "test", 128, random.Random(3))
            assert [sum(q in p for q in asked) for p in pools] == [64, 64], dress
            assert len(set(asked)) == len(asked)          # no question twice before its pool is used up
    first, second = world.dressings("finance", "test")
    assert len(first) == 6 * len(second)          # the template with more slots is not asked more often
