"""Render docs/results.md's tables from the committed result files of every experiment.

    python experiments/regenerate.py            # rewrite the marked tables in place
    python experiments/regenerate.py --check    # exit 1 if any table differs from its files

A table block in the page is ``<!-- table: <experiment>/<table> -->`` … ``<!-- end table -->``;
its body is ``TABLES[<table>](docs/results/<experiment>)`` of ``experiments/<experiment>.py``
(see ``experiments/_results.py``). Everything outside the blocks is left as written.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "results.md"
BLOCK = re.compile(r"(<!-- table: (?P<key>[\w.-]+/[\w.-]+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)


def load_experiment(name: str):
    """``experiments/<name>.py`` as a module (the experiments are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"_experiment_{name}", ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "experiments"))
    spec.loader.exec_module(mod)
    return mod


def render(text: str, results: Path = ROOT / "docs" / "results") -> str:
    """``text`` with every marked table block re-rendered from the files under ``results``."""
    modules: dict = {}

    def one(m: re.Match) -> str:
        exp, table = m["key"].split("/")
        if exp not in modules:
            modules[exp] = load_experiment(exp)
        tables = getattr(modules[exp], "TABLES", {})
        if table not in tables:
            raise SystemExit(
                f"error: docs/results.md asks for {exp}/{table}, but experiments/{exp}.py's TABLES has {sorted(tables)}"
            )
        body = tables[table](results / exp).rstrip("\n") + "\n"
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(one, text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    ap.add_argument("--page", default=str(PAGE))
    args = ap.parse_args(argv)
    page = Path(args.page)
    old = page.read_text()
    new = render(old)
    n = len(BLOCK.findall(old))
    if args.check:
        if new != old:
            sys.stdout.writelines(
                difflib.unified_diff(old.splitlines(True), new.splitlines(True), str(page), "regenerated")
            )
            print(f"error: {page} differs from its result files; run python experiments/regenerate.py")
            return 1
        print(f"{page}: {n} tables agree with their result files")
        return 0
    page.write_text(new)
    print(f"{page}: {n} tables rendered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
