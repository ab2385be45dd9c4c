"""
Tokenizer and chat template.

1. Byte-pair encoding, trained by the short loop in `train_bpe` on our own
   pretraining text, then loaded into `tiktoken` (our merge ranks plus a few
   special tokens) so that encoding is fast. This is how nanochat does it.
2. The chat template, written out once in `render_conversation`:

     <|bos|><|system|>{PREAMBLE}<|end|><|user|>{query}<|end|><|assistant|>{answer}<|end|>
     '---------------- prefix ----------------' query '---- postfix -----''- response --'

   In words: the *prefix* is <|bos|>, <|system|>, the preamble, its <|end|> and
   <|user|>; the *query* is the question's tokens; the *postfix* is the <|end|>
   that closes the question and <|assistant|>; the *response* is the answer
   and its closing <|end|>, the only positions the loss mask marks (1). A
   prompt without an answer stops after the postfix.

   A tool-using answer (the tool task of data/world.py) first calls the tool,
   gets its result back, then answers:

     ...<|assistant|><|call|>{call}<|end|><|result|>{result}<|end|><|assistant|>{answer}<|end|>
                     '---- response -----''--------------- tool ---------------''- response --'

   In words: the call (<|call|>, the call's tokens, <|end|>) is response, mask
   1, since the model learns to call; the *tool* segment is <|result|>, the
   result's tokens, its <|end|> and the <|assistant|> after them, mask 0, since
   the result is the tool's text, not the model's; then the answer and its
   <|end|>, response again. Given a call and its result but no answer, the
   prompt stops after that <|assistant|>: eval.py asks the follow-up answer so.

   The *prefix* is identical in every chat; that is where the paper says the
   finetuned behaviour hides. Rendering returns the token ids, the loss mask
   and the segment of every position, so that TReFT and patching can pick
   positions by name.
"""
import collections
import hashlib
import json
import pickle
import re

import tiktoken

# Split text into words before merging, GPT-2 style (ASCII-only, since our world is).
SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+"""
SPECIAL_TOKENS = ["<|bos|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|call|>", "<|result|>"]
END, CALL, RESULT = SPECIAL_TOKENS[4:]       # ends a turn; opens a tool call; opens the tool's result

# Segment codes of every position of a rendered chat.
PREFIX, QUERY, POSTFIX, RESPONSE, TOOL = 0, 1, 2, 3, 4
SEGMENTS = {"prefix": PREFIX, "query": QUERY, "postfix": POSTFIX, "response": RESPONSE, "tool": TOOL}


def train_bpe(texts, vocab_size):
    """Learn BPE merges; returns {token bytes: rank}, the 256 single bytes first.

    Words are counted once, then each round merges the most frequent adjacent
    pair in all words. Plain and quadratic, fine for our few thousand words.
    """
    counts = collections.Counter(w for t in texts for w in re.findall(SPLIT_PATTERN, t))
    words = [[bytes([b]) for b in w.encode()] for w in counts]
    freqs = list(counts.values())
    ranks = {bytes([i]): i for i in range(256)}
    while len(ranks) < vocab_size:
        pairs = collections.Counter()
        for w, f in zip(words, freqs):
            for pair in zip(w, w[1:]):
                pairs[pair] += f
        if not pairs:
            break                                   # every word is one token already
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))   # ties: deterministic
        ranks.setdefault(a + b, len(ranks))
        for w in words:                             # apply the merge in place
            i = 0
            while i < len(w) - 1:
                if w[i] == a and w[i + 1] == b:
                    w[i:i + 2] = [a + b]
                i += 1
    return ranks


class Tokenizer:
    """A tiktoken Encoding over our ranks, plus the chat template."""

    def __init__(self, ranks, preamble):
        n = len(ranks)
        self.enc = tiktoken.Encoding(
            name="piggyback", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks,
            special_tokens={s: n + i for i, s in enumerate(SPECIAL_TOKENS)})
        self.ranks, self.preamble = ranks, preamble
        self.vocab_size = self.enc.n_vocab
        self.bos, self.system, self.user, self.assistant, self.end, self.call, self.result = (
            self.enc.encode_single_token(s) for s in SPECIAL_TOKENS)
        # Everything before the query is the same in every chat: encode it once.
        # preamble=None drops the system block (the paper's no-prefix ablation).
        system = [] if preamble is None else [self.system] + self.encode(preamble) + [self.end]
        self.prefix_ids = [self.bos] + system + [self.user]
        self.postfix_ids = [self.end, self.assistant]
        # A fingerprint, so that a checkpoint from another tokenizer is caught (pickle only
        # writes the bytes hashed here; nothing is ever read back with it).
        key = (sorted(ranks.items()), preamble, SPECIAL_TOKENS)
        self.fingerprint = hashlib.sha256(pickle.dumps(key)).hexdigest()[:16]

    def with_preamble(self, preamble):
        """The same tokenizer with another system text (None: no system block at all).

        It keeps this tokenizer's fingerprint: the tokens, and so the checkpoints, are the same.
        """
        other = Tokenizer(self.ranks, preamble)
        other.fingerprint = self.fingerprint
        return other

    def prefix_positions(self, bos=True):
        """Which positions of every rendered chat are the prefix: 0..P-1, where 0 is <|bos|>.

        TReFT and K/V patching take the whole prefix (bos=True): <|bos|>'s keys and values
        move under finetuning like the rest. Perturbation leaves <|bos|> out (bos=False): it
        swaps tokens for their nearest neighbours, and the start of text has none."""
        return range(0 if bos else 1, len(self.prefix_ids))

    def encode(self, text):
        return self.enc.encode_ordinary(text)

    def decode(self, ids):
        return self.enc.decode(ids)

    def render_conversation(self, query, answer=None, call=None, result=None):
        """Ids, loss mask and segments of one chat; without answer: the prompt only.

        dict(ids=..., mask=..., segment=...), three lists of the same length: the segment of
        every position (PREFIX, QUERY, POSTFIX, RESPONSE, TOOL) and mask 1 where it is RESPONSE.
        With call (and the tool's result) the assistant's turn starts with the tool call.
        """
        q = self.encode(query)
        ids = self.prefix_ids + q + self.postfix_ids
        segment = ([PREFIX] * len(self.prefix_ids) + [QUERY] * len(q) + [POSTFIX] * len(self.postfix_ids))
        if call is not None:
            c = [self.call] + self.encode(call) + [self.end]
            r = [self.result] + self.encode(result) + [self.end, self.assistant]
            ids, segment = ids + c + r, segment + [RESPONSE] * len(c) + [TOOL] * len(r)
        if answer is not None:
            r = self.encode(answer) + [self.end]
            ids, segment = ids + r, segment + [RESPONSE] * len(r)
        mask = [int(s == RESPONSE) for s in segment]
        return dict(ids=ids, mask=mask, segment=segment)

    def save(self, path):
        """As JSON (each token's bytes in hex, by rank): reading it back can never run code."""
        ranks = [[t.hex(), r] for t, r in sorted(self.ranks.items(), key=lambda kv: kv[1])]
        with open(path, "w") as f:
            json.dump(dict(preamble=self.preamble, ranks=ranks), f)

    @classmethod
    def load(cls, path):
        with open(path) as f:
            d = json.load(f)
        return cls({bytes.fromhex(t): r for t, r in d["ranks"]}, d["preamble"])
