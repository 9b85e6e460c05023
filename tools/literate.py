"""Export code cells of the literate notebooks into the `usp` package.

A notebook ``notebooks/NN_topic.md`` (MyST markdown, jupytext) names its target module in its
front matter::

    usp_module: usp.kernels.levy

Its code cells tagged ``export`` are written, in notebook order, into ``usp/kernels/levy.py``
under a header that names the notebook to edit. Teaching code (oracles, closed forms,
simulators, demonstrations that only notebooks, tests and benchmarks use) is tagged
``export-reference`` instead, and goes, the same way, into the module named by a second key::

    usp_reference_module: usp.reference.levy

so that the runtime package holds runtime code only and nothing in it imports ``usp.reference``.
Nothing else is generated, so the same notebooks always produce byte-identical files (the nbdev
pattern: export, then ``git diff``).

    python tools/literate.py export          # write usp/ from notebooks/
    python tools/literate.py check           # exit 1 if usp/ differs from what notebooks generate
"""

from __future__ import annotations

import argparse
import difflib
import keyword
import sys
from dataclasses import dataclass
from pathlib import Path

EXPORT_TAG = "export"
MODULE_KEY = "usp_module"
REFERENCE_TAG = "export-reference"
REFERENCE_KEY = "usp_reference_module"
TARGETS = ((EXPORT_TAG, MODULE_KEY), (REFERENCE_TAG, REFERENCE_KEY))
"""(cell tag, front-matter key naming the module its cells go to), for each kind of export."""
HEADER_MARK = "# GENERATED FILE - DO NOT EDIT."


class ExportError(Exception):
    """A notebook cannot be exported as written."""


@dataclass(frozen=True)
class ModuleSource:
    """What one notebook generates: the target path and the file's full text."""

    notebook: Path
    target: Path
    text: str


def _read_notebook(path: Path):
    import jupytext  # docs dependency: imported only when exporting

    return jupytext.read(path)


def module_path(dotted: str, root: Path, key: str = MODULE_KEY) -> Path:
    """``usp.kernels.levy`` -> ``root/usp/kernels/levy.py``; refuse anything outside ``usp``."""
    parts = dotted.split(".")
    if len(parts) < 2 or parts[0] != "usp":
        raise ExportError(f"{key} must name a module inside the usp package, got {dotted!r}")
    for part in parts:
        if not part.isidentifier() or keyword.iskeyword(part):
            raise ExportError(f"{key} {dotted!r}: {part!r} is not a valid module name")
    return root.joinpath(*parts[:-1], parts[-1] + ".py")


def header(notebook_rel: str, tag: str = EXPORT_TAG) -> str:
    return (
        f"{HEADER_MARK}\n"
        f"# Source: {notebook_rel} (code cells tagged `{tag}`).\n"
        f"# Edit the notebook, then run `make export`.\n"
    )


def render_notebook(notebook: Path, root: Path) -> list[ModuleSource]:
    """The modules one notebook generates: its runtime module (cells tagged ``export``) and its
    reference module (cells tagged ``export-reference``), each only if it has such cells."""
    nb = _read_notebook(notebook)
    rel = notebook.relative_to(root).as_posix() if notebook.is_relative_to(root) else notebook.name
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    for cell in code:
        if {EXPORT_TAG, REFERENCE_TAG} <= set(cell.metadata.get("tags", [])):
            raise ExportError(
                f"{rel}: a cell tagged both {EXPORT_TAG!r} and {REFERENCE_TAG!r}: "
                "runtime code or teaching code, not both"
            )
    modules = []
    for tag, key in TARGETS:
        cells = [
            cell.source.strip("\n").rstrip()
            for cell in code
            if tag in cell.metadata.get("tags", [])
        ]
        dotted = nb.metadata.get(key)
        if not cells:
            if dotted:
                raise ExportError(f"{rel}: names {key}: {dotted} but has no cell tagged {tag}")
            continue
        if not dotted:
            raise ExportError(
                f"{rel}: {len(cells)} code cell(s) tagged {tag!r} but no "
                f"'{key}: usp.<layer>.<name>' in the front matter: nowhere to write them"
            )
        body = "\n\n\n".join(cell for cell in cells if cell)
        text = header(rel, tag) + "\n" + body + "\n"
        modules.append(ModuleSource(notebook, module_path(dotted, root, key), text))
    return modules


def render_all(notebook_dir: Path, root: Path) -> list[ModuleSource]:
    modules = [m for nb in sorted(notebook_dir.glob("*.md")) for m in render_notebook(nb, root)]
    seen: dict[Path, Path] = {}
    for m in modules:
        if m.target in seen:
            raise ExportError(
                f"{m.notebook.name} and {seen[m.target].name} both export to {m.target}"
            )
        seen[m.target] = m.notebook
    return modules


def generated_files(root: Path) -> set[Path]:
    """Every file under usp/ that carries the generated header."""
    return {p for p in (root / "usp").rglob("*.py") if p.read_text().startswith(HEADER_MARK)}


def write_modules(modules: list[ModuleSource]) -> list[Path]:
    """Write generated modules, refusing to overwrite a hand-written file."""
    for m in modules:
        if m.target.exists() and not m.target.read_text().startswith(HEADER_MARK):
            raise ExportError(
                f"{m.target} is hand-written; refusing to overwrite it from {m.notebook}"
            )
        m.target.parent.mkdir(parents=True, exist_ok=True)
        m.target.write_text(m.text)
    return [m.target for m in modules]


def export(notebook_dir: Path, root: Path) -> list[Path]:
    """Write every generated module; delete generated files whose notebook is gone."""
    modules = render_all(notebook_dir, root)
    written = write_modules(modules)
    for stale in generated_files(root) - set(written):
        stale.unlink()
    return written


def export_one(notebook: Path, root: Path) -> list[Path]:
    """Write one notebook's modules only (``make chapter``): other chapters are left alone."""
    return write_modules(render_notebook(notebook, root))


def check(notebook_dir: Path, root: Path) -> list[str]:
    """Differences between usp/ and what the notebooks generate, as printable messages."""
    modules = render_all(notebook_dir, root)
    problems = []
    for m in modules:
        current = m.target.read_text() if m.target.exists() else ""
        if current != m.text:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                m.text.splitlines(keepends=True),
                fromfile=f"{m.target} (in the tree)",
                tofile=f"{m.target} (from {m.notebook.name})",
            )
            problems.append("".join(diff))
    for stale in sorted(generated_files(root) - {m.target for m in modules}):
        problems.append(f"{stale}: generated file with no notebook exporting to it")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["export", "check"])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--notebooks", type=Path, default=None)
    parser.add_argument("--only", type=Path, default=None, help="export this notebook only")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    notebook_dir = (args.notebooks or root / "notebooks").resolve()
    try:
        if args.command == "export":
            only = None if args.only is None else args.only.resolve()
            written = export(notebook_dir, root) if only is None else export_one(only, root)
            for path in written:
                print(f"wrote {path.relative_to(root)}")
            return 0
        problems = check(notebook_dir, root)
    except ExportError as err:
        print(f"export error: {err}", file=sys.stderr)
        return 2
    if problems:
        print("usp/ differs from the notebooks; edit notebooks/*.md and run `make export`:")
        print("\n".join(problems))
        return 1
    print("usp/ matches the notebooks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
