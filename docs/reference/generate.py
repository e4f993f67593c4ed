"""The API reference pages, generated from the package so they can never fall behind it.

Used two ways: as a MkDocs hook (``mkdocs.yml``: ``hooks``), which adds the pages to every
build, and from the command line (``python docs/reference/generate.py OUT``), which writes
them to ``OUT`` for reading. One page per public module of ``redeem_jax`` (every module and
package whose dotted path has no part starting with ``_``), rendered by mkdocstrings from the
docstrings, and an index of the top-level names of ``redeem_jax`` (``rj.*``).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "redeem_jax"
SKIP = {"__main__"}


def public_modules() -> list[str]:
    """Dotted names of the public modules of ``redeem_jax``, packages before their modules."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") or p in SKIP for p in parts):
            continue
        out.append(".".join(parts))
    return sorted(out, key=lambda m: m.split("."))


def _first_line(module: str) -> str:
    """The first sentence of a module's docstring, read without importing it."""
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    first = " ".join(doc.strip().split("\n\n")[0].split())
    return first.replace("|", "\\|")


def _lazy_names() -> dict[str, str]:
    """``rj.<name>`` -> its target (``module`` or ``module:attribute``), read from ``_LAZY``."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == "_LAZY":
            return ast.literal_eval(node.value)
    raise RuntimeError("redeem_jax/__init__.py: no _LAZY table")


def page_path(module: str) -> str:
    return f"reference/{module}.md"


def pages() -> dict[str, str]:
    """``{path under docs/: markdown}`` for every reference page."""
    modules = public_modules()
    out = {}
    for m in modules:
        options = "\n    options:\n      members: false" if m == "redeem_jax" else ""  # its names are lazy
        out[page_path(m)] = f"# `{m}`\n\n::: {m}{options}\n"
    rows = []
    for name, target in sorted(_lazy_names().items()):
        module, _, attr = target.partition(":")
        where = f"[`{module}`]({module}.md)" if module in modules else f"`{module}`"
        what = f"[`{target.replace(':', '.')}`][{module}.{attr}]" if attr else where
        rows.append(f"| `rj.{name}` | {what} |")
    listing = "\n".join(f"- [`{m}`]({m}.md): {_first_line(m)}" for m in modules)
    out["reference/index.md"] = (
        "# API reference\n\n"
        "Generated from the docstrings (`docs/reference/generate.py`, built by `make docs`).\n\n"
        "## `import redeem_jax as rj`\n\n"
        "Every top-level name is imported on first use.\n\n"
        "| name | is |\n|---|---|\n" + "\n".join(rows) + "\n\n## Modules\n\n" + listing + "\n"
    )
    return out


# --------------------------------------------------------------------------- #
# the MkDocs hook
# --------------------------------------------------------------------------- #
def on_files(files, config):
    from mkdocs.structure.files import File

    for path, text in pages().items():
        files.append(File.generated(config, path, content=text))
    return files


# The docstrings cross-reference in Sphinx's roles (:func:`~redeem_jax.x.f`), which Markdown
# renders as the role's text before a code span: each becomes a link (autorefs, optional so an
# unresolvable name stays plain code).
_ROLE = re.compile(r":(?:func|class|meth|attr|data|mod|obj|exc):<code>(~?)([\w.]+)(\(\))?</code>")


def _identifier(path: str, module: str | None) -> str:
    head, _, rest = path.partition(".")
    if head == "rj":
        target = _lazy_names().get(rest.partition(".")[0], "").replace(":", ".")
        return target + rest[len(rest.partition(".")[0]) :] if target else path
    if head != "redeem_jax" and module:  # relative to the page's module (``f``, ``Ctx.value``)
        return f"{module}.{path}"
    return path


def on_page_content(html, page, config, files):
    uri = page.file.src_uri
    module = uri[len("reference/") : -len(".md")] if uri.startswith("reference/redeem_jax") else None

    def link(m):
        path = m[2]
        shown = (path.rsplit(".", 1)[-1] if m[1] else path) + (m[3] or "")
        return f'<autoref identifier="{_identifier(path, module)}" optional><code>{shown}</code></autoref>'

    return _ROLE.sub(link, html)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "site_reference")
    for path, text in pages().items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(text)
    print(f"{len(pages())} pages under {out}")
