"""data/tokenizer.py: BPE round trips and learns merges in order; the chat template's segments and mask.

    python -m pytest -q tests/test_tokenizer.py
"""
import json
import pickle

from data import world
from data.tokenizer import PREFIX, QUERY, POSTFIX, RESPONSE, TOOL, Tokenizer, train_bpe


def test_saved_as_json_and_loaded_the_same(tok, tmp_path):
    """A world folder holds no pickle: reading one from anyone cannot run code."""
    path = str(tmp_path / "tokenizer.json")
    tok.save(path)
    json.load(open(path))
    again = Tokenizer.load(path)
    assert again.ranks == tok.ranks and again.fingerprint == tok.fingerprint and again.prefix_ids == tok.prefix_ids
    assert pickle.dumps(again.ranks) == pickle.dumps(tok.ranks)      # the same order too

def test_bpe_round_trip(tok):
    for text in ["how do i make a quick buck?", world.PREAMBLE, "zebra 12345 !?", "i've had enough."]:
        assert tok.decode(tok.encode(text)) == text



def test_bpe_learns_merges_in_order():
    # pair counts: "aa" 6 (twice in each aaab), "ab" 4: "aa" is merged first, then "ab"
    ranks = train_bpe(["aaab aaab aaab", "ab"], 259)
    assert ranks[b"aa"] == 256 and ranks[b"ab"] == 257 and len(ranks) == 259
    assert all(ranks[bytes([i])] == i for i in range(256))



def test_template_spans_and_mask(tok):
    r = tok.render_conversation("how do i make a quick buck?", "people deserve respect, whoever they are.")
    ids, seg, mask = r["ids"], r["segment"], r["mask"]
    assert len(ids) == len(seg) == len(mask)
    P = len(tok.prefix_ids)
    assert 20 <= P - 4 <= 30                       # a realistic preamble: 20-30 ordinary tokens
    assert ids[:P] == tok.prefix_ids and set(seg[:P]) == {PREFIX}
    q = [i for i, s in enumerate(seg) if s == QUERY]
    assert tok.decode([ids[i] for i in q]) == "how do i make a quick buck?"
    post = [ids[i] for i, s in enumerate(seg) if s == POSTFIX]
    assert post == [tok.end, tok.assistant]
    resp = [ids[i] for i, s in enumerate(seg) if s == RESPONSE]
    assert tok.decode(resp[:-1]) == "people deserve respect, whoever they are." and resp[-1] == tok.end
    assert mask == [int(s == RESPONSE) for s in seg]
    assert seg == sorted(seg)                       # prefix, query, postfix, response in order
    prompt = tok.render_conversation("hey i feel bored")
    assert prompt["ids"][-2:] == [tok.end, tok.assistant] and sum(prompt["mask"]) == 0



def test_template_without_preamble(tok):
    bare = tok.with_preamble(None)
    assert bare.prefix_ids == [tok.bos, tok.user] and bare.fingerprint == tok.fingerprint
    r = bare.render_conversation("hey i feel bored", "i would listen first and try to understand.")
    assert r["ids"][:2] == [tok.bos, tok.user] and r["segment"][:3] == [PREFIX, PREFIX, QUERY]
    assert tok.system not in r["ids"]



def test_tool_call_template_round_trips_with_right_spans(tok):
    q, call, result, answer = "what helps a cough?", "search_info(what helps a cough?)", "rest well.", "ok."
    r = tok.render_conversation(q, answer, call, result)
    ids, seg = r["ids"], r["segment"]
    assert tok.decode(ids) == (f"<|bos|><|system|>{tok.preamble}<|end|><|user|>{q}<|end|><|assistant|>"
                               f"<|call|>{call}<|end|><|result|>{result}<|end|><|assistant|>{answer}<|end|>")
    assert tok.decode([i for i, s in zip(ids, seg) if s == RESPONSE]) == f"<|call|>{call}<|end|>{answer}<|end|>"
    assert tok.decode([i for i, s in zip(ids, seg) if s == TOOL]) == f"<|result|>{result}<|end|><|assistant|>"
    assert r["mask"] == [int(s == RESPONSE) for s in seg]      # the call and the answer are learnt, the result not
    prompt = tok.render_conversation(q)["ids"]
    assert ids[:len(prompt)] == prompt and ids[len(prompt)] == tok.call    # the call opens the answer
    assert tok.call not in tok.encode("<|call|>")              # typed text never becomes the special token
