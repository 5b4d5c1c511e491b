"""scripts/setup_venv.sh, the set-up both README commands run: venv once, packages once.

These run the real script in a scratch copy of the files it reads, with stand-in
pythons, so they need no network and never touch the project's own ``.venv``.
The full install on a fresh clone is ``.ci/fresh_clone`` (network or a package index).
"""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SETUP_FILES = ("scripts/setup_venv.sh", "requirements.txt", "pyproject.toml")


def scratch_checkout(tmp_path: Path) -> Path:
    root = tmp_path / "clone"
    for name in SETUP_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    return root


def write_executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def run_setup(root: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "scripts/setup_venv.sh"], cwd=root, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(root), **env}, timeout=1800,
    )  # fmt: skip


def test_python_without_venv_module_gets_a_clear_message(tmp_path):
    """Debian without python3-venv: exit 2, say which package, leave no half-made venv."""
    root = scratch_checkout(tmp_path)
    shadow = tmp_path / "shadow"
    (shadow / "ensurepip").mkdir(parents=True)
    (shadow / "ensurepip" / "__init__.py").write_text("raise ImportError('no ensurepip')\n")
    python = write_executable(
        tmp_path / "bin" / "python3",
        f'#!/bin/sh\nPYTHONPATH={shadow} exec {sys.executable} "$@"\n',
    )
    result = run_setup(root, PYTHON=str(python))
    assert result.returncode == 2, result.stderr
    assert "python3-venv" in result.stderr and "Traceback" not in result.stderr
    assert not (root / ".venv").exists()


def test_missing_python_is_named(tmp_path):
    result = run_setup(scratch_checkout(tmp_path), PYTHON="no-such-python3")
    assert result.returncode == 2
    assert "no-such-python3 not found" in result.stderr


def test_packages_install_once_until_requirements_change(tmp_path):
    """An existing venv is reused; pip runs on the first call and after requirements change."""
    root = scratch_checkout(tmp_path)
    log = tmp_path / "calls.log"
    # A stand-in venv whose python records its arguments (pip always succeeds).
    write_executable(root / ".venv" / "bin" / "python", f'#!/bin/sh\necho "$@" >> {log}\n')

    def pip_installs():
        lines = log.read_text().splitlines() if log.exists() else []
        return [line for line in lines if line.startswith("-m pip install")]

    first = run_setup(root)
    assert first.returncode == 0, first.stderr
    installs = pip_installs()
    assert len(installs) == 3
    assert installs[0].endswith("-r requirements.txt")
    assert installs[1].endswith("--no-deps resemblyzer==0.1.4")
    assert installs[2].endswith("--no-deps -e .")
    assert (root / ".venv" / ".tse-setup.sha256").exists()

    second = run_setup(root)
    assert second.returncode == 0, second.stderr
    assert len(pip_installs()) == 3 and "Installing" not in second.stdout

    with open(root / "requirements.txt", "a") as handle:
        handle.write("extra-package\n")
    third = run_setup(root)
    assert third.returncode == 0, third.stderr
    assert len(pip_installs()) == 6
