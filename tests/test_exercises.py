"""exercises/: every grader passes on the project's own implementation and fails on the untouched stub,
so no grader is vacuous; exercise 7's target is not met by plain SFT.

    python -m pytest -q tests/test_exercises.py
"""
import subprocess
import sys
from types import SimpleNamespace

import pytest

from exercises import grade


@pytest.fixture(scope="module")
def world():
    with grade.tiny_world() as (out, tok):
        yield out, tok


@pytest.mark.parametrize("n", sorted(grade.EXERCISES))
def test_the_reference_passes_and_the_stub_fails(world, n):
    ok, line = grade.grade(n, grade.reference(n), *world)
    assert ok, line
    ok, line = grade.grade(n, grade.student(n), *world)
    assert not ok and line.startswith(f"exercise {n} ("), line


def test_plain_sft_does_not_pass_the_open_exercise(world):
    ok, line = grade.grade(7, SimpleNamespace(FLAGS={}), *world)
    assert not ok and "the prefix moved" in line, line


def test_a_wrong_answer_fails_with_a_line_that_says_what(world):
    def off_by_one(tok, query, answer):
        r = tok.render_conversation(query, answer)
        return dict(r, mask=r["mask"][1:] + [0])
    ok, line = grade.grade(1, SimpleNamespace(render=off_by_one), *world)
    assert not ok and "mask differ" in line, line


def test_grade_py_prints_one_line_per_exercise_and_exits_with_the_failures():
    r = subprocess.run([sys.executable, "exercises/grade.py", "2", "5"], capture_output=True, text=True)
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 2 and all("not done yet" in x for x in lines), r.stdout + r.stderr
