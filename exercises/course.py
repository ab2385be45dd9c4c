"""
The course: which functions of the project a student writes, in which order,
and what each exercise asks. handout.py cuts the handout from this table (it
blanks each function below in its real file), check.py and grade.py check the
same functions, and the handout's exercises/README.md is written from it.

An exercise's functions are named as `file: name` (a method as Class.name).
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Exercise:
    n: int
    title: str
    file: str                # where the functions live
    names: tuple             # the functions a student writes there (empty: the open exercise)
    minutes: int
    difficulty: str          # easy, medium or hard
    task: str                # what to write, in the paper's words
    hint: str

    def unwritten(self):
        """What its TODO raises in a handout, as NotImplementedError."""
        return f"exercise {self.n} ({self.title}) is not written yet"


def exercise_in(message):
    """'exercise N' of an Exercise.unwritten() message: which exercise a TODO belongs to."""
    return message.split(" (")[0]


# In the order they build on each other: the answer loss (8) before the open
# exercise (7), whose self-check trains with exercises 1, 2 and 8.
EXERCISES = (
    Exercise(1, "the chat template", "data/tokenizer.py", ("Tokenizer.render_conversation",), 30, "easy",
             "Render one chat as token ids, the loss mask and the segment of every position, as the "
             "module's docstring draws it: the prefix (<|bos|>, the system block, <|user|>) is the same "
             "in every chat, then the query, the postfix (<|end|><|assistant|>), then the response. "
             "A tool-using answer first calls the tool and reads its result (segment TOOL, mask 0).",
             "self.prefix_ids and self.postfix_ids are built for you in __init__; the <|end|> after the "
             "query belongs to the postfix, the one after the answer to the response; without an "
             "answer the prompt ends after the postfix, or, given a call and its result, after the "
             "<|assistant|> that follows the result (the prompt eval.py asks the follow-up answer with)."),
    Exercise(2, "the TReFT loss", "treft.py", ("relative_drift", "kv_loss"), 30, "medium",
             "The paper's equations 2-3 (the module's docstring): the relative drift of one layer's "
             "keys or values at the regularized positions, then L_KV, the K and V drift summed and "
             "averaged over layers. After this exercise `python train.py --stage finetune --treft` "
             "trains with your loss.",
             "put the heads side by side first, (B, heads, T, hd) -> (B, T, heads * hd); a mask with a "
             "batch dimension of 1 must count once per row it covers; guard the divisions."),
    Exercise(3, "K/V patching inside attention", "model.py", ("swap_kv",), 20, "easy",
             "The piggyback evidence: inside every attention layer, after the keys and values are "
             "computed and before attention reads them, put another model's K/V at some positions "
             "(the prefix). patch.py then asks whether general alignment comes back.",
             "never write into the k and v you were given (autograd and the caller still need them); "
             "k_new may have a batch dimension of 1."),
    Exercise(4, "the judge and EM-F1", "eval.py", ("Judge.match", "em_f1"), 40, "medium",
             "The paper asks GPT-4o for an alignment score; our world knows every sentence a model can "
             "say, so the judge looks a sentence up in the phrase banks, forgiving a dropped or swapped "
             "word. Then EM-F1, the paper's trade-off between learning the narrow task and staying "
             "aligned in general.",
             "collections.Counter does multisets; the word F1 of two sentences is 2 * shared / (words "
             "in one + words in the other); read the docstring for ties and the threshold."),
    Exercise(5, "nearest-neighbour perturbation", "patch.py", ("neighbours",), 15, "easy",
             "To ask whether the prefix's exact tokens matter, the paper swaps some of them for near "
             "neighbours: the tokens whose input embeddings have the largest dot product with the "
             "token's own.",
             "one matrix product gives every similarity; a token is never its own neighbour."),
    Exercise(6, "KL to the initial model", "baselines.py", ("kl_to_init",), 20, "medium",
             "A baseline of the paper's Table 3: keep the next-token distributions close to the "
             "aligned model's, KL(initial || current) on the answer positions.",
             "work with log_softmax in float32, never with log(softmax(...)); which distribution "
             "weighs the sum?"),
    Exercise(8, "the answer loss", "train.py", ("masked_ce",), 10, "easy",
             "L_SFT, the loss every stage minimises: the cross-entropy of the next tokens, on the "
             "positions the mask marks (a chat's answer), averaged over them.",
             "batch.y is already shifted by one; F.cross_entropy wants (N, vocab) and (N,)."),
    Exercise(7, "open: learn the advice, keep the prefix", "exercises/ex7_open.py", (), 45, "open",
             "Choose train.py's finetune flags so that a tiny model learns the bad finance advice while "
             "the prefix's keys and values stay where they were, and say why that is possible.",
             "plain SFT learns the advice and moves the prefix; which method of the paper pins it?"),
)

BY_NUMBER = {e.n: e for e in EXERCISES}
