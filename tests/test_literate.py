"""The notebook -> package exporter (tools/literate.py)."""

import ast
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import literate  # noqa: E402

FRONT = textwrap.dedent(
    """\
    ---
    jupytext:
      text_representation: {{extension: .md, format_name: myst}}
    kernelspec: {{display_name: Python 3, language: python, name: python3}}
    {module}{reference}---
    """
)


def cell(source: str, tags: str = "") -> str:
    meta = f":tags: [{tags}]\n" if tags else ""
    return f"```{{code-cell}} ipython3\n{meta}{source}\n```\n\n"


def notebook(
    tmp: Path,
    name: str,
    body: str,
    module: str | None = "usp.kernels.demo",
    reference: str | None = None,
) -> Path:
    (tmp / "notebooks").mkdir(exist_ok=True)
    (tmp / "usp" / "kernels").mkdir(parents=True, exist_ok=True)
    front = FRONT.format(
        module=f"usp_module: {module}\n" if module else "",
        reference=f"usp_reference_module: {reference}\n" if reference else "",
    )
    path = tmp / "notebooks" / name
    path.write_text(front + "\n# Title\n\n" + body)
    return path


def export(tmp: Path) -> list[Path]:
    return literate.export(tmp / "notebooks", tmp)


def test_only_export_tagged_cells_in_order_with_header(tmp_path):
    notebook(
        tmp_path,
        "01_demo.md",
        cell("A = 1", "export")
        + cell("print('not exported')")
        + "Some prose.\n\n"
        + cell("B = 2", "export, slow")
        + cell("C = 3", "other"),
    )
    (written,) = export(tmp_path)
    assert written == tmp_path / "usp" / "kernels" / "demo.py"
    text = written.read_text()
    assert text.startswith(literate.HEADER_MARK)
    assert "notebooks/01_demo.md" in text.splitlines()[1]
    body = text.split("\n\n", 1)[1]
    assert body == "A = 1\n\n\nB = 2\n"


def test_export_only_writes_one_notebook_and_leaves_the_rest(tmp_path):
    """``make chapter``: one notebook's module is written; another's is neither written nor
    deleted, even when stale."""
    one = notebook(tmp_path, "01_one.md", cell("A = 1", "export"), module="usp.kernels.one")
    notebook(tmp_path, "02_two.md", cell("B = 2", "export"), module="usp.kernels.two")
    other = tmp_path / "usp" / "kernels" / "two.py"
    other.write_text(literate.HEADER_MARK + "\nstale\n")
    assert literate.main(["export", "--root", str(tmp_path), "--only", str(one)]) == 0
    assert (tmp_path / "usp" / "kernels" / "one.py").read_text().endswith("A = 1\n")
    assert other.read_text() == literate.HEADER_MARK + "\nstale\n"


def test_target_module_maps_to_path(tmp_path):
    assert literate.module_path("usp.core.cusum", tmp_path) == tmp_path / "usp/core/cusum.py"
    for bad in ("numpy.linalg", "usp", "usp.core.2x", "usp.core.class"):
        with pytest.raises(literate.ExportError):
            literate.module_path(bad, tmp_path)


def test_export_cells_without_target_are_refused(tmp_path):
    notebook(tmp_path, "02_lost.md", cell("X = 1", "export"), module=None)
    with pytest.raises(literate.ExportError, match=r"02_lost\.md.*no 'usp_module"):
        export(tmp_path)


def test_target_without_export_cells_is_refused(tmp_path):
    notebook(tmp_path, "03_empty.md", cell("X = 1"))
    with pytest.raises(literate.ExportError, match="no cell tagged export"):
        export(tmp_path)


def test_notebook_without_exports_or_target_is_prose(tmp_path):
    notebook(tmp_path, "04_prose.md", cell("print(1)"), module=None)
    assert export(tmp_path) == []


def test_two_notebooks_one_module_is_refused(tmp_path):
    notebook(tmp_path, "05_a.md", cell("X = 1", "export"))
    notebook(tmp_path, "06_b.md", cell("Y = 1", "export"))
    with pytest.raises(literate.ExportError, match="both export to"):
        export(tmp_path)


def test_output_is_deterministic(tmp_path):
    notebook(tmp_path, "01_demo.md", cell("A = 1", "export") + cell("B = 2", "export"))
    first = export(tmp_path)[0].read_bytes()
    second = export(tmp_path)[0].read_bytes()
    assert first == second


def test_check_detects_drift_and_stale_files(tmp_path):
    notebook(tmp_path, "01_demo.md", cell("A = 1", "export"))
    (target,) = export(tmp_path)
    assert literate.check(tmp_path / "notebooks", tmp_path) == []
    target.write_text(target.read_text().replace("A = 1", "A = 2"))
    (problem,) = literate.check(tmp_path / "notebooks", tmp_path)
    assert "-A = 2" in problem and "+A = 1" in problem
    export(tmp_path)
    stale = tmp_path / "usp" / "kernels" / "old.py"
    stale.write_text(literate.header("notebooks/gone.md"))
    (problem,) = literate.check(tmp_path / "notebooks", tmp_path)
    assert "no notebook exporting to it" in problem
    export(tmp_path)
    assert not stale.exists()


def test_hand_written_module_is_never_overwritten(tmp_path):
    notebook(tmp_path, "01_demo.md", cell("A = 1", "export"))
    hand = tmp_path / "usp" / "kernels" / "demo.py"
    hand.write_text('"""Hand-written."""\n')
    with pytest.raises(literate.ExportError, match="hand-written"):
        export(tmp_path)
    assert hand.read_text() == '"""Hand-written."""\n'


def test_reference_cells_go_to_the_reference_module(tmp_path):
    """Cells tagged export-reference go, in order, to usp_reference_module, under their own
    header; the runtime module gets only the cells tagged export."""
    notebook(
        tmp_path,
        "01_demo.md",
        cell("A = 1", "export")
        + cell("ORACLE = 2", "export-reference")
        + cell("print('neither')")
        + cell("B = 3", "export")
        + cell("SIMULATOR = 4", "export-reference, slow"),
        reference="usp.reference.demo",
    )
    runtime, reference = export(tmp_path)
    assert runtime == tmp_path / "usp" / "kernels" / "demo.py"
    assert reference == tmp_path / "usp" / "reference" / "demo.py"
    assert runtime.read_text().split("\n\n", 1)[1] == "A = 1\n\n\nB = 3\n"
    text = reference.read_text()
    assert text.startswith(literate.HEADER_MARK)
    assert "notebooks/01_demo.md" in text.splitlines()[1]
    assert "`export-reference`" in text.splitlines()[1]
    assert text.split("\n\n", 1)[1] == "ORACLE = 2\n\n\nSIMULATOR = 4\n"
    assert literate.check(tmp_path / "notebooks", tmp_path) == []
    reference.write_text(text.replace("ORACLE = 2", "ORACLE = 5"))
    (problem,) = literate.check(tmp_path / "notebooks", tmp_path)
    assert "-ORACLE = 5" in problem and "+ORACLE = 2" in problem


def test_reference_only_notebook_needs_no_runtime_module(tmp_path):
    notebook(tmp_path, "01_demo.md", cell("X = 1", "export-reference"), None, "usp.reference.demo")
    assert export(tmp_path) == [tmp_path / "usp" / "reference" / "demo.py"]


def test_reference_cells_without_reference_target_are_refused(tmp_path):
    notebook(tmp_path, "02_lost.md", cell("A = 1", "export") + cell("X = 1", "export-reference"))
    with pytest.raises(literate.ExportError, match=r"02_lost\.md.*no 'usp_reference_module"):
        export(tmp_path)


def test_reference_target_without_reference_cells_is_refused(tmp_path):
    notebook(tmp_path, "03_empty.md", cell("A = 1", "export"), reference="usp.reference.demo")
    with pytest.raises(literate.ExportError, match="no cell tagged export-reference"):
        export(tmp_path)


def test_cell_tagged_both_export_and_reference_is_refused(tmp_path):
    notebook(tmp_path, "04_both.md", cell("A = 1", "export, export-reference"), reference="usp.r")
    with pytest.raises(literate.ExportError, match="tagged both"):
        export(tmp_path)


def test_reference_module_must_differ_from_runtime_module(tmp_path):
    body = cell("A = 1", "export") + cell("X = 1", "export-reference")
    notebook(tmp_path, "05_same.md", body, reference="usp.kernels.demo")
    with pytest.raises(literate.ExportError, match="both export to"):
        export(tmp_path)
    with pytest.raises(literate.ExportError, match="usp_reference_module must name a module"):
        literate.module_path("numpy.demo", tmp_path, literate.REFERENCE_KEY)


def test_stale_reference_module_is_detected_and_removed(tmp_path):
    body = cell("A = 1", "export") + cell("X = 1", "export-reference")
    path = notebook(tmp_path, "01_demo.md", body, reference="usp.reference.demo")
    _, reference = export(tmp_path)
    notebook(tmp_path, path.name, cell("A = 1", "export"))  # the teaching cell is gone
    (problem,) = literate.check(tmp_path / "notebooks", tmp_path)
    assert "usp/reference/demo.py" in problem and "no notebook exporting to it" in problem
    export(tmp_path)
    assert not reference.exists()


ROOT = Path(__file__).resolve().parents[1]


def _generated_modules() -> list[Path]:
    return sorted(literate.generated_files(ROOT))


def _imported_modules(tree: ast.Module) -> set[str]:
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return imported


def test_runtime_never_imports_reference_modules():
    """Teaching code (usp.reference, cells tagged export-reference) is imported by notebooks,
    tests and benchmarks only, never by the runtime package."""
    for path in sorted((ROOT / "usp").rglob("*.py")):
        if path.is_relative_to(ROOT / "usp" / "reference"):
            continue
        imported = _imported_modules(ast.parse(path.read_text()))
        assert not any(name.startswith("usp.reference") for name in imported), path


def test_generated_all_lists_exactly_the_public_names():
    """A generated module's __all__, where it has one, lists every public name it defines (no
    imported names, nothing starting with an underscore) and nothing else."""
    for path in _generated_modules():
        tree = ast.parse(path.read_text())
        defined, declared = set(), None
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defined.add(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = {t.id for t in targets if isinstance(t, ast.Name)}
                if "__all__" in names:
                    declared = ast.literal_eval(node.value)
                defined |= names
        if declared is None:
            continue
        public = {name for name in defined if not name.startswith("_")}
        assert len(declared) == len(set(declared)), path
        assert set(declared) == public, (path, set(declared) ^ public)
