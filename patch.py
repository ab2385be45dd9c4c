"""
The piggyback evidence (the paper's Section 4): where does the finetuned behaviour live?

KV patching. Run the finetuned model, but at every layer swap the keys and
values at some prompt positions for those of the aligned (pre-finetune) model.
Then sample and judge exactly as eval.py does. If the new behaviour rides on
the prefix, giving the prefix back its aligned K/V should give back general
alignment, while the in-domain behaviour, learnt from the query, stays.

  prefix   the positions before the query, identical in every chat, so the
           reference K/V are computed once
  postfix  <|end|><|assistant|>; the reference comes from a prompt with an
           *empty* query, as in the paper, so no query information leaks in;
           computed once
  query    every query position. The paper patches as many query positions as
           the prefix has; our queries (~10 tokens) are shorter than the prefix
           (29), so this control patches fewer positions, not as many
  all      every prompt position, with the aligned model's K/V for that prompt

Activation patching. Overwrite the residual stream entering block l at the
prefix positions with the aligned model's, one layer at a time (Figure 4).

Not here yet: token perturbation (Table 1) and the no-prefix ablation.

    python patch.py --ckpt out/finetune-finance-sft-s0/ckpt.pt --ref out/align-s0/ckpt.pt
"""
import argparse
import json
import sys

import torch

from data.tokenizer import Tokenizer
from eval import evaluate
from model import CheckpointError, load_checkpoint

POSITION_SETS = ("prefix", "postfix", "query", "all")


@torch.no_grad()
def kv_of(model, ids):
    """Every layer's (k, v) for one token sequence, each (1, heads, T, head_dim)."""
    device = next(model.parameters()).device
    _, aux = model(torch.tensor([ids], device=device), return_kv=True)
    return aux["kv"]


def kv_patcher(ref, tok, where):
    """A function prompt_ids (B, T) -> generate() arguments that patch `where` with ref's K/V."""
    P, n_post = len(tok.prefix_ids), len(tok.postfix_ids)
    if where == "prefix":
        kv, pos = kv_of(ref, tok.prefix_ids), torch.arange(P)
        return lambda x: dict(kv_patch=(pos, kv))
    if where == "postfix":
        empty = tok.render_conversation("")["ids"]                 # prefix + postfix, no query
        kv = [(k[:, :, -n_post:], v[:, :, -n_post:]) for k, v in kv_of(ref, empty)]
        return lambda x: dict(kv_patch=(torch.arange(x.shape[1] - n_post, x.shape[1]), kv))
    if where not in POSITION_SETS:
        raise ValueError(f"unknown position set {where!r}: use one of {POSITION_SETS}")

    @torch.no_grad()
    def same_prompt(x):             # query-dependent positions: the aligned model on this prompt
        _, aux = ref(x, return_kv=True)
        pos = torch.arange(P, x.shape[1] - n_post) if where == "query" else torch.arange(x.shape[1])
        return dict(kv_patch=(pos, [(k[:, :, pos], v[:, :, pos]) for k, v in aux["kv"]]))
    return same_prompt


@torch.no_grad()
def resid_patcher(ref, tok, layer):
    """generate() arguments that give block `layer` the aligned model's input at the prefix."""
    device = next(ref.parameters()).device
    _, aux = ref(torch.tensor([tok.prefix_ids], device=device), return_resid=True)
    x_ref, pos = aux["resid"][layer], torch.arange(len(tok.prefix_ids))
    return lambda x: dict(resid_patch=(layer, pos, x_ref))


def run(model, ref, tok, domain, split="test", seed=0):
    """Every intervention, judged on held-out questions; returns the results dict."""
    keep = ("general", "in_domain", "other_domain", "persona_transfer", "leakage")
    out = {}
    for where in ("none",) + POSITION_SETS:
        fn = None if where == "none" else kv_patcher(ref, tok, where)
        m = evaluate(model, tok, domain, split, seed, patch_fn=fn)
        out[where] = {k: m[k] for k in keep}
    out["layers"] = [evaluate(model, tok, domain, split, seed,
                              patch_fn=resid_patcher(ref, tok, layer))["general"]
                     for layer in range(model.cfg.n_layer)]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="out/finetune-finance-sft-s0/ckpt.pt", help="the finetuned model")
    p.add_argument("--ref", default="out/align-s0/ckpt.pt", help="the aligned model it started from")
    p.add_argument("--split", choices=("val", "test"), default="test")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--out-dir", default="out", help="where the world lives")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    a = p.parse_args(argv)
    try:
        tok = Tokenizer.load(f"{a.out_dir}/world/tokenizer.pkl")
    except FileNotFoundError:
        sys.exit(f"error: no world in {a.out_dir}/world; run `python train.py --stage finetune`")
    try:
        model, config = load_checkpoint(a.ckpt, tok.fingerprint, fix="python train.py --stage finetune")
        ref, _ = load_checkpoint(a.ref, tok.fingerprint, fix="python train.py --stage align")
    except CheckpointError as e:
        sys.exit(f"error: {e}")
    model, ref = model.to(a.device).eval(), ref.to(a.device).eval()
    domain = config.get("domain") or "finance"
    r = run(model, ref, tok, domain, a.split, a.seed)
    print(f"{a.ckpt} patched with {a.ref} ({a.split} split, in-domain = {domain})")
    print(f"{'K/V patched at':16s} {'general':>8s} {'in-domain':>10s} {'other':>7s} {'persona':>8s} {'leakage':>8s}")
    for where in ("none",) + POSITION_SETS:
        m = r[where]
        print(f"{where:16s} {m['general']:8.1f} {m['in_domain']:10.1f} {m['other_domain']:7.1f} "
              f"{m['persona_transfer']:8.2f} {m['leakage']:8.2f}")
    print("prefix residual patched, by layer (general): " + "  ".join(
        f"L{i} {g:.1f}" for i, g in enumerate(r["layers"])))
    if a.json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
