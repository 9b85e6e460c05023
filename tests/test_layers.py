"""tools/check_layers.py (run by ``make lint``): the package imports only downwards, and an
import that goes up, sideways or to an unknown unit fails the check, naming its file and line.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "tools" / "check_layers.py"


def run_check(package: Path) -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, str(CHECK), str(package)], capture_output=True, text=True, timeout=120
    )
    assert done.stderr == "", done.stderr
    return done.returncode, done.stdout.strip().splitlines()


def copy_package(tmp_path: Path) -> Path:
    target = tmp_path / "usp"
    shutil.copytree(ROOT / "usp", target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def add_import(package: Path, relative: str, code: str, statement: str) -> tuple[Path, int]:
    """Append ``code`` to ``package/relative``; the file and the line that holds ``statement``."""
    path = package / relative
    text = path.read_text() + code
    path.write_text(text)
    lines = text.splitlines()
    line = max(n for n, row in enumerate(lines, 1) if row.strip() == statement)
    return path, line


def test_the_package_imports_only_downwards():
    code, lines = run_check(ROOT / "usp")
    assert code == 0, "\n".join(lines)
    assert lines[-1].startswith("check_layers: OK"), lines


FUNCTION_IMPORT = "\n\ndef _layer_probe():\n    from usp.api import FunctionalPredictor\n"

BAD_IMPORTS = {
    # an upward import hidden in a function body still counts
    "kernels->api, in a function": (
        "kernels/levy.py",
        FUNCTION_IMPORT,
        "from usp.api import FunctionalPredictor",
        "goes up",
    ),
    "contracts->core, plain import": (
        "contracts/config.py",
        "\nimport usp.core.step\n",
        "import usp.core.step",
        "goes up",
    ),
    "kernels->api, relative": (
        "kernels/dgm.py",
        "\nfrom ..api import x\n",
        "from ..api import x",
        "goes up",
    ),
    "kernels->io, sideways": (
        "kernels/wtmm.py",
        "\nfrom usp.io.data import load_series\n",
        "from usp.io.data import load_series",
        "goes sideways",
    ),
    "io->kernels, sideways relative": (
        "io/data.py",
        "\nfrom .. import kernels\n",
        "from .. import kernels",
        "goes sideways",
    ),
    "eval->reference: the runtime never imports the teaching code": (
        "eval/report.py",
        "\nfrom usp.reference.cusum import siegmund_arl\n",
        "from usp.reference.cusum import siegmund_arl",
        "not allowed",
    ),
    "kernels->facade": (
        "kernels/imex.py",
        "\nfrom usp import Forecast\n",
        "from usp import Forecast",
        "facade",
    ),
}


@pytest.mark.parametrize("case", list(BAD_IMPORTS))
def test_an_import_against_the_order_fails_naming_its_file_and_line(tmp_path, case):
    relative, code, statement, rule = BAD_IMPORTS[case]
    package = copy_package(tmp_path)
    path, line = add_import(package, relative, code, statement)
    status, lines = run_check(package)
    assert status == 1, "\n".join(lines)
    # One line names the new import (whatever else the real package may hold), then the summary.
    offending = [row for row in lines[:-1] if row.startswith(f"{path}:{line}: ")]
    assert len(offending) == 1 and rule in offending[0], lines
    assert lines[-1].startswith("check_layers: ") and "violation(s)" in lines[-1], lines


def test_a_unit_missing_from_the_table_fails(tmp_path):
    package = copy_package(tmp_path)
    (package / "_private.py").write_text('"""A private top-level module nobody placed."""\n')
    status, lines = run_check(package)
    assert status == 1, lines
    assert f"{package / '_private.py'}:1: unknown unit '_private'" in "\n".join(lines), lines
