"""
Exercise 1: the chat template (data/tokenizer.py; the paper's Section 3).

Every chat the models see is one token sequence:

    <|bos|><|system|>{preamble}<|end|><|user|>{query}<|end|><|assistant|>{answer}<|end|>
    '------------- prefix ------------------'  query  '--- postfix ---'  response

The prefix is the same in every chat; that is what the piggyback hypothesis is
about. Write `render`, which turns a query and its answer into

  ids      the token ids, in the order above
  mask     1 where the loss counts (the answer's tokens and its closing <|end|>), else 0
  segment  the segment of every position: PREFIX, QUERY, POSTFIX or RESPONSE

You may use tok.encode(text) (plain text to ids, no special tokens), tok.preamble,
and the special tokens' ids tok.bos, tok.system, tok.user, tok.assistant, tok.end.
Do not call tok.render_conversation or tok.prefix_ids: they are the answer.

    python exercises/grade.py 1
Hint: the <|end|> after the query belongs to the postfix, the one after the answer
to the response; with tok.preamble None there is no system block at all.
"""
from data.tokenizer import POSTFIX, PREFIX, QUERY, RESPONSE   # noqa: F401 - the segment codes you need


def render(tok, query, answer):
    """dict(ids=[...], mask=[...], segment=[...]), three lists of the same length."""
    # TODO: build the prefix (bos, the system block if tok.preamble is not None, user),
    #       then the query, the postfix (end, assistant) and the answer with its end.
    raise NotImplementedError("exercise 1: render the chat template")
