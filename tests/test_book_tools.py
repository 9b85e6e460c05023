"""The book's tools: the API reference generator (tools/api_reference.py), the offline renderer's
links (book/render.mjs) and the browser check that follows them (book/check.mjs).

The generator runs in-process. The two Node scripts run on tiny hand-made inputs; those tests
skip where ``node_modules`` (``npm ci``) or the browser (``make chromium``) is missing.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import api_reference  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return api_reference.pages()


def anchors(text: str) -> set[str]:
    return set(re.findall(r"^\((api-[a-z0-9-]+)\)=$", text, flags=re.M))


def test_step_batch_is_documented_with_its_signature(pages):
    page = pages["usp-api.md"]
    entry = page.split("(api-functionalpredictor-step-batch)=\n", 1)[1].split("\n(api-", 1)[0]
    assert "### `FunctionalPredictor.step_batch`" in entry
    signature = re.search(r"```python\n(.*?)\n```", entry, flags=re.S).group(1)
    assert signature.startswith("step_batch(")
    for parameter in ("states: PredictorState", "prices:", "targets:", "freeze:"):
        assert parameter in signature
    assert "self" not in signature
    assert "->" in signature
    first_line = importlib.import_module("usp").FunctionalPredictor.step_batch.__doc__
    assert first_line.strip().split("\n")[0] in entry


def test_every_public_name_has_an_entry(pages):
    documented = set().union(*(anchors(text) for text in pages.values()))
    for page in api_reference.PAGES:
        module = importlib.import_module(page.module)
        missing = [n for n in module.__all__ if api_reference.label(n) not in documented]
        assert not missing, f"{page.module}.__all__ names without a reference entry: {missing}"


def test_the_package_page_links_every_name_of_usp_all(pages):
    index = pages[f"{api_reference.INDEX.slug}.md"]
    for name in importlib.import_module("usp").__all__:
        assert f"[`{name}`](#{api_reference.label(name)})" in index, name


def test_a_name_missing_from_the_reference_fails(monkeypatch):
    usp = importlib.import_module("usp")
    monkeypatch.setattr(usp, "__all__", [*usp.__all__, "not_documented_anywhere"])
    monkeypatch.setattr(usp, "not_documented_anywhere", lambda: None, raising=False)
    with pytest.raises(SystemExit, match="not_documented_anywhere"):
        api_reference.pages()


def test_each_object_is_documented_once(pages):
    seen: dict[str, str] = {}
    for file, text in pages.items():
        for anchor in anchors(text):
            assert anchor not in seen, f"{anchor} on {seen.get(anchor)} and {file}"
            seen[anchor] = file


def test_classes_list_methods_properties_and_fields(pages):
    api, contracts = pages["usp-api.md"], pages["usp-contracts.md"]
    assert "(api-universalpredictor-from-snapshot)=" in api
    assert "@classmethod\nfrom_snapshot(" in api
    assert "property branch_names: tuple[str, ...]" in api
    assert "(api-predictorconfig-cusum-h)=" in contracts  # a dataclass field
    assert "COLLAPSE_CHECK = 'collapse_check'" in contracts  # a constant and its docstring
    assert "Role: subject to the mode-collapse check" in contracts


def test_signatures_keep_keyword_only_markers():
    def f(a: int, /, b: str = "x", *, c: list[int] | None = None) -> float:
        return 0.0

    assert api_reference.signature(f, "f") == (
        "f(a: int, /, b: str = 'x', *, c: list[int] | None = None) -> float"
    )


def test_myst_toc_lists_exactly_the_generated_pages(pages):
    config = yaml.safe_load((ROOT / "myst.yml").read_text())
    parts = [e for e in config["project"]["toc"] if e.get("title") == "Reference"]
    assert len(parts) == 1, "myst.yml needs one 'Reference' part"
    listed = [child["file"] for child in parts[0]["children"]]
    assert listed == api_reference.toc_files("book/api")
    assert sorted(Path(f).name for f in listed) == sorted(pages)


# ---- book/render.mjs and book/check.mjs on hand-made input -----------------------------------

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (ROOT / "node_modules" / "playwright-core").exists(),
    reason="node_modules missing (npm ci)",
)
needs_browser = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no browser at {CHROMIUM}")


def text(value: str) -> dict:
    return {"type": "text", "value": value}


def site(tmp_path: Path) -> Path:
    """A two-page mystmd site: the index links to the other page, once by file, once by label."""
    root = tmp_path / "site"
    (root / "content").mkdir(parents=True)
    (root / "public").mkdir()
    config = {
        "projects": [
            {
                "index": "intro",
                "title": "Tiny",
                "pages": [{"slug": "other", "title": "Other", "level": 1}],
            }
        ]
    }
    (root / "config.json").write_text(json.dumps(config))
    link = {"type": "link", "url": "/other", "internal": True, "children": [text("doc")]}
    xref = {
        "type": "crossReference",
        "url": "/other",
        "remote": True,
        "identifier": "target",
        "html_id": "target",
        "children": [text("ref")],
    }
    local = {"type": "crossReference", "identifier": "here", "html_id": "here", "children": []}
    home = {"type": "link", "url": "/", "internal": True, "children": [text("home")]}
    intro = [
        {"type": "heading", "depth": 2, "identifier": "here", "html_id": "here", "children": []},
        {"type": "paragraph", "children": [link, text(" "), xref, text(" "), local]},
    ]
    other = [
        {"type": "heading", "depth": 2, "identifier": "target", "html_id": "target",
         "children": [text("Target")]},
        {"type": "paragraph", "children": [home]},
    ]  # fmt: skip
    for slug, children in (("intro", intro), ("other", other)):
        page = {"frontmatter": {"title": slug}, "mdast": {"type": "root", "children": children}}
        (root / "content" / f"{slug}.json").write_text(json.dumps(page))
    return root


@needs_node
def test_render_writes_internal_links_relative_to_the_page(tmp_path):
    out = tmp_path / "html"
    subprocess.run(
        ["node", str(ROOT / "book" / "render.mjs"), str(site(tmp_path)), str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    intro, other = (out / "index.html").read_text(), (out / "other.html").read_text()
    assert '<a href="other.html">doc</a>' in intro
    assert 'href="other.html#target"' in intro
    assert 'href="#here"' in intro
    assert '<a href="index.html">home</a>' in other
    assert 'href="/' not in intro + other


def check_links(html: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["node", str(ROOT / "book" / "check.mjs"), "--links-only", str(html)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def page(body: str) -> str:
    return f"<!DOCTYPE html><html><body><main><h2 id='top'>Title</h2>{body}</main></body></html>"


@needs_node
@needs_browser
def test_check_follows_links_and_fails_on_a_broken_one(tmp_path):
    html = tmp_path / "html"
    html.mkdir()
    (html / "a.html").write_text(page('<a href="b.html#sec">good</a> <a href="#top">self</a>'))
    (html / "b.html").write_text(page('<p id="sec">b</p><a href="https://example.org">away</a>'))
    done = check_links(html)
    assert done.returncode == 0, done.stdout + done.stderr

    (html / "c.html").write_text(
        page(
            '<a href="b.html#missing">bad anchor</a> <a href="gone.html">no page</a>'
            ' <a href="/architecture">absolute</a>'
        )
    )
    done = check_links(html)
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'c.html -> b.html#missing: no element with id "missing"' in done.stderr
    assert "c.html -> gone.html: no file gone.html" in done.stderr
    assert "c.html -> /architecture" in done.stderr
    assert "a.html ->" not in done.stderr
