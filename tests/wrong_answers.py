"""
Plausible wrong answers to the exercises, written the way a student might slip:
a wrong reduction, a missing normalization, a wrong sign or direction, an
off-by-one position, a case of the specification left out. test_exercises.py
puts each in place of the project's function and checks that the grader fails
it. They are the teacher's, kept here and never in a handout.
"""
import collections

import torch
from torch.nn import functional as F

from data.tokenizer import POSTFIX, PREFIX, QUERY, RESPONSE, TOOL


# ----------------------------------------------------------------------------- 1: the chat template

def render(tok, query, answer, call, result, *, end_in_mask=True, query_end="postfix", system_always=False,
           tool_segment=TOOL, tool_masked=False):
    """A from-scratch template with one knob per slip."""
    system = [tok.system] + tok.encode(tok.preamble or "") + [tok.end] if system_always or tok.preamble is not None else []
    prefix = [tok.bos] + system + [tok.user]
    q = tok.encode(query)
    ids = prefix + q + [tok.end, tok.assistant]
    seg = [PREFIX] * len(prefix) + [QUERY] * len(q) + [QUERY if query_end == "query" else POSTFIX, POSTFIX]
    mask = [0] * len(ids)
    if call is not None:
        c, r = [tok.call] + tok.encode(call) + [tok.end], [tok.result] + tok.encode(result) + [tok.end, tok.assistant]
        ids, seg = ids + c + r, seg + [RESPONSE] * len(c) + [tool_segment] * len(r)
        mask += [1] * len(c) + [int(tool_masked)] * len(r)
    if answer is not None:
        a = tok.encode(answer)
        ids, seg, mask = ids + a + [tok.end], seg + [RESPONSE] * (len(a) + 1), mask + [1] * len(a) + [int(end_in_mask)]
    return dict(ids=ids, mask=mask, segment=seg)


def template(**slip):
    return lambda self, query, answer=None, call=None, result=None: render(self, query, answer, call, result, **slip)


# ----------------------------------------------------------------------------- 2: the TReFT loss

def side_by_side(x):
    return x.transpose(1, 2).flatten(2)


def drift_absolute(x, x_init, mask):
    """Forgets to divide by ||x_init||^2."""
    r = (side_by_side(x) - side_by_side(x_init)).pow(2).sum(-1)
    m = mask.float().expand_as(r)
    return (r * m).sum() / m.sum().clamp_min(1)


def drift_mean_over_all_positions(x, x_init, mask):
    """Divides by every position, not by the masked ones."""
    x, x0 = side_by_side(x), side_by_side(x_init)
    r = (x - x0).pow(2).sum(-1) / x0.pow(2).sum(-1).clamp_min(1e-8)
    return (r * mask.float()).sum() / r.numel()


def drift_per_head(x, x_init, mask):
    """Normalizes each head by its own norm, then averages the heads."""
    r = ((x - x_init).pow(2).sum(-1) / x_init.pow(2).sum(-1).clamp_min(1e-8)).mean(1)    # (B, T)
    m = mask.float().expand_as(r)
    return (r * m).sum() / m.sum().clamp_min(1)


def drift_mask_not_broadcast(x, x_init, mask):
    """Counts a batch-1 mask's positions once, though it covers every row."""
    x, x0 = side_by_side(x), side_by_side(x_init)
    r = (x - x0).pow(2).sum(-1) / x0.pow(2).sum(-1).clamp_min(1e-8)
    return (r * mask.float()).sum() / mask.float().sum().clamp_min(1)


def drift_divides_by_the_new_norm(x, x_init, mask):
    """Divides by ||x||^2, the moving vector's norm, instead of the initial one."""
    x, x0 = side_by_side(x), side_by_side(x_init)
    r = (x - x0).pow(2).sum(-1) / x.pow(2).sum(-1).clamp_min(1e-8)
    m = mask.float().expand_as(r)
    return (r * m).sum() / m.sum().clamp_min(1)


def kv_loss_sums_layers(kv, kv_init, mask):
    import treft
    return sum(treft.relative_drift(k, k0, mask) + treft.relative_drift(v, v0, mask) for (k, v), (k0, v0) in zip(kv, kv_init))


def kv_loss_keys_only(kv, kv_init, mask):
    import treft
    return sum(2 * treft.relative_drift(k, k0, mask) for (k, _), (k0, _) in zip(kv, kv_init)) / len(kv)


def kv_loss_halves_k_and_v(kv, kv_init, mask):
    import treft
    return sum((treft.relative_drift(k, k0, mask) + treft.relative_drift(v, v0, mask)) / 2
               for (k, v), (k0, v0) in zip(kv, kv_init)) / len(kv)


# ----------------------------------------------------------------------------- 3: K/V patching

def swap_in_place(k, v, pos, k_new, v_new):
    k[:, :, pos], v[:, :, pos] = k_new, v_new
    return k, v


def swap_crossed(k, v, pos, k_new, v_new):
    k, v = k.clone(), v.clone()
    k[:, :, pos], v[:, :, pos] = v_new, k_new
    return k, v


def swap_keys_only(k, v, pos, k_new, v_new):
    k = k.clone()
    k[:, :, pos] = k_new
    return k, v.clone()


def swap_a_slice(k, v, pos, k_new, v_new):
    """pos[0]:pos[-1] leaves out the last position, and fills the gaps."""
    k, v, lo, hi = k.clone(), v.clone(), int(pos[0]), int(pos[-1])
    k[:, :, lo:hi], v[:, :, lo:hi] = k_new[:, :, :hi - lo], v_new[:, :, :hi - lo]
    return k, v


def swap_detached(k, v, pos, k_new, v_new):
    k, v = k.detach().clone(), v.detach().clone()
    k[:, :, pos], v[:, :, pos] = k_new.detach(), v_new.detach()
    return k, v


# ----------------------------------------------------------------------------- 4: the judge and EM-F1

def matcher(*, counts=collections.Counter, strict=False, last_on_tie=False, exact_always=False,
            threshold=None, score="f1"):
    """A from-scratch Judge.match with one knob per slip."""
    def match(self, sentence):
        if sentence in self.bank:
            return (*self.bank[sentence], True)
        words, best, best_f1 = counts(sentence.split()), None, 0.0
        for s, label in self.bank.items():
            ref = counts(s.split())
            common = len(words & ref) if isinstance(words, set) else sum((words & ref).values())
            n_words, n_ref = len(words) if isinstance(words, set) else sum(words.values()), \
                len(ref) if isinstance(ref, set) else sum(ref.values())
            f1 = common / n_words if score == "precision" else 2 * common / (n_words + n_ref)
            if f1 > best_f1 or (last_on_tie and f1 == best_f1 and f1 > 0):
                best, best_f1 = label, f1
        cut = self.min_overlap if threshold is None else threshold
        ok = best_f1 > cut if strict else best_f1 >= cut
        return (*best, exact_always) if ok else None
    return match


def em_f1_no_complement(in_domain, general):
    return 2 * in_domain * general / (in_domain + general) if in_domain + general else 0.0


def em_f1_without_the_2(in_domain, general):
    a = 100.0 - in_domain
    return a * general / (a + general) if a + general else 0.0


def em_f1_unguarded(in_domain, general):
    a = 100.0 - in_domain
    return 2 * a * general / (a + general)


def em_f1_arithmetic_mean(in_domain, general):
    return (100.0 - in_domain + general) / 2


# ----------------------------------------------------------------------------- 5: neighbours

def neighbours_with_itself(E, n, k=5):
    return (E @ E[:n].T).topk(k, dim=1).indices.tolist()


def neighbours_by_cosine(E, n, k=5):
    En = F.normalize(E, dim=1)
    sim = En @ En[:n].T
    sim[torch.arange(n), torch.arange(n)] = float("-inf")
    return sim.topk(k, dim=1).indices.tolist()


def neighbours_among_every_token(E, n, k=5):
    sim = E @ E.T
    sim.fill_diagonal_(float("-inf"))
    return sim.topk(k, dim=1).indices.tolist()


def neighbours_farthest(E, n, k=5):
    sim = E @ E[:n].T
    sim[torch.arange(n), torch.arange(n)] = float("inf")
    return sim.topk(k, dim=1, largest=False).indices.tolist()


# ----------------------------------------------------------------------------- 6: KL to the initial model

def kl_reversed(logits, init_logits, mask):
    logp, logq = F.log_softmax(init_logits.float(), -1), F.log_softmax(logits.float(), -1)
    kl = (logq.exp() * (logq - logp)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp_min(1)


def kl_mean_over_all_positions(logits, init_logits, mask):
    logp, logq = F.log_softmax(init_logits.float(), -1), F.log_softmax(logits.float(), -1)
    return ((logp.exp() * (logp - logq)).sum(-1) * mask).mean()


def kl_log_of_softmax(logits, init_logits, mask):
    p, q = F.softmax(init_logits.float(), -1), F.softmax(logits.float(), -1)
    kl = (p * (p.log() - q.log())).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp_min(1)


def kl_mean_over_the_vocabulary(logits, init_logits, mask):
    logp, logq = F.log_softmax(init_logits.float(), -1), F.log_softmax(logits.float(), -1)
    kl = (logp.exp() * (logp - logq)).mean(-1)
    return (kl * mask).sum() / mask.sum().clamp_min(1)


def kl_unguarded(logits, init_logits, mask):
    logp, logq = F.log_softmax(init_logits.float(), -1), F.log_softmax(logits.float(), -1)
    return ((logp.exp() * (logp - logq)).sum(-1) * mask).sum() / mask.sum()


# ----------------------------------------------------------------------------- 8: the answer loss

def ce_every_position(logits, targets, mask):
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


def ce_summed(logits, targets, mask):
    return (F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none") * mask.flatten()).sum()


def ce_mean_of_row_means(logits, targets, mask):
    ce = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")      # (B, T)
    return ((ce * mask).sum(1) / mask.sum(1).clamp_min(1)).mean()


def ce_shifted_again(logits, targets, mask):
    ce = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets[:, 1:].flatten(), reduction="none")
    m = mask[:, 1:].flatten()
    return (ce * m).sum() / m.sum().clamp_min(1)


def ce_log_of_softmax(logits, targets, mask):
    logp = F.softmax(logits.float(), -1).log()
    ce = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (ce * mask).sum() / mask.sum().clamp_min(1)


# ----------------------------------------------------------------------------- the table

# (exercise, the project attribute each replaces, the wrong function)
TOKENIZER, JUDGE = "data.tokenizer:Tokenizer.render_conversation", "eval:Judge.match"
WRONG = {
    "template: the answer's <|end|> left out of the mask": (1, {TOKENIZER: template(end_in_mask=False)}),
    "template: the query's <|end|> in the query segment": (1, {TOKENIZER: template(query_end="query")}),
    "template: an empty system block without a preamble": (1, {TOKENIZER: template(system_always=True)}),
    "template: the tool's result learnt": (1, {TOKENIZER: template(tool_masked=True)}),
    "template: the tool's result as response": (1, {TOKENIZER: template(tool_segment=RESPONSE)}),
    "drift: not relative": (2, {"treft:relative_drift": drift_absolute}),
    "drift: mean over every position": (2, {"treft:relative_drift": drift_mean_over_all_positions}),
    "drift: a norm per head": (2, {"treft:relative_drift": drift_per_head}),
    "drift: a batch-1 mask counted once": (2, {"treft:relative_drift": drift_mask_not_broadcast}),
    "drift: divided by the new norm": (2, {"treft:relative_drift": drift_divides_by_the_new_norm}),
    "kv_loss: layers summed": (2, {"treft:kv_loss": kv_loss_sums_layers}),
    "kv_loss: keys only": (2, {"treft:kv_loss": kv_loss_keys_only}),
    "kv_loss: K and V averaged": (2, {"treft:kv_loss": kv_loss_halves_k_and_v}),
    "swap: in place": (3, {"model:swap_kv": swap_in_place}),
    "swap: K and V crossed": (3, {"model:swap_kv": swap_crossed}),
    "swap: keys only": (3, {"model:swap_kv": swap_keys_only}),
    "swap: a slice instead of the positions": (3, {"model:swap_kv": swap_a_slice}),
    "swap: no gradient": (3, {"model:swap_kv": swap_detached}),
    "judge: words as a set": (4, {JUDGE: matcher(counts=set)}),
    "judge: F1 above the threshold only": (4, {JUDGE: matcher(strict=True)}),
    "judge: the last on a tie": (4, {JUDGE: matcher(last_on_tie=True)}),
    "judge: a near match called exact": (4, {JUDGE: matcher(exact_always=True)}),
    "judge: 0.6 written in": (4, {JUDGE: matcher(threshold=0.6)}),
    "judge: precision instead of F1": (4, {JUDGE: matcher(score="precision")}),
    "em_f1: in-domain alignment, not its complement": (4, {"eval:em_f1": em_f1_no_complement}),
    "em_f1: without the 2": (4, {"eval:em_f1": em_f1_without_the_2}),
    "em_f1: no guard for 0": (4, {"eval:em_f1": em_f1_unguarded}),
    "em_f1: the arithmetic mean": (4, {"eval:em_f1": em_f1_arithmetic_mean}),
    "neighbours: itself included": (5, {"patch:neighbours": neighbours_with_itself}),
    "neighbours: by cosine": (5, {"patch:neighbours": neighbours_by_cosine}),
    "neighbours: special tokens too": (5, {"patch:neighbours": neighbours_among_every_token}),
    "neighbours: the farthest": (5, {"patch:neighbours": neighbours_farthest}),
    "kl: reversed": (6, {"baselines:kl_to_init": kl_reversed}),
    "kl: mean over every position": (6, {"baselines:kl_to_init": kl_mean_over_all_positions}),
    "kl: log of softmax": (6, {"baselines:kl_to_init": kl_log_of_softmax}),
    "kl: mean over the vocabulary": (6, {"baselines:kl_to_init": kl_mean_over_the_vocabulary}),
    "kl: no guard for an empty mask": (6, {"baselines:kl_to_init": kl_unguarded}),
    "answer loss: every position": (8, {"train:masked_ce": ce_every_position}),
    "answer loss: summed": (8, {"train:masked_ce": ce_summed}),
    "answer loss: mean of row means": (8, {"train:masked_ce": ce_mean_of_row_means}),
    "answer loss: shifted twice": (8, {"train:masked_ce": ce_shifted_again}),
    "answer loss: log of softmax": (8, {"train:masked_ce": ce_log_of_softmax}),
}

# Exercise 7: finetune flags that learn the advice but move the prefix, and one answer that works.
WRONG_FLAGS = {"plain SFT": {}, "interleaving": {"interleave": 0.8}, "weight anchoring": {"l2_init": 0.3}}
RIGHT_FLAGS = {"treft": 100.0}
