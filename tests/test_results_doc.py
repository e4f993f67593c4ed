"""docs/results.md's tables are rendered from the committed result files (experiments/regenerate.py)."""

import subprocess
import sys

from _configs import ROOT


def test_results_page_agrees_with_its_result_files():
    r = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "regenerate.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_a_drifted_table_is_caught(tmp_path):
    sys.path.insert(0, str(ROOT / "experiments"))
    import regenerate

    page = (ROOT / "docs" / "results.md").read_text()
    assert regenerate.BLOCK.findall(page), "docs/results.md has no generated table block"
    first = regenerate.BLOCK.search(page)
    drifted = page[: first.start("body")] + "| stale |\n" + page[first.end("body") :]
    assert regenerate.render(drifted) == page
    p = tmp_path / "results.md"
    p.write_text(drifted)
    assert regenerate.main(["--check", "--page", str(p)]) == 1
