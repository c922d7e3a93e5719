"""Where the command line lives: segcli/cli/ sits on top (nothing in the library imports it), and within it only
render.py talks to rich (tables, progress bars, consoles); the command modules parse, call and hand over."""

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "segcli"
CLI_IMPORT = re.compile(r"^\s*(from\s+segcli\.cli\b|import\s+segcli\.cli\b|from\s+segcli\s+import\s+.*\bcli\b)", re.M)
RICH_IMPORT = re.compile(r"^\s*(from|import)\s+rich\b", re.M)


def test_no_library_module_imports_the_cli():
    library = [p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts[:1]
               and p != PACKAGE / "__main__.py"]
    assert len(library) > 10
    offenders = [str(p.relative_to(PACKAGE)) for p in library if CLI_IMPORT.search(p.read_text())]
    assert not offenders


def test_only_render_imports_rich_in_the_cli():
    modules = sorted((PACKAGE / "cli").glob("*.py"))
    users = [p.name for p in modules if RICH_IMPORT.search(p.read_text())]
    assert users == ["render.py"]
    assert {"data.py", "models.py", "train.py", "predict.py", "evaluate.py", "compare.py", "export.py",
            "bench.py"} <= {p.name for p in modules}
