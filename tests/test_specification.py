"""Every citation of the specification resolves to an entry of ``book/specification.md``.

The code, chapters, tests and benchmarks cite the source documents by section (``API §8–10``,
``IG 4.6``, ``implementation guide §4.6``, ``DESIGN §8.1–3, 8.11``, ``spec §12``) and the
requirements by id (``SIA-4``, ``ORCH-5``, ``OPS-1..3``, ``IO-1…IO-4``, ``K-B``). The page gives
each one a MyST label; this test scans the trees with the two patterns below and fails, listing
them, when a citation has no label.

Normal forms and labels:

* ``API §N.M`` and ``spec §N.M`` (the API specification) -> ``spec-api-N-M``;
* ``IG N.M``, ``IG §N.M``, ``guide §N.M``, ``implementation guide §N.M`` -> ``spec-ig-N-M``;
* ``DESIGN §N.M`` -> ``spec-design-N-M``;
* requirement ``ORCH-5`` -> ``req-orch-5``, ``K-A`` -> ``req-k-a``.

A range (``API §8–10``, ``§3–§10``, ``§8.1–3``, ``OPS-1..3``) stands for every id in it, and a
comma list (``API §2.2, §2.3``, ``DESIGN §8.1–3, 8.11``) for each of its items.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "specification.md"
SCANNED_DIRS = ("usp", "notebooks", "tests", "benchmarks", "tools", "data")
SCANNED_FILES = ("README.md", "CONTRIBUTING.md")
SUFFIXES = {".py", ".md", ".mjs", ".json", ".toml", ".yml", ".yaml", ".txt"}
SKIPPED_PARTS = {".venv", "node_modules", "_build", "__pycache__", ".ipynb_checkpoints"}
THIS_FILE = Path(__file__).resolve()  # holds invented citations on purpose

_NUMBER = r"\d+(?:\.\d+)*"
_ITEM = rf"§?\s*{_NUMBER}(?:\s*[–-]\s*§?\s*{_NUMBER})?"
SECTION_PATTERN = re.compile(
    r"(?P<doc>\bAPI|\bIG|\bDESIGN|\bspec(?=\s*§)|\b(?:implementation\s+)?guide(?=\s*§))"
    rf"\s*(?P<refs>{_ITEM}(?:\s*,\s*(?:§\s*)?{_NUMBER}(?:\s*[–-]\s*§?\s*{_NUMBER})?)*)"
)
"""A section citation: a document name, then ``§``-numbers, ranges and comma lists.

``API`` / ``IG`` / ``DESIGN`` may omit the ``§`` (``IG 4.6``, ``API 10.5.2``); ``spec`` and
``guide`` need it, so prose such as "the PNG specification, §5.2" is not a citation. A comma
continues the list only when a number follows (``DESIGN §5, step 2`` cites §5 alone)."""

_GROUPS = "PKG|API|SIA|K|ORCH|IO|OPS|EVAL|X|SVC|AGG"
REQUIREMENT_PATTERN = re.compile(
    rf"\b(?P<group>{_GROUPS})-(?P<first>\d+|[A-D])\b"
    rf"(?:\s*(?:\.\.|…|–)\s*(?:(?P=group)-)?(?P<last>\d+|[A-D])\b)?"
)
"""A requirement id (``ORCH-5``, ``K-B``) or a range of them (``OPS-1..3``, ``IO-1…IO-4``)."""

DOCUMENTS = {"api": "api", "spec": "api", "ig": "ig", "guide": "ig", "design": "design"}

REQUIREMENTS = (
    [f"PKG-{i}" for i in range(1, 8)]
    + [f"API-{i}" for i in range(1, 7)]
    + [f"SIA-{i}" for i in range(1, 5)]
    + [f"K-{b}" for b in "ABCD"]
    + [f"ORCH-{i}" for i in range(1, 11)]
    + [f"IO-{i}" for i in range(1, 5)]
    + [f"OPS-{i}" for i in range(1, 5)]
    + [f"EVAL-{i}" for i in range(1, 4)]
    + [f"X-{i}" for i in range(1, 4)]
    + [f"SVC-{i}" for i in range(1, 7)]
    + [f"AGG-{i}" for i in range(1, 3)]
)
"""Every requirement of the project's requirements list: each must have an entry."""


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.strip().lstrip("§").strip().split(".")]


def _section_range(first: str, last: str | None) -> list[str]:
    """``8`` -> [8]; ``8``-``10`` -> 8, 9, 10; ``8.1``-``3`` -> 8.1, 8.2, 8.3; ``9``-``10.5``
    -> the two ends (no common parent to count in)."""
    start = _numbers(first)
    if last is None:
        return [".".join(map(str, start))]
    end = _numbers(last)
    if len(end) < len(start):  # "8.1–3": the end names only the last component(s)
        end = start[: len(start) - len(end)] + end
    if len(end) == len(start) and end[:-1] == start[:-1] and start[-1] <= end[-1]:
        return [".".join(map(str, start[:-1] + [n])) for n in range(start[-1], end[-1] + 1)]
    return [".".join(map(str, start)), ".".join(map(str, end))]


def _requirement_range(group: str, first: str, last: str | None) -> list[str]:
    if last is None:
        return [f"{group}-{first}"]
    if first.isdigit() and last.isdigit():
        return [f"{group}-{n}" for n in range(int(first), int(last) + 1)]
    return [f"{group}-{chr(c)}" for c in range(ord(first), ord(last) + 1)]


def located_citations(text: str) -> list[tuple[str, str, int]]:
    """Every citation in ``text`` as (label, the text that cited it, its offset), ranges and
    lists expanded; a citation may span a line break (``DESIGN`` at a line's end, ``§5`` next)."""
    found = []
    for match in SECTION_PATTERN.finditer(text):
        doc = DOCUMENTS[match["doc"].split()[-1].lower()]
        for item in match["refs"].split(","):
            ends = re.split(r"\s*[–-]\s*", item.strip())
            for number in _section_range(ends[0], ends[1] if len(ends) > 1 else None):
                label = f"spec-{doc}-{number.replace('.', '-')}"
                found.append((label, match[0], match.start()))
    for match in REQUIREMENT_PATTERN.finditer(text):
        for rid in _requirement_range(match["group"], match["first"], match["last"]):
            found.append((f"req-{rid.lower()}", match[0], match.start()))
    return sorted(found, key=lambda item: item[2])


def citations(text: str) -> list[tuple[str, str]]:
    """(label, the text that cited it) for every citation in ``text``, in order."""
    return [(label, quoted) for label, quoted, _ in located_citations(text)]


def scanned_files() -> list[Path]:
    files = [ROOT / name for name in SCANNED_FILES]
    for directory in SCANNED_DIRS:
        for path in sorted((ROOT / directory).rglob("*")):
            skipped = SKIPPED_PARTS & set(path.relative_to(ROOT).parts)
            if path.suffix in SUFFIXES and path.is_file() and not skipped:
                files.append(path)
    files += sorted((ROOT / "book").glob("*.md"))  # the book last: the page cites itself
    return [path for path in files if path.exists() and path.resolve() != THIS_FILE]


def scan() -> dict[str, list[str]]:
    """label -> where it is cited (``path:line: text``), over every scanned file."""
    cited: dict[str, list[str]] = {}
    for path in scanned_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for label, quoted, offset in located_citations(text):
            line = text.count("\n", 0, offset) + 1
            quoted = " ".join(quoted.split())
            cited.setdefault(label, []).append(f"{path.relative_to(ROOT)}:{line}: {quoted}")
    return cited


def defined_labels(page: str) -> list[str]:
    """MyST targets ``(label)=`` on a line of their own."""
    return re.findall(r"^\(([A-Za-z0-9_.:-]+)\)=[ \t]*$", page, flags=re.MULTILINE)


def unresolved(cited: dict[str, list[str]], labels: set[str]) -> dict[str, list[str]]:
    return {label: where for label, where in sorted(cited.items()) if label not in labels}


@pytest.fixture(scope="module")
def labels() -> set[str]:
    found = defined_labels(PAGE.read_text(encoding="utf-8"))
    duplicates = sorted({label for label in found if found.count(label) > 1})
    assert not duplicates, f"labels defined twice in {PAGE.name}: {duplicates}"
    return set(found)


def test_every_citation_resolves(labels):
    missing = unresolved(scan(), labels)
    report = "\n".join(
        f"  {label} (cited {len(where)} times): " + "; ".join(where[:3])
        for label, where in missing.items()
    )
    assert not missing, f"citations without an entry in book/specification.md:\n{report}"


def test_every_requirement_has_an_entry(labels):
    missing = [rid for rid in REQUIREMENTS if f"req-{rid.lower()}" not in labels]
    assert not missing, f"requirements without an entry in book/specification.md: {missing}"


def test_the_scan_finds_known_citations():
    cited = scan()
    # The grace-period table (chapter 7, tests/test_cusum.py) and the CUSUM requirements.
    assert cited.get("spec-api-10-5-2"), "no citation of API §10.5.2 found"
    assert cited.get("req-orch-5"), "no citation of ORCH-5 found"
    citing = {where.split("/")[0] for places in cited.values() for where in places}
    assert {"usp", "notebooks", "tests"} <= citing, f"citations found only under {citing}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the spec's sketch (API §8–10)", ["spec-api-8", "spec-api-9", "spec-api-10"]),
        ("(API §2.2, §2.3)", ["spec-api-2-2", "spec-api-2-3"]),
        ("API 10.5.2", ["spec-api-10-5-2"]),
        ("API §3–§10", [f"spec-api-{n}" for n in range(3, 11)]),
        ("IG 4.6 and IG §4.6", ["spec-ig-4-6", "spec-ig-4-6"]),
        ("(implementation guide §4.6)", ["spec-ig-4-6"]),
        ("DESIGN §8.1–3, 8.11", [f"spec-design-8-{n}" for n in (1, 2, 3, 11)]),
        ("(DESIGN\n§5, step 2; requirements SIA-1)", ["spec-design-5", "req-sia-1"]),
        ("(DESIGN §8, fault 6)", ["spec-design-8"]),
        ("(spec §9.3)", ["spec-api-9-3"]),
        ("API 9–10.5", ["spec-api-9", "spec-api-10-5"]),
        ("OPS-1..3", ["req-ops-1", "req-ops-2", "req-ops-3"]),
        ("(IO-1…IO-4)", ["req-io-1", "req-io-2", "req-io-3", "req-io-4"]),
        ("REQUIREMENTS K-B, ORCH-8", ["req-k-b", "req-orch-8"]),
        ("the PNG specification, §5.2; Higham 2002, §9.5; MAX-1; API-level", []),
    ],
)
def test_citation_forms(text, expected):
    assert [label for label, _ in citations(text)] == expected


def test_an_invented_citation_is_reported(labels):
    cited = {label: [f"example: {quoted}"] for label, quoted in citations("see API §99, ORCH-99")}
    assert set(unresolved(cited, labels)) == {"spec-api-99", "req-orch-99"}
