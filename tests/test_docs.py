"""The API reference: every public name has a docstring, and the reference built from the
docstrings (``mkdocs build --strict``, as ``make docs``) documents every one of them."""

import importlib
import importlib.util
import inspect
import shutil
import subprocess
import sys
import types
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# docs/reference/generate.py: the reference's page generator (a MkDocs hook, not a package module)
_spec = importlib.util.spec_from_file_location("_docs_reference_generate", ROOT / "docs" / "reference" / "generate.py")
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)


def _modules():
    return [importlib.import_module(m) for m in generate.public_modules()]


def _public(module):
    """``(name, object)`` for every name of ``module.__all__`` (and ``rj.__all__``)."""
    return [(name, getattr(module, name)) for name in getattr(module, "__all__", ())]


def _own_doc(obj) -> str:
    """The docstring written for ``obj`` (not one inherited, nor the signature dataclasses and
    namedtuples make up)."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    doc = (doc or "").strip()
    name = getattr(obj, "__name__", "")
    return "" if name and doc.startswith(f"{name}(") else doc


def test_every_public_module_function_and_class_has_a_docstring():
    missing = []
    for module in _modules():
        if not (module.__doc__ or "").strip():
            missing.append(module.__name__)
        for name, obj in _public(module):
            if isinstance(obj, types.ModuleType):
                continue
            if (inspect.isclass(obj) or inspect.isroutine(obj)) and not _own_doc(obj):
                missing.append(f"{module.__name__}.{name}")
    assert not missing, f"no docstring: {missing}"


def _inventory(site: Path) -> set[str]:
    data = (site / "objects.inv").read_bytes()
    body = zlib.decompress(data.split(b"\n", 4)[4]).decode()
    return {line.split(" ", 1)[0] for line in body.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or "mkdocs"
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [mkdocs, "build", "--strict", "-q", "-d", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-3000:]
    return out


def test_reference_builds_strict_and_documents_every_public_name(site):
    inv = _inventory(site)
    pages = {m for m in generate.public_modules() if (site / "reference" / m / "index.html").exists()}
    assert pages == set(generate.public_modules())
    # rj.<name>: read from the lazy table (importing redeem_jax.sweep, the CLI, would shadow rj.sweep)
    undocumented = [
        name
        for name, target in generate._lazy_names().items()
        if target.replace(":", ".") not in inv and target not in pages
    ]
    modules = _modules()
    for module in modules:
        for name, obj in _public(module):
            if isinstance(obj, types.ModuleType):
                ok = obj.__name__ in pages
            else:
                where = {f"{module.__name__}.{name}"}
                if hasattr(obj, "__module__") and hasattr(obj, "__qualname__"):
                    where.add(f"{obj.__module__}.{obj.__qualname__}")  # documented where defined
                # a constant re-exported: documented in a module that holds the same object
                where |= {f"{m.__name__}.{name}" for m in modules if getattr(m, name, None) is obj}
                ok = bool(where & inv)
            if not ok:
                undocumented.append(f"{module.__name__}.{name}")
    assert not undocumented, f"not in the reference: {undocumented}"
    assert (site / "reference" / "index.html").exists() and (site / "engine" / "index.html").exists()
