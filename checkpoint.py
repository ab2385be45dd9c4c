"""
Checkpoints: weights + model shape + the run's config + tokenizer fingerprint,
nothing else. They are read with torch.load(weights_only=True), which rebuilds
tensors and plain values only, so a checkpoint from anyone cannot run code, and
written whole (common.atomic_write), so a crash never leaves half a file.
"""
import json
import os
import pickle
import warnings
from dataclasses import asdict

import torch

from common import atomic_write
from model import GPT, GPTConfig

def save_checkpoint(path, model, config, tokenizer_fingerprint):
    """Write atomically: a half-written file never replaces a good one. The config is stored
    as JSON would hold it (dicts, lists, strings, numbers), so the safe loader reads it."""
    plain = json.loads(json.dumps(config))
    ckpt = dict(model=model.state_dict(), model_args=asdict(model.cfg), config=plain, tokenizer=tokenizer_fingerprint)
    atomic_write(path, lambda f: torch.save(ckpt, f), mode="wb")


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or does not fit; the message says what to run."""


def read_checkpoint(path, fix):
    """The checkpoint's dict, read safely; CheckpointError if it is not one of ours."""
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}; run `{fix}` to make it")
    try:
        with warnings.catch_warnings():      # a file that is not ours needs no advice on pickle protocols
            warnings.simplefilter("ignore", UserWarning)
            ck = torch.load(path, map_location="cpu", weights_only=True)
        if not (isinstance(ck, dict) and {"model", "model_args", "config"} <= ck.keys()):
            raise KeyError("a key of ours")
        GPTConfig(**ck["model_args"])                  # the shape it claims is a GPT's
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e):      # the safe loader met a Python object to build: code it would run
            raise CheckpointError(f"checkpoint {path} holds Python objects that would run code when loaded: "
                                  f"refused, none of it ran; train your own with `{fix}`") from None
        raise CheckpointError(f"checkpoint {path} is corrupt or not ours (not tensors and plain values); "
                              f"delete it and run `{fix}`") from None
    except Exception as e:  # noqa: BLE001 - any other failure to read means the same thing
        raise CheckpointError(f"checkpoint {path} is corrupt or not ours ({type(e).__name__}); "
                              f"delete it and run `{fix}`") from None
    return ck


def load_checkpoint(path, tokenizer_fingerprint=None, fix="python train.py --stage pretrain", world_dir=None):
    """Returns (model, config). Raises CheckpointError with a one-line explanation.

    With tokenizer_fingerprint, the checkpoint must have been trained in that world
    (the one in world_dir, for the message)."""
    ck = read_checkpoint(path, fix)
    if tokenizer_fingerprint is not None and ck.get("tokenizer") != tokenizer_fingerprint:
        theirs = ck["config"].get("out_dir") if isinstance(ck["config"], dict) else None
        ours = os.path.dirname(os.path.normpath(world_dir)) if world_dir else None
        if theirs and ours is not None and os.path.abspath(theirs) == os.path.abspath(ours):
            hint = f"it was trained in an earlier world of {theirs}: retrain it with `{fix}`"
        else:
            hint = f"pass --out-dir {theirs}, where it was trained" if theirs else "pass the --out-dir it was trained in"
        raise CheckpointError(f"checkpoint {path} was trained in another world (tokenizer {ck.get('tokenizer')}) "
                              f"than {world_dir or 'the current one'} (tokenizer {tokenizer_fingerprint}); {hint}")
    model = GPT(GPTConfig(**ck["model_args"]))
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError:
        raise CheckpointError(f"checkpoint {path} does not fit its model shape; "
                              f"delete it and run `{fix}`") from None
    return model, ck["config"]
