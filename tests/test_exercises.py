"""exercises/: the handout holds no answer and fails every check until written; with the
project's bodies pasted back it passes check.py and grade.py in full; every grader fails
every wrong answer of tests/wrong_answers.py; the stored expected outputs are the project's.

    python -m pytest -q tests/test_exercises.py
"""
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from contextlib import ExitStack
from unittest import mock

import pytest

from exercises import check, handout, heldback, training
from exercises.course import BY_NUMBER, EXERCISES
from tests.wrong_answers import RIGHT_FLAGS, WRONG, WRONG_FLAGS

ROOT = handout.ROOT
WRITTEN = [ex for ex in EXERCISES if ex.names]


def run(tree, *argv):
    return subprocess.run([sys.executable, *argv], cwd=tree, capture_output=True, text=True)


# ----------------------------------------------------------------------------- wrong answers fail

@pytest.fixture(scope="module")
def reference():
    return heldback.outputs()


def project_attribute(where):
    """('eval:Judge.match') -> (the object that holds it, its name)."""
    module, path = where.split(":")
    owner, *attrs = [importlib.import_module(module)] + path.split(".")
    for a in attrs[:-1]:
        owner = getattr(owner, a)
    return owner, attrs[-1]


def graded(n, replacements, reference):
    """(self-checks passed, held-back checks passed) for exercise n with these functions in place."""
    with ExitStack() as stack:
        for where, fn in replacements.items():
            stack.enter_context(mock.patch.object(*project_attribute(where), fn))
        got = heldback.outputs([n])[n]
    return tuple(check.verdict(n, got[part], {k: r["out"] for k, r in reference[n][part].items()})[0]
                 for part in ("visible", "heldback"))


@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_wrong_answer_fails_a_self_check_the_student_can_run(name, reference):
    """Every wrong answer here breaks a promise its docstring states in words, so check.py itself
    fails it, not only the grader's held-back checks."""
    n, replacements = WRONG[name]
    visible, _ = graded(n, replacements, reference)
    assert not visible, f"{name} passes every self-check of exercise {n}"


@pytest.mark.parametrize("n", sorted(BY_NUMBER))
def test_every_exercise_has_three_wrong_answers_or_more(n):
    count = len(WRONG_FLAGS) if n == 7 else sum(m == n for m, _ in WRONG.values())
    assert count >= 3, f"exercise {n} has {count} wrong answers in tests/wrong_answers.py"


def test_the_stored_outputs_are_the_projects(reference):
    expected = check.load_expected()
    for n in check.CHECKS:
        ok, why = check.verdict(n, reference[n]["visible"], expected[str(n)])
        assert ok, f"exercise {n}: {why}: rerun python exercises/check.py --record"


def test_wrong_flags_fail_the_open_exercise_and_treft_passes(tmp_path):
    training.tiny_world(str(tmp_path))
    for name, flags in WRONG_FLAGS.items():
        ok, why = training.check_open(flags, str(tmp_path))
        assert not ok and "the prefix moved" in why, f"{name}: {why}"
    ok, why = training.check_open(RIGHT_FLAGS, str(tmp_path))
    assert ok, why


def test_exercise_7_is_read_as_a_literal_and_never_run(tmp_path):
    path = tmp_path / "ex7_open.py"
    for text, flags in (("FLAGS = dict(treft=3.0, treft_on='query')", {"treft": 3.0, "treft_on": "query"}),
                        ("FLAGS = {'interleave': 0.5}", {"interleave": 0.5}), ("FLAGS = None", None), ("", None)):
        path.write_text(text + "\nREASON = 'because'\n")
        assert training.read_literal(str(path), "FLAGS") == flags
    path.write_text("import os\nFLAGS = dict(treft=os.system('exit 1'))\n")
    with pytest.raises(AssertionError, match="written out"):
        training.read_literal(str(path), "FLAGS")
    assert training.check_open({"out_dir": "/"}, str(tmp_path))[1].startswith("FLAGS may hold")


# ----------------------------------------------------------------------------- the handout

@pytest.fixture(scope="module")
def handouts(tmp_path_factory):
    """(the untouched handout, the same with the project's bodies and flags pasted back)."""
    base = tmp_path_factory.mktemp("course")
    blank = handout.write_handout(ROOT, str(base / "handout"))
    filled = str(base / "filled")
    shutil.copytree(blank, filled)
    for ex in WRITTEN:
        with open(os.path.join(ROOT, ex.file)) as f:
            source = f.read()
        with open(os.path.join(filled, ex.file)) as f:
            theirs = f.read()
        with open(os.path.join(filled, ex.file), "w") as f:
            f.write(handout.replace_bodies(theirs, {q: handout.body_source(source, q) for q in ex.names}))
    open_file = os.path.join(filled, BY_NUMBER[7].file)
    with open(open_file) as f:
        text = f.read().replace("FLAGS = None", f"FLAGS = {RIGHT_FLAGS!r}", 1)
    with open(open_file, "w") as f:
        f.write(text)
    return blank, filled


def test_the_handout_holds_no_reference_body(handouts):
    blank, _ = handouts
    texts = {}
    for d, _, names in os.walk(blank):
        for name in names:
            with open(os.path.join(d, name), errors="replace") as f:
                texts[os.path.relpath(os.path.join(d, name), blank)] = f.read()
    assert not [p for p in texts if p.startswith(handout.TEACHER_ONLY)]
    for ex in WRITTEN:
        with open(os.path.join(ROOT, ex.file)) as f:
            source = f.read()
        for q in ex.names:
            assert "NotImplementedError" in "\n".join(handout.body_source(texts[ex.file], q)), f"{q} is not blanked"
            lines = [x.strip() for x in handout.body_source(source, q)]
            telling = [x for x in lines if len(x) >= 16 and not x.startswith("#")]
            assert telling, f"{q}: no line to look for"
            for path, text in texts.items():
                found = [x for x in telling if x in text]
                assert not found, f"{path} holds a line of the answer to {q}: {found[0]}"


def test_the_untouched_handout_fails_every_check(handouts):
    blank, _ = handouts
    r = run(blank, "exercises/check.py")
    lines = r.stdout.strip().splitlines()
    assert r.returncode == len(EXERCISES) and len(lines) == len(EXERCISES), r.stdout + r.stderr
    assert all("not done yet" in x for x in lines), r.stdout


def test_the_handout_with_the_answers_passes_its_self_checks(handouts):
    """Exercise 7's self-check is left to test_wrong_flags_...: its training is the same code, and slow."""
    _, filled = handouts
    written = [str(ex.n) for ex in WRITTEN]
    r = run(filled, "exercises/check.py", *written)
    assert r.returncode == 0 and r.stdout.count(": pass") == len(written), r.stdout + r.stderr


def gradescope(tmp_path, submission, *exercises):
    """Build the autograder bundle, lay it out as Gradescope does (source/, submission/, results/ under
    one root, given as AUTOGRADER) and run its run_autograder; the results.json it writes."""
    root = tmp_path / "autograder"
    r = run(ROOT, "exercises/grade.py", "--bundle", str(tmp_path / "autograder.zip"))
    assert r.returncode == 0 and "upload" in r.stdout, r.stdout + r.stderr
    with zipfile.ZipFile(tmp_path / "autograder.zip") as z:
        z.extractall(root / "source")
        assert {"setup.sh", "run_autograder", "exercises/heldback.py"} <= set(z.namelist())
        assert not [n for n in z.namelist() if n.startswith(("tests/", "results/"))]
    shutil.copytree(submission, root / "submission")
    env = dict(os.environ, AUTOGRADER=str(root), PYTHON=sys.executable)
    r = subprocess.run(["bash", str(root / "source" / "run_autograder"), *exercises], env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads((root / "results" / "results.json").read_text())


def test_the_autograder_bundle_scores_the_untouched_handout_0(handouts, tmp_path):
    graded = gradescope(tmp_path, handouts[0])
    assert graded["score"] == 0 and all(t["score"] == 0 for t in graded["tests"]), graded
    assert {t["visibility"] for t in graded["tests"]} == {"visible", "after_due_date"}
    assert all(set(t) == {"name", "score", "max_score", "output", "visibility"} for t in graded["tests"])


def test_the_autograder_bundle_gives_the_masters_answers_full_marks(tmp_path):
    """Submitted as the changed files only, in a folder: the reference bodies. Exercise 7's flags are
    left to test_wrong_flags_...: the grader trains them with the same code, and slowly."""
    changed = tmp_path / "upload" / "my-handout"
    for ex in WRITTEN:
        os.makedirs(changed / os.path.dirname(ex.file), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, ex.file), changed / ex.file)
    graded = gradescope(tmp_path, tmp_path / "upload", "--exercises", *(str(ex.n) for ex in WRITTEN))
    assert graded["score"] == sum(t["max_score"] for t in graded["tests"]) > 0, graded
    assert len(graded["tests"]) == 2 * len(WRITTEN) and all(t["score"] == t["max_score"] for t in graded["tests"])


def test_the_master_holds_the_open_exercises_answer_and_the_handout_a_todo(handouts):
    assert training.read_literal(os.path.join(ROOT, BY_NUMBER[7].file), "FLAGS") == RIGHT_FLAGS
    reason = training.read_literal(os.path.join(ROOT, BY_NUMBER[7].file), "REASON")
    with open(os.path.join(handouts[0], BY_NUMBER[7].file)) as f:
        theirs = f.read()
    assert "FLAGS = None" in theirs and reason[:40] not in theirs
    assert training.read_literal(os.path.join(handouts[0], BY_NUMBER[7].file), "FLAGS") is None


def test_the_handouts_pages_name_only_what_the_handout_holds(handouts):
    """No command in its README or exercises/README.md runs a file, and no link points to one, that
    the handout lacks."""
    blank, _ = handouts
    for page in ("README.md", "exercises/README.md"):
        with open(os.path.join(blank, page)) as f:
            text = f.read()
        commands = [x.strip() for x in text.splitlines() if x.strip().startswith("python ")]
        assert commands, page
        for c in commands:
            words = c.split("#")[0].split()
            if words[1] == "-m":       # a module: pytest needs the tests, any other its file
                needs = "tests" if words[2] == "pytest" else words[2].replace(".", "/") + ".py"
            else:
                needs = words[1]
            assert os.path.exists(os.path.join(blank, needs)), f"{page}: `{c}` needs {needs}"
        for target in re.findall(r"\]\(([^)#:]+)", text):
            assert os.path.exists(os.path.join(blank, os.path.dirname(page), target)), f"{page} links {target}"
    assert "python exercises/check.py" in open(os.path.join(blank, "README.md")).read().split("```")[1]


def test_grade_py_refuses_a_folder_that_is_not_a_handout(tmp_path):
    r = run(ROOT, "exercises/grade.py", str(tmp_path), "--results", str(tmp_path / "r.json"))
    assert r.returncode != 0 and r.stderr.startswith("error:") and "handout.py" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.json").exists()


def test_grade_py_refuses_a_results_file_it_cannot_write(handouts, tmp_path):
    blank, _ = handouts
    (tmp_path / "file").write_text("")
    r = run(ROOT, "exercises/grade.py", blank, "--results", str(tmp_path / "file" / "results.json"))
    assert r.returncode == 2 and "cannot write to --results" in r.stderr and not r.stdout, r.stdout + r.stderr


def test_handout_py_never_writes_over_a_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    r = run(ROOT, "exercises/handout.py", str(tmp_path))
    assert r.returncode != 0 and "not empty" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == ["keep.txt"]
