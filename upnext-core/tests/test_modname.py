"""A task in a script run as ``__main__`` is named as other code imports the script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

APP = """
import upnext
worker = upnext.Worker("names", broker="memory://names")

@worker.task
async def x() -> None: ...

if __name__ == "__main__":
    print(" ".join(sorted(worker.tasks)))
"""


def _names(tmp_path: Path, *argv: str, pythonpath: str = "") -> str:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    proc = subprocess.run(
        [sys.executable, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``app.py`` and ``src/pkg/app.py`` (a package), the same task in each."""
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "__init__.py").write_text("")
    (tmp_path / "src" / "pkg" / "app.py").write_text(APP)
    return tmp_path


def test_python_app_py_names_tasks_app_x(tree: Path) -> None:
    assert _names(tree, "app.py") == "app.x"
    assert _names(tree, str(tree / "app.py")) == "app.x"


def test_a_script_in_a_package_takes_its_package_path_when_importable(tree: Path) -> None:
    assert _names(tree, "src/pkg/app.py", pythonpath="src") == "pkg.app.x"
    assert _names(tree, "src/pkg/app.py") == "app.x"  # only importable as `app`
    assert _names(tree, "-m", "pkg.app", pythonpath="src") == "pkg.app.x"


def test_code_no_import_can_find_stays_main(tree: Path) -> None:
    assert _names(tree, "-c", APP) == "__main__.x"
    (tree / "my-app.py").write_text(APP)
    assert _names(tree, "my-app.py") == "__main__.x"
