"""The README and docs/: the README stays short, every relative link leads to a file, and every generated table
matches the JSON it is generated from (scripts/docs_tables.py --check)."""

import re
import shutil

from conftest import ROOT, script_module

README_MAX_LINES = 300
LINK = re.compile(r"\]\(([^)\s]+)\)")


def docs_tables():
    return script_module("scripts/docs_tables.py")


def test_readme_is_short():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"


def anchors(page):
    """The #anchors of a markdown page's headings, as GitHub makes them."""
    headings = re.findall(r"(?m)^#+ (.+)$", re.sub(r"(?ms)^```.*?^```", "", page.read_text()))
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_leads_to_a_file_and_heading():
    pages = [ROOT / "README.md", ROOT / "models" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            linked = (page.parent / path) if path else page
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_generated_tables_match_their_json():
    assert docs_tables().stale_tables(ROOT) == []


def test_a_stale_table_fails_the_check(tmp_path, capsys):
    """A copy of the tree with one figure changed in its JSON: --check names that table and exits 1, and the
    script then rewrites it so that --check passes."""
    shutil.copy(ROOT / "README.md", tmp_path)
    (tmp_path / "models").mkdir()
    for path in (ROOT / "models").glob("*.json"):
        shutil.copy(path, tmp_path / "models")
    shutil.copy(ROOT / "models" / "README.md", tmp_path / "models")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    tune = tmp_path / "docs" / "results" / "tune-camvid-fcn.json"
    tune.write_text(tune.read_text().replace('"batch": 4', '"batch": 5'))
    tables = docs_tables()
    assert tables.stale_tables(tmp_path) == ["docs/tuning.md: results/tune-camvid-fcn"]

    assert tables.main(["--check", "--root", str(tmp_path)]) == 1  # what `python scripts/docs_tables.py --check` runs
    assert "stale table: docs/tuning.md: results/tune-camvid-fcn" in capsys.readouterr().err

    assert tables.stale_tables(tmp_path, write=True) == ["docs/tuning.md: results/tune-camvid-fcn"]
    assert "| 0.00211 | 5 |" in (tmp_path / "docs" / "tuning.md").read_text()
    assert tables.stale_tables(tmp_path) == []
