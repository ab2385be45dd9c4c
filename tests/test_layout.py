"""The codebase keeps the shape of a textbook: the reading path never imports the lab, short
functions, a short train.py, help on every flag, and every pointer of the docs lands where it says.

    python -m pytest -q tests/test_layout.py
"""
import ast
import glob
import os
import re

import pytest

import runs
from lab import engine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = sorted(p for p in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True)
                 if "/." not in p[len(ROOT):])
# The book, in the README's reading order, and its appendix; everything else (lab/, reproduce.py,
# exercises/) is the lab or the course.
READING_PATH = ("data/tokenizer.py", "model.py", "treft.py", "baselines.py", "data/batches.py", "train.py",
                "eval.py", "patch.py", "chat.py")
APPENDIX = ("data/world.py", "data/banks.py", "data/prepare.py", "config.py", "runs.py", "checkpoint.py", "lora.py",
            "common.py")
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def imports(path):
    """The top-level module names a file imports."""
    tree = ast.parse(open(path).read())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    return {n.split(".")[0] for n in names}


@pytest.mark.parametrize("path", READING_PATH + APPENDIX)
def test_the_book_never_imports_the_lab_or_the_course(path):
    own = {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, "*.py"))}
    own |= {"data", "lab", "exercises"}
    book = {os.path.splitext(p)[0].split("/")[0] for p in READING_PATH + APPENDIX}
    assert not (imports(os.path.join(ROOT, path)) & own) - book, f"{path} imports the lab or the course"


def lines(path):
    return len(open(os.path.join(ROOT, path)).read().splitlines())


def test_the_readme_gives_the_reading_path_and_its_appendix_with_each_files_length():
    readme = open(os.path.join(ROOT, "README.md")).read()
    rows = dict(re.findall(r"^\| \d+ \| `([\w/.]+)` \| (\d+) \|", readme, re.M))
    assert list(rows) == list(READING_PATH), "the README's reading order is the reading path"
    assert {p: int(n) for p, n in rows.items()} == {p: lines(p) for p in READING_PATH}, "lengths to write"
    appendix = dict(re.findall(r"^\| `([\w/.]+)` \| (\d+) \|", readme, re.M))
    assert {p: int(n) for p, n in appendix.items()} == {p: lines(p) for p in APPENDIX}, "the appendix table"
    before = sum(lines(p) for p in READING_PATH[:READING_PATH.index("treft.py")])
    total = sum(lines(p) for p in READING_PATH)
    assert f"{total} lines in all; the TReFT loss starts after {before} of them" in readme
    assert before <= 800 and total <= 1800, "the TReFT loss in the path's first 800 lines, the path in 1,800"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: os.path.relpath(p, ROOT))
def test_no_function_is_over_60_lines(path):
    tree = ast.parse(open(path).read())
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef) and n.end_lineno - n.lineno + 1 > 60]
    assert not long, long


@pytest.mark.parametrize("name", ["train.py", "README.md"])
def test_train_py_and_the_readme_are_at_most_300_lines(name):
    assert len(open(os.path.join(ROOT, name)).read().splitlines()) <= 300


@pytest.mark.parametrize("parser", [runs.parser, engine.parser], ids=["train.py", "reproduce.py"])
def test_every_flag_has_help(parser):
    missing = [a.dest for a in parser()._actions if not a.help]
    assert not missing, missing


def anchors(page):
    """The places a link may name in a markdown page: <a id> marks and GitHub's heading slugs."""
    text = open(page).read()
    slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}
    return slugs | set(re.findall(r'<a id="([^"]+)"></a>', text))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_line_pointer_of_the_docs_lands_on_what_it_names(page):
    """[`name`](file.py#L12) must point at the line that defines name."""
    text, here = open(page).read(), os.path.dirname(page)
    pointers = re.findall(r"\[`(?:\w+\.)*(\w+)`\]\(([\w/.]+\.py)#L(\d+)\)", text)
    assert pointers or "README" not in page, "the README points at the TReFT loss by line"
    for name, path, line in pointers:
        source = open(os.path.normpath(os.path.join(here, path))).read().splitlines()
        assert re.match(rf"\s*(def|class) {name}\b|\s*{name} = ", source[int(line) - 1]), \
            f"{path} line {line} is not where {name} is defined (it is: {source[int(line) - 1].strip()!r})"


def test_every_cited_section_exists():
    """Every link or mention of a place in a page (the page, a hash, the place), in the docs and in
    the code, names a place that exists."""
    for path in PAGES + SOURCES:
        text = open(path).read()
        for target, anchor in re.findall(r"([\w/.]*\.md)?#([\w-]+)", text):
            if not target:                      # a link inside the same page
                if not (path.endswith(".md") and f"](#{anchor})" in text):
                    continue
                page = path
            else:                               # from the page's folder, or (a mention in code) from the root
                page = os.path.normpath(os.path.join(os.path.dirname(path), target))
                page = page if os.path.exists(page) else os.path.join(ROOT, target)
            assert anchor in anchors(page), f"{os.path.relpath(path, ROOT)} cites {target or 'itself'}#{anchor}, not there"
