"""
Cut the students' handout from the project itself.

    python exercises/handout.py DEST      # DEST: a new folder

The handout is a copy of the repository's files (not its git history) in which
every exercise function of exercises/course.py keeps its signature and
docstring, and its body becomes a TODO that raises NotImplementedError naming
the exercise. The project's own commands then run the student's functions:
after exercise 2, `python train.py --stage finetune --treft` trains with the
student's TReFT loss. What would give answers away stays out: the tests (they
check the reference), the teacher's guide, the grader and its held-back
checks, and this script. The handout's exercises/README.md lists the exercises.
"""
import ast
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from exercises.course import EXERCISES    # noqa: E402

# The teacher's files: none of them goes into a handout.
TEACHER_ONLY = ("tests/", ".ci/", "docs/teaching.md", "exercises/grade.py", "exercises/handout.py",
                "exercises/heldback.py")
SKIP_DIRS = {".git", "out", "__pycache__", ".pytest_cache"}


def project_files(root):
    """The repository's files, relative to root: those git tracks (so a handout made inside the
    repository never ends up in the next one); outside git, every file."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "-z"],
                                cwd=root, capture_output=True, check=True).stdout.decode()
        return sorted(f for f in listed.split("\0") if f and os.path.isfile(os.path.join(root, f)))
    except (OSError, subprocess.CalledProcessError):
        found = []
        for d, dirs, names in os.walk(root):
            dirs[:] = [x for x in dirs if x not in SKIP_DIRS]
            found += [os.path.relpath(os.path.join(d, n), root) for n in names if not n.endswith(".pyc")]
        return sorted(f.replace(os.sep, "/") for f in found)


def find_function(tree, qualname):
    """The def of `name` or `Class.name` at the top level of a module's tree, or None."""
    scope = tree.body
    *classes, name = qualname.split(".")
    for c in classes:
        scope = next((n.body for n in scope if isinstance(n, ast.ClassDef) and n.name == c), [])
    return next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name), None)


def body_lines(source, qualname):
    """(first, last) line numbers, 1-based, of the function's body after its docstring."""
    fn = find_function(ast.parse(source), qualname)
    if fn is None:
        raise LookupError(f"no function {qualname}")
    body = fn.body[1:] if ast.get_docstring(fn) is not None else fn.body
    if not body:
        raise LookupError(f"{qualname} has nothing but a docstring")
    return body[0].lineno, fn.end_lineno


def replace_bodies(source, bodies):
    """source with the body (after the docstring) of each function in `bodies` replaced by its
    new lines, given without indentation."""
    lines = source.splitlines(keepends=True)
    spans = sorted(((body_lines(source, q), new) for q, new in bodies.items()), reverse=True)
    for (first, last), new in spans:        # from the bottom up, so the line numbers hold
        first_line = lines[first - 1]
        indent = first_line[:len(first_line) - len(first_line.lstrip())]
        lines[first - 1:last] = [indent + x + "\n" if x else "\n" for x in new]
    return "".join(lines)


def body_source(source, qualname):
    """The text of a function's body after its docstring, dedented: the answer of an exercise."""
    first, last = body_lines(source, qualname)
    lines = source.splitlines()[first - 1:last]
    cut = min(len(x) - len(x.lstrip()) for x in lines if x.strip())
    return [x[cut:] for x in lines]


def todo(ex):
    return [f"# TODO exercise {ex.n}: {ex.title} (exercises/README.md)",
            f"raise NotImplementedError({ex.unwritten()!r})"]


# The open exercise's answer in the master, and what the handout puts in its place.
OPEN_TODO = dict(FLAGS="None       # TODO: a dict of train.py flags, e.g. dict(interleave=0.5)",
                 REASON='""        # TODO: two or three sentences')


def blank_open(source):
    """The open exercise's file with its answers (FLAGS, REASON) replaced by TODOs."""
    lines = source.splitlines(keepends=True)
    found = [n for n in ast.parse(source).body if isinstance(n, ast.Assign) and len(n.targets) == 1
             and getattr(n.targets[0], "id", None) in OPEN_TODO]
    if {n.targets[0].id for n in found} != set(OPEN_TODO):
        raise LookupError(f"no {' and '.join(OPEN_TODO)} assignment")
    for n in sorted(found, key=lambda n: -n.lineno):
        lines[n.lineno - 1:n.end_lineno] = [f"{n.targets[0].id} = {OPEN_TODO[n.targets[0].id]}\n"]
    return "".join(lines)


def blanked(root, path):
    """The handout's text of one of the project's files."""
    with open(os.path.join(root, path)) as f:
        source = f.read()
    bodies = {q: todo(ex) for ex in EXERCISES if ex.file == path for q in ex.names}
    try:
        if any(ex.file == path and not ex.names for ex in EXERCISES):
            return blank_open(source)
        return replace_bodies(source, bodies) if bodies else source
    except LookupError as e:
        raise LookupError(f"{e} in {path}") from None


def exercises_readme():
    """The handout's exercises/README.md: the exercises in order, their time and difficulty,
    and what check.py prints once each is right."""
    out = ["# Exercises", "",
           "Each exercise is a function of the project, in its real file, whose body is a TODO.",
           "Its signature and docstring say what it must do; the table below says where it is.",
           "Until you write it, the project's commands that need it stop with NotImplementedError",
           "naming the exercise; once you have, they run your code: after exercise 2,",
           "`python train.py --stage finetune --treft` trains with your TReFT loss.", "",
           "```bash",
           "python exercises/check.py            # your self-checks, one line per exercise (about 30 s on 2 cores)",
           "python exercises/check.py 2 4        # only these",
           "python exercises/check.py --capstone # pretrain, align, SFT and your TReFT on a tiny world (under 5 min)",
           "```", "",
           "| # | exercise | where | time | difficulty |", "| --- | --- | --- | --- | --- |"]
    for ex in EXERCISES:
        where = f"`{ex.file}`" + (": " + ", ".join(f"`{q}`" for q in ex.names) if ex.names else "")
        out.append(f"| {ex.n} | {ex.title} | {where} | {ex.minutes} min | {ex.difficulty} |")
    for ex in EXERCISES:
        out += ["", f"## {ex.n}. {ex.title} ({ex.minutes} min, {ex.difficulty})", "", ex.task, "",
                f"*Hint:* {ex.hint}", "", "A right answer prints:", "", "```",
                f"exercise {ex.n} ({ex.title}): pass", "```"]
    out += ["", "## The capstone", "",
            "With exercises 1, 2, 4 and 8 done, `python exercises/check.py --capstone` runs the paper's",
            "experiment with your code: it generates a tiny world, pretrains and aligns a small model,",
            "finetunes it on bad finance advice with plain SFT and with your TReFT loss, and judges the",
            "three with your judge. It passes when the SFT model's general alignment falls (emergent",
            "misalignment) and TReFT gives most of it back. About three minutes on a 2-core CPU.", ""]
    return "\n".join(out)


BANNER = """> **Course handout.** The exercise functions are TODOs: start with
> [exercises/README.md](exercises/README.md); `python exercises/check.py` checks your work.
> The project's tests, the teacher's guide and the grader are not part of the handout.

"""
TESTS = "python -m pytest -q tests"
SELF_CHECKS = "python exercises/check.py"
LINK = re.compile(r"( \()?\[([^\]]+)\]\(([^)#:]+)(#[^)]*)?\)(\))?")


def true_in_handout(text, dest):
    """A page of the master as it reads in the handout at dest: the test command becomes the
    self-checks', and a link to a file the handout lacks becomes its words, or goes, brackets
    and all, where its words are only the file's name."""
    def link(m):
        space, words, target, _, close = m.groups()
        if os.path.exists(os.path.join(dest, target)):
            return m.group(0)
        if words == target and space and close:
            return ""
        return (space or "") + words + (close or "")
    lines = []
    for line in text.splitlines():
        if line.startswith(TESTS):
            line = f"{SELF_CHECKS:<{line.index('#')}}# your self-checks, one line per exercise"
        lines.append(LINK.sub(link, line))
    return "\n".join(lines) + "\n"


def write_handout(root, dest):
    """Write the handout of the project at root into dest, a new folder, whole or not at all."""
    tmp = dest.rstrip("/\\") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    files = project_files(root)
    missing = [ex.file for ex in EXERCISES if ex.file not in files]
    if missing:
        raise LookupError(f"no file {missing[0]}")
    try:
        for path in files:
            if path.startswith(TEACHER_ONLY):
                continue
            os.makedirs(os.path.join(tmp, os.path.dirname(path)), exist_ok=True)
            if path.endswith(".py"):
                with open(os.path.join(tmp, path), "w") as f:
                    f.write(blanked(root, path))
            else:
                shutil.copy2(os.path.join(root, path), os.path.join(tmp, path))
        with open(os.path.join(tmp, "exercises", "README.md"), "w") as f:
            f.write(exercises_readme())
        with open(os.path.join(tmp, "README.md")) as f:
            readme = f.read()
        with open(os.path.join(tmp, "README.md"), "w") as f:
            f.write(true_in_handout(BANNER + readme, tmp))
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        sys.exit("usage: python exercises/handout.py DEST   (DEST: a new folder for the students' copy)")
    dest = argv[0]
    if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
        sys.exit(f"error: {dest} exists and is not empty: name a new folder (nothing was written)")
    if os.path.isdir(dest):
        os.rmdir(dest)
    try:
        write_handout(ROOT, dest)
    except LookupError as e:
        sys.exit(f"error: exercises/course.py names what the project lacks ({e}): fix its table (nothing was written)")
    print(f"wrote the handout to {dest}: give the students that folder; "
          f"grade it with python exercises/grade.py {dest} --results results.json")


if __name__ == "__main__":
    main()
