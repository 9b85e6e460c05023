"""Build the offline HTML book: stage the sources, ``myst build --site``, render to HTML.

mystmd's HTML themes are downloaded at build time, and CI has no internet. So the book is
built from a staged copy of the project whose ``myst.yml`` (1) points at a local do-nothing
site template and (2) lists the executed notebooks (``notebooks/*.ipynb``, written by
``make notebooks``) in place of their ``.md`` sources, so chapters show this run's outputs.
The API reference (``book/api/*.md``, listed under "Reference" in ``myst.yml``) is generated
into the staged copy from the package's docstrings by ``tools/api_reference.py``; it is not
kept in the tree. ``book/render.mjs`` then turns mystmd's site JSON into static pages in
``_build/html``; the page names of the notebook chapters go to ``_build/html/chapters.txt`` and
those of the reference to ``_build/html/reference.txt``, for ``make book-check``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import api_reference
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "_build" / "book-src"
HTML = ROOT / "_build" / "html"
API_DIR = "book/api"


def executed(entry: str) -> str:
    """notebooks/x.md -> notebooks/x.ipynb, which must exist and hold outputs."""
    if not entry.startswith("notebooks/") or not entry.endswith(".md"):
        return entry
    ipynb = entry[: -len(".md")] + ".ipynb"
    path = ROOT / ipynb
    if not path.exists():
        sys.exit(f"build_book: {ipynb} missing; run `make notebooks` first")
    if not any(cell.get("outputs") for cell in json.loads(path.read_text())["cells"]):
        sys.exit(f"build_book: {ipynb} has no outputs; run `make notebooks` first")
    return ipynb


def rewrite_toc(entries: list[dict]) -> list[dict]:
    out = []
    for entry in entries:
        entry = dict(entry)
        if "file" in entry:
            entry["file"] = executed(entry["file"])
        if "children" in entry:
            entry["children"] = rewrite_toc(entry["children"])
        out.append(entry)
    return out


def chapter_files(entries: list[dict]) -> list[str]:
    files = []
    for entry in entries:
        if entry.get("file", "").endswith(".ipynb"):
            files.append(entry["file"])
        files += chapter_files(entry.get("children", []))
    return files


def toc_files(entries: list[dict]) -> list[str]:
    files = []
    for entry in entries:
        files += [entry["file"]] if "file" in entry else []
        files += toc_files(entry.get("children", []))
    return files


def write_api_reference(toc: list[dict]) -> list[str]:
    """Generate the reference pages into the stage; the toc must list exactly those pages."""
    listed = [f for f in toc_files(toc) if f.startswith(API_DIR + "/")]
    expected = api_reference.toc_files(API_DIR)
    if sorted(listed) != sorted(expected):
        sys.exit(f"build_book: myst.yml's {API_DIR} pages {listed} != generated {expected}")
    for name, text in api_reference.pages().items():
        (STAGE / API_DIR / name).parent.mkdir(parents=True, exist_ok=True)
        (STAGE / API_DIR / name).write_text(text)
    return expected


def stage() -> tuple[list[str], list[str]]:
    config = yaml.safe_load((ROOT / "myst.yml").read_text())
    config["project"]["toc"] = rewrite_toc(config["project"]["toc"])
    config["site"] = {"template": "./book/offline-template"}
    shutil.rmtree(STAGE, ignore_errors=True)
    STAGE.mkdir(parents=True)
    shutil.copytree(ROOT / "book", STAGE / "book")
    shutil.rmtree(STAGE / API_DIR, ignore_errors=True)  # a reader's local copy: regenerate
    reference = write_api_reference(config["project"]["toc"])
    (STAGE / "notebooks").mkdir()
    for notebook in chapter_files(config["project"]["toc"]):
        shutil.copy2(ROOT / notebook, STAGE / notebook)
    (STAGE / "myst.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return chapter_files(config["project"]["toc"]), reference


def check_katex_versions() -> None:
    """mystmd writes KaTeX HTML with its bundled KaTeX; the CSS we ship must be the same version."""
    import mystmd_py

    bundle = (Path(mystmd_py.__file__).parent / "myst.cjs").read_text()
    found = re.search(r'Current KaTeX version\s*\*/\s*version: "([0-9.]+)"', bundle)
    shipped = json.loads((ROOT / "node_modules" / "katex" / "package.json").read_text())["version"]
    if found is None or found.group(1) != shipped:
        bundled = found.group(1) if found else "unknown"
        sys.exit(f"build_book: mystmd bundles KaTeX {bundled} but package.json pins {shipped}")


def main() -> int:
    check_katex_versions()
    notebooks, reference = stage()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    myst = Path(sys.executable).parent / "myst"
    subprocess.run([str(myst), "build", "--site", "--ci"], cwd=STAGE, env=env, check=True)
    site = STAGE / "_build" / "site"
    shutil.rmtree(HTML, ignore_errors=True)
    subprocess.run(["node", str(ROOT / "book" / "render.mjs"), str(site), str(HTML)], check=True)
    # Page names of the chapters and reference pages, as mystmd slugged them, for the browser check.
    by_location = {}
    for page in json.loads((site / "config.json").read_text())["projects"][0]["pages"]:
        if page.get("slug"):
            content = json.loads((site / "content" / f"{page['slug']}.json").read_text())
            by_location[content["location"].lstrip("/")] = f"{page['slug']}.html"
    (HTML / "chapters.txt").write_text("\n".join(by_location[nb] for nb in notebooks) + "\n")
    (HTML / "reference.txt").write_text("\n".join(by_location[md] for md in reference) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
