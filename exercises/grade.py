"""
Grade a student's handout: the self-checks the student has, and held-back ones.

    python exercises/grade.py DEST --results results.json   # DEST: the student's handout folder
    python exercises/grade.py . --results results.json      # the project itself: full marks
    python exercises/grade.py --bundle autograder.zip       # Gradescope's autograder, to upload as it is
    python exercises/grade.py DEST --over-handout           # DEST holds only the files the student changed

Run from the project (the master copy, which keeps exercises/heldback.py). For
every exercise it runs check.py's visible checks and heldback.py's corner
cases twice, on the student's code and on the project's own, each in its own
process, and compares the outputs; the student's copy of the checks is never
used. Exercise 7 reads the student's FLAGS as a literal (the file is not run)
and trains them with the project's code. It prints one line per exercise and
the total, writes Gradescope's results.json (a score, max_score, output and
visibility per test; the held-back tests' outputs show after the due date),
and exits 0 when it could grade. It needs no network, GPU or API key: about a
minute on a 2-core CPU.

Gradescope runs an autograder bundle, a zip with `setup.sh` (run once, to build
its image: the project's requirements) and `run_autograder` (run for every
submission: it grades /autograder/submission, laid over a fresh handout, and
writes /autograder/results/results.json). --bundle writes that zip, the master
project (held-back checks and the open exercise's answer included) at its root.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common import check_writable      # noqa: E402
from exercises.check import verdict   # noqa: E402
from exercises.training import grade_open, read_literal   # noqa: E402
from exercises.course import BY_NUMBER, EXERCISES   # noqa: E402
from exercises.handout import project_files, write_handout   # noqa: E402

POINTS = {n: 10 for n in BY_NUMBER} | {7: 20}      # exercise 7's REASON: the teacher's, on top
VISIBLE_SHARE = 0.5                                # the self-checks' share of an exercise's points
THE_GRADERS_OWN = ("exercises/check.py", "exercises/course.py", "exercises/heldback.py", "exercises/training.py",
                   "exercises/expected.json", "exercises/__init__.py")
STUDENT_TIMEOUT = 45                               # seconds for the checks of a process, loops included


def copy_of(dest, scratch):
    """The student's project files in scratch, with the grader's own checks put over theirs."""
    work = os.path.join(scratch, "student")
    shutil.copytree(dest, work, ignore=shutil.ignore_patterns(".git", "out", "__pycache__", "*.pyc"))
    for path in THE_GRADERS_OWN:
        shutil.copy2(os.path.join(ROOT, path), os.path.join(work, path))
    return work


def outputs_of(tree, scratch, exercises):
    """Every check's output, {exercise: {"visible": ..., "heldback": ...}}, on the code of `tree`,
    run in a fresh process there; an exercise whose process failed maps to what went wrong."""
    out = os.path.join(scratch, "outputs.json")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    argv = [sys.executable, "-m", "exercises.heldback", "--json", out, "--exercises", *map(str, exercises)]
    try:
        r = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True, timeout=STUDENT_TIMEOUT)
    except subprocess.TimeoutExpired:
        return dict.fromkeys(exercises, f"the checks took longer than {STUDENT_TIMEOUT}s (a loop that never ends?)")
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no message"])[-1]
        return dict.fromkeys(exercises, f"the project did not run: {last}")
    with open(out) as f:
        return {int(n): v for n, v in json.load(f).items()}


def student_outputs(dest, scratch, exercises):
    """outputs_of the student's code: all exercises in one process, and if that one fails, one
    process an exercise, so that a loop or a crash in one exercise costs no other."""
    work = copy_of(dest, scratch)
    got = outputs_of(work, scratch, exercises)
    if all(isinstance(r, str) for r in got.values()) and len(exercises) > 1:
        got = {}
        for n in exercises:
            got.update(outputs_of(work, scratch, [n]))
    return got


def compare(n, student, reference, part):
    """(passed, one line) for one part ('visible' or 'heldback') of exercise n."""
    if isinstance(student[n], str):                  # the student's code did not run
        return False, student[n]
    want = {name: r["out"] for name, r in reference[n][part].items()}
    ok, why = verdict(n, student[n][part], want)
    return ok, "pass" if ok else why


def reason_of(path):
    """The open exercise's REASON, for the teacher to read (a literal; the file is not run)."""
    try:
        return str(read_literal(path, "REASON") or "").strip()
    except (OSError, SyntaxError, AssertionError):
        return ""


def open_test(path, head, points):
    """The open exercise's test: the student's FLAGS trained with the project's code; REASON for the teacher."""
    ok, why = grade_open(path)
    reason = reason_of(path)
    return dict(name=f"{head}: flags", score=points * ok, max_score=points, visibility="visible",
                output=("pass" if ok else why) + ("\nREASON (for the teacher): " + reason if reason else ""))


def tests_for(dest, exercises, scratch):
    """Gradescope's tests: for each exercise its self-checks and its held-back checks."""
    checked = sorted(n for n in exercises if BY_NUMBER[n].names)
    reference = outputs_of(ROOT, scratch, checked)
    broken = next((r for r in reference.values() if isinstance(r, str)), None)
    if broken:
        sys.exit(f"error: the grader's own project does not run ({broken}): run its tests")
    student = student_outputs(dest, scratch, checked)
    tests = []
    for ex in EXERCISES:
        if ex.n not in exercises:
            continue
        head, points = f"exercise {ex.n} ({ex.title})", POINTS[ex.n]
        if not ex.names:                              # the open exercise: flags, not functions
            tests.append(open_test(os.path.join(dest, ex.file), head, points))
            continue
        for part, label, share, seen in (("visible", "self-checks", VISIBLE_SHARE, "visible"),
                                         ("heldback", "held-back checks", 1 - VISIBLE_SHARE, "after_due_date")):
            ok, why = compare(ex.n, student, reference, part)
            tests.append(dict(name=f"{head}: {label}", score=round(points * share * ok, 2),
                              max_score=round(points * share, 2), visibility=seen, output=why))
    return tests


def summary(ex, tests):
    """One line: the exercise's points, and what each test that lost points says first."""
    lost, said = [], set()
    for t in tests:
        why = t["output"].splitlines()[0]
        if t["score"] < t["max_score"] and why not in said:      # a reason both parts share, once
            lost.append(f"{t['name'].split(': ')[-1]}: {why}")
            said.add(why)
    points = f"{sum(t['score'] for t in tests):g}/{sum(t['max_score'] for t in tests):g}"
    return f"exercise {ex.n} ({ex.title}): {points}" + "".join(f"; {x}" for x in lost)


def looks_like_a_handout(dest):
    return all(os.path.isfile(os.path.join(dest, ex.file)) for ex in EXERCISES)


def over_handout(dest, scratch):
    """A fresh handout with the files of dest laid over it: dest may be the student's whole handout
    or only the files they changed (a zip of one folder counts as that folder)."""
    names = [n for n in os.listdir(dest) if not n.startswith(".")]
    if len(names) == 1 and os.path.isdir(os.path.join(dest, names[0])):
        dest = os.path.join(dest, names[0])
    work = write_handout(ROOT, os.path.join(scratch, "handout"))
    shutil.copytree(dest, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*", "out", "__pycache__", "*.pyc"))
    return work


# ----------------------------------------------------------------------------- Gradescope's bundle

SETUP = """#!/usr/bin/env bash
# Gradescope runs this once, building the autograder's image: the project's requirements (CPU torch).
set -euo pipefail
cd "$(dirname "$0")"
command -v pip3 >/dev/null || (apt-get update && apt-get install -y python3 python3-pip)
python3 -m pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt
"""
RUN = """#!/usr/bin/env bash
# Gradescope runs this for every submission: the student's files laid over a fresh handout, graded
# with this master's checks; results.json where Gradescope reads it. AUTOGRADER and PYTHON may move
# them (a test does): by default /autograder and python3; arguments go on to grade.py.
set -euo pipefail
AUTOGRADER="${AUTOGRADER:-/autograder}"
cd "$AUTOGRADER/source"
mkdir -p "$AUTOGRADER/results"
"${PYTHON:-python3}" exercises/grade.py "$AUTOGRADER/submission" --over-handout \\
    --results "$AUTOGRADER/results/results.json" "$@"
"""
NOT_IN_BUNDLE = (".ci/", "results/", "tests/")      # what grading never reads


def write_bundle(path):
    """Gradescope's autograder zip, whole or not at all: the project at its root, setup.sh and run_autograder."""
    def executable(name):
        info = zipfile.ZipInfo(name)
        info.external_attr = 0o100755 << 16
        return info
    with zipfile.ZipFile(path + ".partial", "w", zipfile.ZIP_DEFLATED) as z:
        for f in project_files(ROOT):
            if not f.startswith(NOT_IN_BUNDLE):
                z.write(os.path.join(ROOT, f), f)
        z.writestr(executable("setup.sh"), SETUP)
        z.writestr(executable("run_autograder"), RUN)
    os.replace(path + ".partial", path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dest", metavar="DEST", nargs="?", help="the student's handout folder (. grades the project itself)")
    p.add_argument("--results", metavar="FILE", help="write Gradescope's results.json here")
    p.add_argument("--over-handout", action="store_true",
                   help="lay DEST's files over a fresh handout first (DEST: only the files the student changed)")
    p.add_argument("--bundle", metavar="ZIP", help="write Gradescope's autograder bundle instead, and stop")
    p.add_argument("--exercises", nargs="+", type=int, metavar="N", help="only these (default: all)")
    args = p.parse_args(argv)
    wanted = set(args.exercises or BY_NUMBER)
    if wanted - set(BY_NUMBER):
        p.error(f"there are exercises {min(BY_NUMBER)} to {max(BY_NUMBER)}, not {sorted(wanted - set(BY_NUMBER))}")
    if args.bundle:
        if args.dest:
            p.error("--bundle writes the autograder and grades nothing: drop DEST")
        check_writable(p, "--bundle", os.path.dirname(os.path.abspath(args.bundle)))
        write_bundle(args.bundle)
        return print(f"wrote {args.bundle}: upload it as the assignment's autograder (Gradescope: zip file upload)")
    if not args.dest:
        p.error("name the student's handout folder (DEST), or --bundle ZIP")
    if args.results:
        check_writable(p, "--results", os.path.dirname(os.path.abspath(args.results)))
    if not os.path.isdir(args.dest):
        sys.exit(f"error: {args.dest} is not a folder: name the student's handout folder")
    if not args.over_handout and not looks_like_a_handout(args.dest):
        sys.exit(f"error: {args.dest} is not a handout of this project (it lacks "
                 f"{', '.join(ex.file for ex in EXERCISES if not os.path.isfile(os.path.join(args.dest, ex.file)))})"
                 f": make one with python exercises/handout.py DEST")
    with tempfile.TemporaryDirectory() as scratch:
        dest = over_handout(args.dest, scratch) if args.over_handout else args.dest
        tests = tests_for(os.path.abspath(dest), wanted, scratch)
    for ex in EXERCISES:
        mine = [t for t in tests if t["name"].startswith(f"exercise {ex.n} (")]
        if mine:
            print(summary(ex, mine))
    score, best = sum(t["score"] for t in tests), sum(t["max_score"] for t in tests)
    print(f"total: {score:g}/{best:g}")
    if args.results:
        with open(args.results + ".tmp", "w") as f:
            json.dump(dict(score=score, output=f"{score:g} of {best:g} points", tests=tests), f, indent=1)
        os.replace(args.results + ".tmp", args.results)
        print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
