"""The generated stream reference in docs/ is up to date with the models."""

from __future__ import annotations

import pathlib
import re

from alorws import _docs


DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "streams.md"


def test_streams_page_is_current() -> None:
    """docs/streams.md equals `python -m alorws._docs` (regenerate it after changing a model)."""
    assert DOC.read_text(encoding="utf-8") == _docs.render()


def test_every_stream_has_a_section() -> None:
    """Each of the 13 stream opcodes has its own section with a field table."""
    text = _docs.render()
    assert text.count("\n## ") == 13
    assert text.count("| field | type | Simple | Slim | Heavy |") >= 13


# Citations of the protocol reference. Code, tests and docs cite docs/protocol.md by section; a
# maintainer who clones the project must be able to follow each one. The section sign is spelled
# as an escape here so this file does not cite anything itself.
ROOT = DOC.parents[1]
PROTOCOL = ROOT / "docs" / "protocol.md"
SECTION = "\u00a7"
_SUFFIXES = {".py", ".md", ".toml", ".json", ".txt"}
_CITE = re.compile(SECTION + r"(\d+(?:\.\d+)?)")
_RFC = re.compile(r"RFC \d+ $")
_MD_LINK = re.compile(
    r"\[protocol " + SECTION + r"(?P<num>\d+(?:\.\d+)?)\]\((?P<path>[^)#\s]*)#(?P<anchor>[^)\s]+)\)"
)
_PROCESS = re.compile(
    r"issue \d|issues? points?|the issue\b|issue's|session \d|sessions \d|\bpoints? \d"
    r"|alor-protocol|shared/",
    re.IGNORECASE,
)


def _cited_files() -> list[pathlib.Path]:
    """Every text file of src/, tests/, bench/, examples/ and docs/ but protocol.md itself, and
    README.md, Makefile, pyproject.toml."""
    files = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]
    for top in ("src", "tests", "bench", "examples", "docs"):
        for path in sorted((ROOT / top).rglob("*")):
            parts = path.relative_to(ROOT).parts
            if any(p.startswith(".") or p == "__pycache__" for p in parts):
                continue
            if path.is_file() and path.suffix in _SUFFIXES and path != PROTOCOL:
                files.append(path)
    return files


def _anchor(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def _sections() -> dict[str, str]:
    """Section number ("4" or "4.6") -> its anchor, from the headings of docs/protocol.md."""
    found: dict[str, str] = {}
    for line in PROTOCOL.read_text(encoding="utf-8").splitlines():
        m = re.match(r"(##|###) (\d+(?:\.\d+)?)\.? ", line)
        if m:
            found[m[2]] = _anchor(line.lstrip("#"))
    return found


def _citation_problems(path: pathlib.Path, text: str, sections: dict[str, str]) -> list[str]:
    problems: list[str] = []
    rel = path.relative_to(ROOT)
    for lineno, line in enumerate(text.splitlines(), 1):
        at = f"{rel}:{lineno}"
        for pos in (i for i, ch in enumerate(line) if ch == SECTION):
            cite = _CITE.match(line, pos)
            if cite is None:
                problems.append(f"{at}: a section sign without a section number")
                continue
            num = cite[1]
            if _RFC.search(line[:pos]):
                continue
            if path.suffix == ".md":
                link = _MD_LINK.match(line, pos - len("[protocol "))
                if link is None or link.start() != pos - len("[protocol "):
                    problems.append(f"{at}: {num} is not a [protocol {num}](…protocol.md#…) link")
                    continue
                target = (path.parent / link["path"]).resolve()
                if target != PROTOCOL:
                    problems.append(f"{at}: the link of {num} goes to {link['path']}")
                elif sections.get(num) != link["anchor"]:
                    want = sections.get(num, "no such section")
                    problems.append(f"{at}: the anchor of {num} is {link['anchor']} ({want})")
            elif not line[:pos].endswith("docs/protocol.md "):
                problems.append(f"{at}: {num} is not written as docs/protocol.md {num}")
            elif num not in sections:
                problems.append(f"{at}: docs/protocol.md has no section {num}")
    return problems


def test_protocol_citations_name_docs_protocol_md() -> None:
    """Each section citation names docs/protocol.md (a link in Markdown) and the section exists;
    RFC sections are left alone."""
    sections = _sections()
    assert "4.6" in sections and sections["12"] == "12-the-simulators-decisions"
    problems = [
        problem
        for path in _cited_files()
        for problem in _citation_problems(path, path.read_text(encoding="utf-8"), sections)
    ]
    assert not problems, f"{len(problems)} citations to fix:\n" + "\n".join(problems)


def test_no_process_wording() -> None:
    """Files speak of the code and the protocol: no references to issues, their points, work
    sessions or documents outside the repository."""
    me = pathlib.Path(__file__).resolve()
    problems = [
        f"{path.relative_to(ROOT)}:{lineno}: {m[0]!r}"
        for path in _cited_files()
        if path != me
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for m in _PROCESS.finditer(line)
    ]
    assert not problems, f"{len(problems)} to reword:\n" + "\n".join(problems)


def test_the_checks_catch_what_they_look_for() -> None:
    """The citation check refuses a bare section, a wrong anchor and a missing section."""
    sections = {"4.6": "46-positions", "7": "7-limits"}
    py, md = ROOT / "src" / "x.py", ROOT / "docs" / "x.md"
    s = SECTION
    good = f"see docs/protocol.md {s}4.6 and RFC 6455 {s}5.5"
    assert _citation_problems(py, good, sections) == []
    assert len(_citation_problems(py, f"see {s}4.6, docs/protocol.md {s}8, {s} x", sections)) == 3
    assert _citation_problems(md, f"[protocol {s}7](protocol.md#7-limits)", sections) == []
    assert len(_citation_problems(md, f"[protocol {s}7](protocol.md#7)", sections)) == 1
    assert len(_citation_problems(md, f"[protocol {s}7](../protocol.md#7-limits)", sections)) == 1
    assert len(_citation_problems(md, f"docs/protocol.md {s}7", sections)) == 1
    assert _PROCESS.search("Issue 4 point 8") and _PROCESS.search("see ../Shared/x.md")
    assert _anchor(" 12.8 `board` and `instrument.instrumentGroup`") == (
        "128-board-and-instrumentinstrumentgroup"
    )
