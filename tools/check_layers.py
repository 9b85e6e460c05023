"""Check that the ``usp`` package's units import only downwards (``make lint``).

    python tools/check_layers.py usp       # exit 1 and one line per offending import

The units, bottom to top (``ALLOWED`` below is the whole rule)::

    contracts                config, types, errors, the branch contract, jaxtyping aliases
    kernels, io              contracts only; neither imports the other
    core                     contracts, kernels
    api                      contracts, kernels, io, core
    service, eval            everything below; neither imports the other
    cli                      everything
    reference                contracts, kernels, core; no other unit imports it (the notebooks'
                             oracles and simulators, for tests, benchmarks and notebooks)

A unit is a top-level subpackage (``usp/kernels/``) or module (``usp/cli.py``) of the package.
``usp/__init__.py`` is the facade: its own imports are exempt, and importing it
(``import usp``, ``from usp import Forecast``) counts as importing every unit it imports. A
private top-level module (``usp/_x.py``) is a unit like any other and needs its own row.

Every ``import usp.x`` and ``from usp.x import ...`` counts, relative ones (``from ..api import
x``) too, wherever it stands: inside a function, under ``if TYPE_CHECKING:``, in a ``try``. A
file in a unit that is not in the table fails, and so does an import of one. Imports built from
strings (``importlib.import_module``) are not seen. Standard library only.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

# unit -> the units it may import (besides itself). A unit's layer is one above the highest
# layer it may import, so the table alone fixes the order.
ALLOWED: dict[str, tuple[str, ...]] = {
    "contracts": (),
    "kernels": ("contracts",),
    "io": ("contracts",),
    "core": ("contracts", "kernels"),
    "api": ("contracts", "kernels", "io", "core"),
    "service": ("contracts", "kernels", "io", "core", "api"),
    "eval": ("contracts", "kernels", "io", "core", "api"),
    "cli": ("contracts", "kernels", "io", "core", "api", "service", "eval"),
    # Teaching code generated from the notebooks: a leaf beside the runtime, which never imports it.
    "reference": ("contracts", "kernels", "core"),
}
FACADE = "__init__.py"


def layer(unit: str) -> int:
    """0 for a unit that may import nothing; else one above the highest unit it may import."""
    return 1 + max((layer(u) for u in ALLOWED[unit]), default=-1)


@dataclass(frozen=True)
class Import:
    """One imported ``usp`` module: where the import stands and the module's dotted name."""

    path: Path
    line: int
    module: str


def module_name(package: Path, path: Path) -> tuple[str, bool]:
    """``usp/kernels/levy.py`` -> (``usp.kernels.levy``, False); ``__init__.py`` -> (its package,
    True)."""
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def imports_of(package: Path, path: Path) -> list[Import]:
    """Every module of the package that ``path`` imports, anywhere in the file.

    ``from usp.x import y`` names ``usp.x.y`` (a submodule or an attribute: both live in unit
    ``x``); ``from usp import y`` names ``usp.y``, which is a unit when ``y`` is one and the facade
    otherwise.
    """
    name, is_package = module_name(package, path)
    own_package = name.split(".") if is_package else name.split(".")[:-1]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(path, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level > len(own_package):
                    where = (str(path), node.lineno, node.col_offset + 1, None)
                    raise SyntaxError("relative import beyond the package", where)
                base = own_package[: len(own_package) - node.level + 1]
                prefix = ".".join([*base, *([node.module] if node.module else [])])
            else:
                prefix = node.module or ""
            found += [Import(path, node.lineno, f"{prefix}.{alias.name}") for alias in node.names]
    root = package.name
    return [i for i in found if i.module == root or i.module.startswith(root + ".")]


def unit_of_file(package: Path, path: Path) -> str | None:
    """The unit a file belongs to; None for the facade."""
    first = path.relative_to(package).parts[0]
    return None if first == FACADE else first.removesuffix(".py")


def unit_of_module(package: Path, module: str) -> str | None:
    """The unit a dotted name lives in; None for the facade (``usp``, or ``usp.y`` where ``y``
    is no submodule of the package but a name the facade defines, as in ``from usp import y``).
    """
    parts = module.split(".")
    if len(parts) == 1:
        return None
    first = parts[1]
    if len(parts) > 2 or first in ALLOWED:
        return first
    if (package / first).is_dir() or (package / f"{first}.py").is_file():
        return first
    return None


def check(package: Path) -> tuple[list[str], int, int]:
    """(one message per problem, files read, import edges seen: distinct file, line, unit)."""
    files = sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)
    problems: list[str] = []
    per_file: dict[Path, list[Import]] = {}
    for path in files:
        try:
            per_file[path] = imports_of(package, path)
        except SyntaxError as err:
            problems.append(f"{path}:{err.lineno or 1}: {err}")
    facade = package / FACADE
    # What importing the facade brings in: the units usp/__init__.py imports.
    facade_units = sorted(
        {u for i in per_file.get(facade, []) if (u := unit_of_module(package, i.module))}
    )
    edges: set[tuple[Path, int, str]] = set()  # (file, line, unit imported there)
    for path, found in per_file.items():
        unit = unit_of_file(package, path)
        if unit is None:
            continue  # the facade's own imports are exempt
        if unit not in ALLOWED:
            problems.append(
                f"{path}:1: unknown unit {unit!r}: add it to ALLOWED in {Path(__file__).name}"
            )
            continue
        for imp in found:
            target = unit_of_module(package, imp.module)
            for t in [target] if target is not None else facade_units:
                if (path, imp.line, t) in edges:
                    continue  # one line per import statement and unit
                edges.add((path, imp.line, t))
                if t == unit:
                    continue
                via = "" if target is not None else f" through the facade `{package.name}`"
                where = f"{path}:{imp.line}: {unit} imports {imp.module}{via}"
                if t not in ALLOWED:
                    problems.append(f"{where}: unknown unit {t!r}")
                elif t not in ALLOWED[unit]:
                    problems.append(f"{where}: {rule(unit, t)}")
    return problems, len(files), len(edges)


def rule(unit: str, target: str) -> str:
    """The rule an import of ``target`` from ``unit`` breaks, in words."""
    may = f"only {', '.join(ALLOWED[unit])}" if ALLOWED[unit] else "nothing of the package"
    if layer(target) > layer(unit):
        kind = f"goes up (layer {layer(unit)} -> {layer(target)})"
    elif layer(target) == layer(unit):
        kind = f"goes sideways (both layer {layer(unit)})"
    else:
        kind = f"{target} is below but not allowed"
    return f"{kind}; {unit} may import {may}"


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: check_layers.py [PACKAGE_DIR]  (default: usp)", file=sys.stderr)
        return 2
    package = Path(argv[0] if argv else "usp")
    if not (package / FACADE).is_file():
        print(f"check_layers: {package} is not a package (no {FACADE})", file=sys.stderr)
        return 2
    problems, n_files, n_imports = check(package)
    for line in problems:
        print(line)
    verdict = f"{len(problems)} violation(s)" if problems else "OK"
    print(
        f"check_layers: {verdict}; {n_files} files, {n_imports} imports of {package.name} units, "
        f"{len(ALLOWED)} units known"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
