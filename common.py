"""
Small helpers every script shares: writing a file whole, the default device,
the CPU's name, and the checks of numeric flags.

Nothing here imports torch at the top, so that lab/report.py (which only reads
summaries) stays free of it.
"""
import argparse
import math
import os
import platform
import tempfile


def atomic_write(path, write, mode="w"):
    """Call write(f) on a temporary file beside `path`, then rename it over `path`.

    A run that dies halfway leaves the old file as it was, never half of a new one.
    `write` may be a string (written as text) or a function of the open file;
    mode "wb" opens it for bytes (a checkpoint).
    """
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    try:
        with open(tmp, mode) as f:
            f.write(write) if isinstance(write, str) else write(f)
        os.replace(tmp, path)
    except BaseException:          # an error or Ctrl-C: no half-written file is left behind
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def cpu_name():
    """The CPU's model name where the system says it (Linux), else its architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.machine()


def default_device():
    """'cuda' where a GPU is visible, else 'cpu'."""
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


# Argument types for argparse: each refuses a bad value with one line.

def nonneg(s):
    v = float(s)
    if v < 0 or not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"lambda must be >= 0, got {s}")
    return v


def fraction(s):
    v = float(s)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"the interleaved share must be in [0, 1), got {s}")
    return v


def count(s):
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s}")
    return v


def nonneg_int(s):
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {s}")
    return v


def positive(s):
    v = float(s)
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {s}")
    return v


def writable(folder):
    """None if files can be written in `folder` (made if missing), else why not, in words."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def check_writable(p, flag, folder):
    """Stop the parser p with one line if the folder a flag names cannot be written."""
    if (why := writable(folder)) is not None:
        p.error(f"cannot write to {flag} {folder} ({why}); pass a folder you can write to")
