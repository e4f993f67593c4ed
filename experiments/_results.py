"""Results as data: every experiment writes its tables as CSV, docs/results.md is rendered from them.

An experiment ``experiments/<name>.py`` run as ``python experiments/<name>.py --out
docs/results/<name>`` writes its figures and its result files (CSV, one row per cell or per
(point, round), with the per-seed spread as columns) into that folder. The module exposes
``TABLES: dict[str, Callable[[Path], str]]`` that turn the committed files of a folder into
Markdown tables. In docs/results.md a table is a marked block::

    <!-- table: <name>/<table> -->
    | ... generated ... |
    <!-- end table -->

and ``python experiments/regenerate.py`` rewrites every block from the committed files
(``--check`` fails when the page and the files disagree; the test suite runs it), so the docs
never drift from the runs. Prose around the blocks stays hand-written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def results_dir(name: str) -> Path:
    """The committed result folder of experiment ``name`` (``docs/results/<name>``)."""
    return RESULTS / name


def out_dir(out: str | Path) -> Path:
    """Create ``out`` (and parents) and return it as a Path."""
    p = Path(out)
    p.mkdir(parents=True, exist_ok=True)
    return p


def fmt(x, digits: int = 3) -> str:
    """A number with ``digits`` significant digits; NaN/inf print as 'diverged'."""
    if x is None:
        return "–"
    x = float(x)
    if not math.isfinite(x):
        return "diverged"
    if x == 0:
        return "0"
    if abs(x) >= 10**digits or abs(x) < 1e-3:
        return f"{x:.{max(digits - 1, 0)}e}"
    return f"{x:.{digits}g}"


def fmt_band(mean, lo, hi, digits: int = 3) -> str:
    """'mean [min, max]' as the result tables print a value over seeds."""
    if not all(math.isfinite(float(v)) for v in (mean, lo, hi)):
        return "diverged"
    return f"{fmt(mean, digits)} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def fmt_pm(mean, err, digits: int = 3) -> str:
    """'mean ± err' (err: a standard error or a half-width; the caption says which)."""
    if not (math.isfinite(float(mean)) and math.isfinite(float(err))):
        return "diverged"
    return f"{fmt(mean, digits)} ± {fmt(err, 2)}"


def over_seeds(df, by: Sequence[str], values: Sequence[str], seed: str = "seed"):
    """Per group ``by``: mean, min, max and seed count of each column of ``values``.

    Columns come out as ``<value>_mean``, ``<value>_min``, ``<value>_max`` and ``seeds``; a
    group where any seed diverged (non-finite value) keeps NaN as its mean, so the table prints
    'diverged' rather than a mean over the survivors.
    """
    import pandas as pd

    g = df.groupby(list(by), sort=False, dropna=False)
    out = g[list(values)].agg(["mean", "min", "max"])
    out.columns = [f"{v}_{s}" for v, s in out.columns]
    out["seeds"] = g[seed].nunique() if seed in df.columns else g.size()
    return out.reset_index().pipe(pd.DataFrame)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub-flavoured Markdown table (cells converted with ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
