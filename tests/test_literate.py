"""The notebook -> package exporter (tools/literate.py)."""

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
    {module}---
    """
)


def cell(source: str, tags: str = "") -> str:
    meta = f":tags: [{tags}]\n" if tags else ""
    return f"```{{code-cell}} ipython3\n{meta}{source}\n```\n\n"


def notebook(tmp: Path, name: str, body: str, module: str | None = "usp.kernels.demo") -> Path:
    (tmp / "notebooks").mkdir(exist_ok=True)
    (tmp / "usp" / "kernels").mkdir(parents=True, exist_ok=True)
    front = FRONT.format(module=f"usp_module: {module}\n" if module else "")
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
