"""The dependencies are installed from uv.lock; where uv cannot be had, pip installs its export in .ci/.
That export must say what the lock says."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETS = {
    "requirements-demo.txt": ["--extra", "embedded", "--extra", "i18n"],
    "requirements-test.txt": ["--extra", "embedded", "--extra", "i18n", "--extra", "dev"],
}


def _uv() -> str | None:
    beside = Path(sys.executable).with_name("uv")
    return shutil.which("uv") or (str(beside) if beside.exists() else None)


@pytest.mark.parametrize("name", sorted(SETS))
def test_the_pip_export_matches_the_lock(name):
    uv = _uv()
    if uv is None:
        pytest.skip("uv is not installed here: make installs it into the virtualenv")
    exported = subprocess.run(
        [uv, "export", "--frozen", "--no-emit-project", "--no-header", *SETS[name], "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (ROOT / ".ci" / name).read_text() == exported, f"run `make lock` to refresh .ci/{name}"


def test_every_dependency_is_pinned_with_hashes():
    for name in SETS:
        lines = (ROOT / ".ci" / name).read_text().splitlines()
        pins = [line for line in lines if line and not line.startswith((" ", "#"))]
        assert pins and all("==" in pin for pin in pins), name
        assert sum("--hash=sha256:" in line for line in lines) >= len(pins), name
