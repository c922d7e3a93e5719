"""Where the command line lives: segcli/cli/ sits on top (nothing in the library imports it), and within it only
the render package talks to rich (tables, progress bars, consoles); the command modules parse, call and hand over.
The library never imports rich and never prints: it reports through segcli.progress."""

import ast
import re
from pathlib import Path

import pytest

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
    users = {p.relative_to(PACKAGE / "cli").parts[0] for p in (PACKAGE / "cli").rglob("*.py")
             if RICH_IMPORT.search(p.read_text())}
    assert users == {"render"}  # segcli/cli/render/: its modules, and nothing else in the CLI
    assert {"data.py", "models.py", "train.py", "predict.py", "evaluate.py", "compare.py", "export.py",
            "bench.py"} <= {p.name for p in modules}


# A child process's channel to its parent (a result line on its stdout), not output for the user.
PRINT_ALLOWED = {"bench/child.py"}


def library_modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] != "cli"
            and p != PACKAGE / "__main__.py"]


def rich_imports(source: str) -> list[int]:
    """Lines that import rich (anywhere: top level or inside a function, `import` or `from ... import`)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        if any(name == "rich" or name.startswith("rich.") for name in names):
            lines.append(node.lineno)
    return lines


def print_calls(source: str) -> list[int]:
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]


def test_the_checks_see_what_they_look_for():
    assert rich_imports("def f():\n    from rich.console import Console\n") == [2]
    assert rich_imports("import os, rich.progress\n") == [1]
    assert rich_imports("import richer\nfrom .rich import x\n") == []
    assert print_calls("def f():\n    print('x', file=f)\n") == [2]
    assert print_calls("console.print('x')\n") == []


def test_no_library_module_imports_rich_or_prints():
    """Only segcli/cli/ shows things; the library reports progress through segcli.progress."""
    library = library_modules()
    assert len(library) > 10 and PACKAGE / "progress.py" in library
    rich = {str(p.relative_to(PACKAGE)): rich_imports(p.read_text()) for p in library}
    assert not {name: lines for name, lines in rich.items() if lines}
    prints = {str(p.relative_to(PACKAGE)): print_calls(p.read_text()) for p in library}
    assert not {name: lines for name, lines in prints.items() if lines and name not in PRINT_ALLOWED}


# --- usage errors of Click's own (unknown option, missing argument, bad value): one line, like segcli's ---------

USAGE_ERRORS = [  # (arguments, the problem, the command whose --help the line points to)
    (["train", "--bogus"], "No such option: --bogus", "train"),
    (["predict"], "Missing argument 'model'", "predict"),
    (["data", "check"], "Missing argument 'DIR'", "data check"),
    (["models", "--bogus"], "No such option: --bogus", "models"),
    (["predict", "m.keras", "x.png", "--batch-size", "many"], "Invalid value for '--batch-size'", "predict"),
    (["nosuch"], "No such command 'nosuch'", ""),
]


def assert_one_line_usage_error(exit_code, stdout, stderr, problem, command):
    assert exit_code == 2, stdout + stderr
    assert stdout == "" and "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and problem in lines[0], stderr
    assert lines[0].endswith(f"{command} --help)".lstrip()), stderr  # "(see segcli train --help)"


def test_usage_errors_are_one_line_on_stderr(cli):
    for args, problem, command in USAGE_ERRORS:
        result = cli(*args)
        assert_one_line_usage_error(result.exit_code, result.stdout, result.stderr, problem, command)


@pytest.mark.slow
def test_usage_error_of_the_command_itself_is_one_line_and_help_is_unchanged(cli):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "segcli", "predict", "--bogus"], capture_output=True, text=True,
                          cwd=PACKAGE.parent, timeout=600)
    assert_one_line_usage_error(proc.returncode, proc.stdout, proc.stderr, "No such option: --bogus",
                                "segcli predict")
    result = cli("predict", "--help")
    assert result.exit_code == 0 and result.stderr == ""
    assert "Usage:" in result.stdout and "--probabilities" in result.stdout
