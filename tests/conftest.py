import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA = ROOT / "sample_data"
CAMVID = ROOT.parent / "shared" / "data" / "camvid"


@pytest.fixture
def sample_data() -> Path:
    return SAMPLE_DATA


@pytest.fixture
def camvid_dir() -> Path:
    if not (CAMVID / "train").is_dir():
        pytest.skip(f"CamVid not found at {CAMVID} (needs ../shared/data/camvid beside the checkout)")
    return CAMVID


@pytest.fixture
def cli():
    """Run the real Typer app in-process; returns typer.testing.Result (exit_code, stdout, stderr, output)."""
    from typer.testing import CliRunner

    from segcli.cli import app

    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, [str(a) for a in args])

    return run
