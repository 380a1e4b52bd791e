"""The documentation holds together: the README stays a front page that starts
with the two commands `.ci/run` and people rely on, and every relative link in
the Markdown files (README, CHANGES, docs/, the examples' and tests' READMEs)
reaches a file that exists and, with an anchor, a heading in that file.

Needs no binary: it only reads files of the repository."""

import re
import sys
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[2]

README_MAX_LINES = 260
TOP_COMMANDS = [
    "bash scripts/install-deps.sh && bash scripts/build.sh && bash scripts/demo.sh",
    "bash scripts/test.sh",
]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
# [text](target) or ![alt](target), target up to whitespace or ')'; an
# optional "title" after it. Not reference-style links (none are used).
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(?:.*?[^`])?\1(?!`)")


def doc_files():
    files = [REPO / "README.md", REPO / "CHANGES.md"]
    files += sorted((REPO / "docs").glob("*.md"))
    files += sorted((REPO / "examples").rglob("*.md"))
    files += sorted((REPO / "tests").glob("*/README.md"))
    return [f for f in files if f.is_file()]


def prose_lines(text):
    """(line number, line) outside fenced code blocks."""
    fence = None
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None:
            if m:
                fence = m.group(1)
                continue
            yield n, line
        elif m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                and not line.strip()[len(m.group(1)):].strip():
            fence = None


def first_fenced_block(text):
    """The lines of the first fenced code block, and the line number of its
    opening fence."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = FENCE.match(line)
        if m:
            body = []
            for inner in lines[i + 1:]:
                if inner.strip().startswith(m.group(1)):
                    return body, i + 1
                body.append(inner)
            return body, i + 1
    return None, None


def slug(heading):
    """GitHub's anchor for a heading: the rendered text in lower case,
    punctuation other than '-' and '_' dropped, each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").lower()
    out = []
    for ch in text:
        if ch in "-_ " or ch.isalnum() or unicodedata.category(ch).startswith("M"):
            out.append("-" if ch == " " else ch)
    return "".join(out)


def anchors(path, _cache={}):
    """Every anchor a Markdown file's headings give, duplicates numbered as
    GitHub numbers them (name, name-1, name-2, ...)."""
    if path not in _cache:
        seen = {}
        found = set()
        for _, line in prose_lines(path.read_text(encoding="utf-8")):
            m = HEADING.match(line)
            if not m:
                continue
            base = slug(m.group(2))
            k = seen.get(base, 0)
            seen[base] = k + 1
            found.add(base if k == 0 else "%s-%d" % (base, k))
        _cache[path] = found
    return _cache[path]


def relative_links(path):
    """(line number, target) of every relative link outside code. Link text
    may wrap onto the next line, so the prose is searched as a whole, with
    code blocks blanked and inline code taken out."""
    text = path.read_text(encoding="utf-8")
    lines = [""] * len(text.splitlines())
    for n, line in prose_lines(text):
        lines[n - 1] = INLINE_CODE.sub("", line)
    prose = "\n".join(lines)
    for m in LINK.finditer(prose):
        target = m.group(1)
        if not target or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) \
                or target.startswith("//"):
            continue  # http:, https:, mailto:, ...
        yield prose.count("\n", 0, m.start()) + 1, target


def broken_links(path):
    """Messages for the links of one file that do not resolve."""
    problems = []
    for n, target in relative_links(path):
        where = "%s:%d: %s" % (path.relative_to(REPO), n, target)
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not dest.exists():
            problems.append("%s: no such file" % where)
            continue
        try:
            dest.relative_to(REPO)
        except ValueError:
            problems.append("%s: outside the repository" % where)
            continue
        if not anchor:
            continue
        if dest.is_dir() or dest.suffix.lower() != ".md":
            problems.append("%s: an anchor into a file that is not Markdown" % where)
        elif unquote(anchor).lower() not in anchors(dest):
            problems.append("%s: no heading gives #%s in %s" % (
                where, anchor, dest.relative_to(REPO)))
    return problems


# -- the README is the front page --

def test_readme_is_short():
    n = len((REPO / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, (
        "README.md has %d lines (at most %d): move details to docs/" % (n, README_MAX_LINES))


def test_readme_starts_with_the_two_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    body, at = first_fenced_block(text)
    assert body is not None, "README.md has no fenced code block"
    assert [l for l in body if l.strip()] == TOP_COMMANDS, (
        "the first code block of README.md must be exactly:\n" + "\n".join(TOP_COMMANDS))
    first_section = next((n for n, l in prose_lines(text) if l.startswith("## ")), None)
    assert first_section is None or at < first_section, (
        "the two commands must come before the first section of README.md")


# -- links --

@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path):
    problems = broken_links(path)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_doc_files_found():
    names = {str(p.relative_to(REPO)) for p in doc_files()}
    for expected in ("README.md", "CHANGES.md", "docs/usage.md", "docs/plugin.md",
                     "docs/design.md", "docs/security.md", "docs/benchmarks.md",
                     "docs/hacking.md", "examples/ci/README.md"):
        assert expected in names


# -- the checker itself, so that a broken link cannot pass unnoticed --

def test_slug_follows_github():
    assert slug("The start hook: `pytest` at the speed of `pytest-zygote run`") == \
        "the-start-hook-pytest-at-the-speed-of-pytest-zygote-run"
    assert slug("Run inputs: before and after (2026-12-06)") == \
        "run-inputs-before-and-after-2026-12-06"
    assert slug("`reload = fresh`") == "reload--fresh"
    assert slug("pytest's own imports") == "pytests-own-imports"
    assert slug("snake_case & more") == "snake_case--more"


def test_checker_finds_broken_links(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(
        "# A\n\n## Same\n\n## Same\n\n```sh\n# not a heading\n[x](nowhere.md)\n```\n")
    doc = tmp_path / "README.md"
    doc.write_text(
        "# T\n\n"
        "[ok](docs/a.md) [ok](docs/a.md#same-1) [ok](#t) [web](https://example.com/x#y)\n"
        "`[code](missing.md)`\n"
        "[gone](docs/missing.md) [bad](docs/a.md#not-a-heading) [self](#nope)\n"
        "[dup](docs/a.md#same-2) [wrapped\nlink](docs/gone.md)\n")
    problems = broken_links(doc)
    assert len(problems) == 5, problems
    assert "docs/missing.md: no such file" in problems[0]
    assert "#not-a-heading" in problems[1]
    assert "#nope" in problems[2]
    assert "#same-2" in problems[3]
    assert "README.md:6: docs/gone.md: no such file" in problems[4]
    assert broken_links(tmp_path / "docs" / "a.md") == []


def test_every_setting_is_documented(zbin):
    """`pytest-zygote settings` lists conf.c's table, the one place settings
    are declared: each variable is in docs/usage.md and in --help, each
    config key in docs/usage.md's configuration table."""
    import subprocess

    out = subprocess.run([zbin, "settings"], capture_output=True, text=True, check=True).stdout
    usage = (REPO / "docs" / "usage.md").read_text()
    helptext = subprocess.run([zbin, "--help"], capture_output=True, text=True).stdout
    rows = [line.split()[:2] for line in out.splitlines()]
    assert len(rows) >= 20, out
    missing = []
    for key, env in rows:
        if env != "-" and env not in usage:
            missing.append("%s not in docs/usage.md" % env)
        if env != "-" and env not in helptext:
            missing.append("%s not in --help" % env)
        if key != "-" and "| `%s` |" % key not in usage:
            missing.append("config key %s not in docs/usage.md's table" % key)
    assert not missing, "\n".join(missing)
