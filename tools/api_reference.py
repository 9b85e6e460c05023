"""Write the book's API reference: MyST pages generated from the public API's docstrings.

    python tools/api_reference.py <out-dir>     # writes <out-dir>/usp*.md, one page per module

The public API is what the modules in ``PAGES`` list in ``__all__``. Each object is documented
once, on the page of the module that owns it (``usp.api`` re-exports the contracts, which are
documented on the ``usp.contracts`` page); the ``usp`` page lists ``usp.__all__`` and links each
name to its entry. An entry is the signature (``inspect.signature``, annotations as written), the
docstring, and for a class its fields, properties and public methods, each with its own.
Constants and fields take the docstring written under their assignment (read from the source).

The pages are generated at build time (``tools/build_book.py`` writes them into the staged book
and ``myst.yml`` lists them under "Reference"), not committed: the docstrings are the source, and
a committed copy would go stale with every docstring edit.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import re
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

PACKAGE = "usp"


@dataclass(frozen=True)
class Page:
    module: str
    title: str
    exclude: tuple[str, ...] = ()  # modules whose __all__ is documented on their own page

    @property
    def slug(self) -> str:
        return self.module.replace(".", "-")


PAGES = (
    Page("usp", "usp: the package"),
    Page("usp.api", "usp.api: the predictors", exclude=("usp.contracts",)),
    Page("usp.contracts", "usp.contracts: config, types, errors, branches"),
    Page("usp.api.runtime", "usp.api.runtime: start-up and compilation"),
    Page("usp.api.sharding", "usp.api.sharding: many devices"),
    Page("usp.eval", "usp.eval: walk-forward evaluation"),
    Page("usp.io", "usp.io: snapshots"),
)
INDEX = PAGES[0]  # lists usp.__all__, documented on the other pages


def import_api() -> None:
    """Import the package the way its users do: float64 on before anything traces."""
    import jax

    jax.config.update("jax_enable_x64", True)
    importlib.import_module(PACKAGE)


def label(*parts: str) -> str:
    """A MyST label for an entry, already in the form mystmd uses as the HTML id."""
    return "api-" + re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


class _Text:
    """An annotation shown as written (``from __future__ import annotations`` keeps strings)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def annotation_text(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    return inspect.formatannotation(annotation)


def signature(obj: Any, name: str, *, method: bool = False) -> str | None:
    """``name(params) -> return`` with annotations as text; None where Python has none.

    ``method``: leave out the first parameter (``self`` or ``cls``)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    kind, empty = inspect.Parameter, inspect.Parameter.empty
    params = [
        p.replace(annotation=_Text(annotation_text(p.annotation)))
        if p.annotation is not empty
        else p
        for p in sig.parameters.values()
    ][1 if method else 0 :]
    parts: list[str] = []
    for i, p in enumerate(params):
        if (
            p.kind is kind.KEYWORD_ONLY
            and "*" not in parts
            and not any(q.kind is kind.VAR_POSITIONAL for q in params)
        ):
            parts.append("*")
        parts.append(str(p))
        following = params[i + 1].kind if i + 1 < len(params) else None
        if p.kind is kind.POSITIONAL_ONLY and following is not kind.POSITIONAL_ONLY:
            parts.append("/")
    ret = sig.return_annotation
    tail = "" if ret is empty or inspect.isclass(obj) else f" -> {annotation_text(ret)}"
    text = f"{name}({', '.join(parts)}){tail}"
    if len(text) > 88 and len(parts) > 1:  # one parameter a line, as ruff would format it
        inner = "".join(f"    {part},\n" for part in parts)
        text = f"{name}(\n{inner}){tail}"
    return text


def docstring(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__) if isinstance(getattr(obj, "__doc__", None), str) else ""


def attribute_docs(source_of: Any) -> dict[str, str]:
    """Docstrings written under assignments (``NAME = ...`` then a string), by name."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(source_of)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body
    if len(body) == 1 and isinstance(body[0], ast.ClassDef) and inspect.isclass(source_of):
        body = body[0].body
    docs = {}
    for stmt, after in zip(body, body[1:], strict=False):
        targets = []
        if isinstance(stmt, ast.Assign):
            targets = [t.id for t in stmt.targets if isinstance(t, ast.Name)]
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            targets = [stmt.target.id]
        is_doc = (
            isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        )
        for target in targets if is_doc else []:
            docs[target] = inspect.cleandoc(after.value.value)
    return docs


def defining_module(module: ModuleType, name: str, seen: frozenset[str] = frozenset()) -> str:
    """The module whose source assigns ``name``, following ``from x import name`` re-exports."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return module.__name__
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and any(a.name == name for a in stmt.names):
            package = module.__name__ if hasattr(module, "__path__") else module.__package__
            source = importlib.util.resolve_name("." * stmt.level + (stmt.module or ""), package)
            if source not in seen:
                return defining_module(
                    importlib.import_module(source), name, seen | {module.__name__}
                )
    return module.__name__


def short_repr(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def fence(text: str, lang: str = "python") -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}{lang}\n{text}\n{ticks}"


def heading(level: int, text: str, anchor: str) -> str:
    return f"({anchor})=\n{'#' * level} `{text}`"


def is_public(name: str) -> bool:
    return not name.startswith("_")


def class_members(cls: type) -> Iterator[tuple[str, str, Any]]:
    """(kind, name, object) of the class's own public fields, properties and methods, in order."""
    fields = {}
    if dataclasses.is_dataclass(cls):
        fields = {f.name: f for f in dataclasses.fields(cls)}
    annotations = cls.__dict__.get("__annotations__", {})
    for name in annotations:
        if is_public(name):
            yield "field", name, fields.get(name, annotations[name])
    for name, value in vars(cls).items():
        if not is_public(name) or name in annotations:
            continue
        if isinstance(value, property | functools.cached_property):
            yield "property", name, value
        elif isinstance(value, staticmethod):
            yield "staticmethod", name, value.__func__
        elif isinstance(value, classmethod):
            yield "classmethod", name, value.__func__
        elif inspect.isfunction(value) or inspect.ismethoddescriptor(value):
            yield "method", name, value
        elif callable(getattr(value, "__wrapped__", None)):  # e.g. equinox's wrapped methods
            yield "method", name, value.__wrapped__


def field_line(cls: type, name: str, spec: Any) -> str:
    if isinstance(spec, dataclasses.Field):
        annotation = annotation_text(spec.type)
        if spec.default is not dataclasses.MISSING:
            default = f" = {short_repr(spec.default)}"
        elif spec.default_factory is not dataclasses.MISSING:
            default = f" = {getattr(spec.default_factory, '__name__', 'factory')}()"
        else:
            default = ""
    else:
        annotation = annotation_text(spec)
        value = cls.__dict__.get(name, dataclasses.MISSING)
        default = "" if value is dataclasses.MISSING or callable(value) else f" = {value!r}"
        if type(value).__name__ == "_tuplegetter":  # a NamedTuple field
            default = ""
    return f"{name}: {annotation}{default}"


def document_class(cls: type, name: str, anchor: str) -> list[str]:
    out = [heading(2, name, anchor), fence(signature(cls, f"class {name}") or f"class {name}")]
    bases = [b for b in cls.__bases__ if b is not object]
    if bases:
        out.append("Bases: " + ", ".join(f"`{b.__module__}.{b.__qualname__}`" for b in bases))
    out.append(docstring(cls))
    init = cls.__dict__.get("__init__")
    if inspect.isfunction(init) and docstring(init):
        out.append(docstring(init))
    notes = attribute_docs(cls)
    members = list(class_members(cls))
    fields = [(n, o) for kind, n, o in members if kind == "field"]
    if fields:
        out.append("**Fields**")
        for field_name, spec in fields:
            out.append(heading(4, f"{name}.{field_name}", label(name, field_name)))
            out.append(fence(field_line(cls, field_name, spec)))
            if notes.get(field_name):
                out.append(notes[field_name])
    for kind, member_name, obj in members:
        if kind == "field":
            continue
        qual = f"{name}.{member_name}"
        out.append(heading(3, qual, label(name, member_name)))
        if kind == "property":
            fget = getattr(obj, "fget", None) or getattr(obj, "func", None)
            ret = inspect.signature(fget).return_annotation if fget else inspect.Parameter.empty
            typed = "" if ret is inspect.Parameter.empty else f": {annotation_text(ret)}"
            out.append(fence(f"property {member_name}{typed}"))
            out.append(docstring(fget))
        else:
            decorator = f"@{kind}\n" if kind in ("staticmethod", "classmethod") else ""
            text = signature(obj, member_name, method=kind != "staticmethod") or member_name
            out.append(fence(decorator + text))
            out.append(docstring(obj))
    return out


def document(module: ModuleType, name: str, obj: Any) -> list[str]:
    anchor = label(name)
    if inspect.isclass(obj):
        return document_class(obj, name, anchor)
    if callable(obj):
        return [heading(2, name, anchor), fence(signature(obj, name) or name), docstring(obj)]
    home = importlib.import_module(defining_module(module, name))
    note = attribute_docs(home).get(name, "")
    return [heading(2, name, anchor), fence(f"{name} = {short_repr(obj)}"), note]


def owned(page: Page) -> list[str]:
    """The names documented on ``page``: its module's ``__all__`` less the excluded re-exports."""
    names = list(importlib.import_module(page.module).__all__)
    excluded = {n for m in page.exclude for n in importlib.import_module(m).__all__}
    return [n for n in names if n not in excluded]


def entries() -> dict[str, Page]:
    """Each documented public name and the page that documents it."""
    where: dict[str, Page] = {}
    for page in PAGES:
        if page is INDEX:
            continue
        for name in owned(page):
            if name in where:
                sys.exit(
                    f"api_reference: {name} documented on {where[name].module} and {page.module}"
                )
            where[name] = page
    return where


def summary(obj: Any) -> str:
    first = docstring(obj).split("\n\n")[0].replace("\n", " ").strip()
    return first.replace("|", "\\|")


def constant_summary(name: str) -> str:
    package = importlib.import_module(PACKAGE)
    home = importlib.import_module(defining_module(package, name))
    note = attribute_docs(home).get(name, "")
    return note.split("\n\n")[0].replace("\n", " ").strip().replace("|", "\\|")


def frontmatter(page: Page) -> str:
    return f"---\ntitle: '{page.title}'\n---"


def render_index(where: dict[str, Page]) -> str:
    package = importlib.import_module(PACKAGE)
    out = [frontmatter(INDEX), docstring(package)]
    out.append("The names `import usp` gives you, and where each is documented:")
    rows = ["| name | documented in | summary |", "|---|---|---|"]
    for name in package.__all__:
        if name not in where:
            sys.exit(f"api_reference: usp.{name} is not documented on any page")
        obj = getattr(package, name)
        text = summary(obj) if inspect.isclass(obj) or callable(obj) else constant_summary(name)
        rows.append(f"| [`{name}`](#{label(name)}) | `{where[name].module}` | {text} |")
    out.append("\n".join(rows))
    out.append("The reference pages, one per module:")
    out.append("\n".join(f"* [`{p.module}`](./{p.slug}.md)" for p in PAGES if p is not INDEX))
    return "\n\n".join(out) + "\n"


def render_page(page: Page) -> str:
    module = importlib.import_module(page.module)
    out = [frontmatter(page), docstring(module)]
    if page.exclude:
        also = ", ".join(f"[`{m}`](./{m.replace('.', '-')}.md)" for m in page.exclude)
        out.append(f"`{page.module}` also re-exports the names documented in {also}.")
    for name in owned(page):
        out += document(module, name, getattr(module, name))
    return "\n\n".join(part for part in out if part) + "\n"


def pages() -> dict[str, str]:
    """``{file name: MyST markdown}`` of every reference page."""
    import_api()
    where = entries()
    return {
        f"{page.slug}.md": render_index(where) if page is INDEX else render_page(page)
        for page in PAGES
    }


def toc_files(prefix: str = "book/api") -> list[str]:
    return [f"{prefix}/{page.slug}.md" for page in PAGES]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for file, text in pages().items():
        (out / file).write_text(text)
    print(f"api_reference: {len(PAGES)} pages into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
