"""common.py: a file written whole or not at all, shared runs, and the checks of numeric flags.

    python -m pytest -q tests/test_common.py
"""
import argparse
import os

import pytest

from common import atomic_write, count, fraction, nonneg, nonneg_int, positive, writable
from lab.studies.study import link


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = str(tmp_path / "a" / "summary.json")
    atomic_write(path, "good")
    with pytest.raises(RuntimeError):
        atomic_write(path, lambda f: (f.write("half"), (_ for _ in ()).throw(RuntimeError("disk full"))))
    assert open(path).read() == "good" and not os.path.exists(path + ".tmp")     # no half file left either
    with pytest.raises(KeyboardInterrupt):                                         # nor on Ctrl-C
        atomic_write(path, lambda f: (f.write("half"), (_ for _ in ()).throw(KeyboardInterrupt())))
    assert open(path).read() == "good" and not os.path.exists(path + ".tmp")
    atomic_write(path, lambda f: f.write(b"bytes"), mode="wb")
    assert open(path, "rb").read() == b"bytes"


def test_link_shares_runs_and_may_be_made_twice(tmp_path):
    (tmp_path / "out" / "align-s0").mkdir(parents=True)
    for _ in range(2):
        link(str(tmp_path / "out"), str(tmp_path / "other"), ["align-s0"])
    assert os.path.islink(tmp_path / "other" / "align-s0")


@pytest.mark.parametrize("check, good, bad", [(nonneg, "0.5", ["-1", "nan", "inf"]),
                                             (fraction, "0.8", ["1", "-0.1"]), (count, "3", ["0", "-2"]),
                                             (positive, "1e-3", ["0", "-1e-3", "nan", "inf"]),
                                             (nonneg_int, "0", ["-1"])])
def test_flag_checks(check, good, bad):
    assert check(good) == float(good)
    for value in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            check(value)


def test_writable_says_why_not(tmp_path):
    assert writable(str(tmp_path / "new" / "out")) is None and (tmp_path / "new" / "out").is_dir()
    (tmp_path / "file").write_text("")
    assert writable(str(tmp_path / "file" / "out")) == "Not a directory"
