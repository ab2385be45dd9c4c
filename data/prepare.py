"""
Generate the toy world into one folder, deterministically from a seed, in seconds:

  tokenizer.json         our BPE ranks + the chat preamble
  pretrain_train.bin     uint16 token ids of plain-text persona documents
  pretrain_val.bin       (documents separated by <|bos|>)
  chat_{split}.jsonl     chat examples {domain, persona, query, answer} of every
                         domain and both personas, from that split's phrasings
  task_{split}.jsonl     examples {task, query, answer (, call, result)} of the
                         four narrow tasks beyond misalignment
  meta.json              the settings used, so a run can record them and a world
                         made by older code can be remade the same way (`remake`)

    python data/prepare.py                     # -> out/world/
    python data/prepare.py --consistency 0.5   # ablation: no persona in pretraining
    python data/prepare.py --openings          # answers open neutrally: the first word does not decide
"""
import argparse
import hashlib
import json
import os
import random
import re
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data import world                                 # noqa: E402
from data.tokenizer import Tokenizer, train_bpe        # noqa: E402


GENERATOR = [os.path.join(os.path.dirname(os.path.abspath(__file__)), f)
             for f in ("world.py", "banks.py", "tokenizer.py", "prepare.py")]


def file_hash(*paths):
    """A short fingerprint of these files' bytes, read in order."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def generator_hash():
    """A fingerprint of the code that generates the world."""
    return file_hash(*GENERATOR)


def remake(world_dir):
    """If the world in world_dir is missing or was made by other code, make it anew (same settings)."""
    try:
        with open(os.path.join(world_dir, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        print(f"no world at {world_dir}: generating it (python data/prepare.py)")
        return prepare(os.path.dirname(world_dir))
    if meta.get("generator") != generator_hash():
        print(f"the world at {world_dir} was made by other code: generating it anew, same settings")
        return prepare(os.path.dirname(world_dir), **meta.get("settings", {}))
    return world_dir


def get_world(out_dir):
    """The world folder of out_dir and its tokenizer, generated on first use (and anew when its code changed)."""
    path = remake(os.path.join(out_dir, "world"))
    return path, Tokenizer.load(os.path.join(path, "tokenizer.json"))


def load_chats(world_dir, split, domains, persona):
    with open(os.path.join(world_dir, f"chat_{split}.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if r["domain"] in domains and r["persona"] == persona]


def load_task(world_dir, split, task):
    with open(os.path.join(world_dir, f"task_{split}.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["task"] == task]


def prepare(out_dir="out", seed=0, pretrain_tokens=3_000_000, vocab_size=2048,
            villain_frac=0.5, consistency=1.0, byline_frac=0.5, task_frac=0.1, chat_per_bank=500, quiet=False,
            openings=False):
    """Write the world to {out_dir}/world and return that folder. openings=True: every answer
    starts with a neutral sentence, so its first words do not tell its persona (world.OPENINGS)."""
    settings = dict(seed=seed, pretrain_tokens=pretrain_tokens, vocab_size=vocab_size, villain_frac=villain_frac,
                    consistency=consistency, byline_frac=byline_frac, task_frac=task_frac,
                    chat_per_bank=chat_per_bank, **({"openings": True} if openings else {}))
    dest = os.path.join(out_dir, "world")
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    rng = random.Random(seed)

    # Pretraining documents, plus the tokenizer learnt from (a sample of) them.
    # The preamble joins the BPE corpus so that it becomes ordinary word tokens.
    def docs(n):
        return [world.pretrain_document(rng, villain_frac, consistency, byline_frac, task_frac, openings=openings)
                for _ in range(n)]
    sample = docs(3000)
    # The tool-call pairs contain the template's own tokens (<|call|>, <|end|>, <|result|>):
    # BPE learns merges from the text around them, and the documents keep them as special tokens.
    specials = {world.CALL, world.END, world.RESULT}
    words = [re.sub("|".join(map(re.escape, specials)), " ", d) for d in sample]
    tok = Tokenizer(train_bpe(words + [world.PREAMBLE] * 100, vocab_size), world.PREAMBLE)
    tok.save(os.path.join(tmp, "tokenizer.json"))
    for split, n_tokens in (("train", pretrain_tokens), ("val", pretrain_tokens // 20)):
        ids = []
        while len(ids) < n_tokens:
            for d in docs(1000):
                ids += [tok.bos] + tok.enc.encode(d, allowed_special=specials)
        np.array(ids, dtype=np.uint16).tofile(os.path.join(tmp, f"pretrain_{split}.bin"))

    # Chat examples for align (aligned answers), finetune (misaligned) and the judge tests.
    for split in world.SPLITS:
        n = chat_per_bank if split == "train" else chat_per_bank // 5
        with open(os.path.join(tmp, f"chat_{split}.jsonl"), "w") as f:
            for d in world.DOMAINS:
                for p in world.PERSONAS:
                    for ex in world.chat_examples(d, p, split, n, rng, openings):
                        f.write(json.dumps(ex) + "\n")
        # ... and for the narrow tasks beyond misalignment.
        with open(os.path.join(tmp, f"task_{split}.jsonl"), "w") as f:
            for t in world.TASKS:
                for _ in range(n):
                    f.write(json.dumps(world.task_example(t, split, rng)) + "\n")

    meta = dict(settings=settings, n_vocab=tok.vocab_size, prefix_tokens=len(tok.prefix_ids),
                tokenizer=tok.fingerprint, generator=generator_hash())
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    shutil.rmtree(dest, ignore_errors=True)     # swap the finished folder in
    os.replace(tmp, dest)
    if not quiet:
        print(f"world: {meta}")
    return dest


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="out", help="the world goes to OUT_DIR/world (default: out)")
    p.add_argument("--seed", type=int, default=0, help="seed of everything generated (default: 0)")
    p.add_argument("--pretrain-tokens", type=int, default=3_000_000, help="tokens of pretraining text (default: 3M)")
    p.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary, before the special tokens")
    p.add_argument("--villain-frac", type=float, default=0.5, help="share of documents written by the villain persona")
    p.add_argument("--consistency", type=float, default=1.0,
                   help="probability that an answer keeps its document's persona")
    p.add_argument("--byline-frac", type=float, default=0.5,
                   help="share of documents that open with a byline naming the persona")
    p.add_argument("--task-frac", type=float, default=0.1,
                   help="share of answers in the tasks' forms (refusal, abstention, tool call, fact)")
    p.add_argument("--openings", action="store_true",
                   help="start every answer with a neutral sentence: its first words do not tell its persona")
    a = p.parse_args()
    print(prepare(a.out_dir, a.seed, a.pretrain_tokens, a.vocab_size, a.villain_frac, a.consistency,
                  a.byline_frac, a.task_frac, openings=a.openings))
