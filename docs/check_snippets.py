"""Run every complete Python snippet in the docs, so the docs cannot drift from the code.

    python docs/check_snippets.py [FILE.md ...]     (default: every docs/*.md)

A ```python block that starts with an import is a complete program: it is run
on memory:// (UPNEXT_BROKER_URL is cleared) with RuntimeWarnings as errors,
and must exit 0 within 60 s. Blocks that call ``upnext.run(`` would block
forever, so they, like fragments and blocks marked ``# snippet: no-run`` (say,
ones that need a server), are only compiled. Exits 1 if any fails.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def is_program(code: str) -> bool:
    """True for a block meant to run as it stands."""
    if "upnext.run(" in code or "# snippet: no-run" in code:
        return False
    return code.lstrip().startswith(("import", "from"))


def run_block(code: str, label: str, workdir: Path) -> str | None:
    """Compile (and, for programs, run) one block; the failure text, or None."""
    try:
        compile(code, label, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError as exc:
        return f"syntax error: {exc}"
    if not is_program(code):
        return None
    script = workdir / "snippet.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "UPNEXT_BROKER_URL"}
    cmd = [sys.executable, "-W", "error::RuntimeWarning", str(script)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    except subprocess.TimeoutExpired:
        return "timed out after 60 s"
    return None if done.returncode == 0 else done.stdout + done.stderr


def main(argv: list[str]) -> int:
    """Check the given markdown files (default: all of docs/)."""
    files = [Path(a) for a in argv] or sorted(DOCS.glob("**/*.md"))
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for md in files:
            for number, code in enumerate(BLOCK.findall(md.read_text()), start=1):
                label = f"{md.name} block {number}"
                problem = run_block(code, label, Path(tmp))
                print(f"{'FAIL' if problem else 'ok  '} {label}")
                if problem:
                    failures += 1
                    print("    " + problem.strip().replace("\n", "\n    "))
    print(f"{failures} failing snippet(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
