"""The importable name of a task's module, even when it runs as ``__main__``.

``python app.py`` runs app.py as ``__main__``, so its functions' default
names would be ``__main__.x``, while any other process that imports the file
knows them as ``app.x``: their jobs would be dead-lettered as unknown. The
name other code imports the file by is found, and checked, here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

__all__ = ["importable_name"]


def importable_name(module: str) -> str:
    """`module`, or for ``__main__`` the name the same file is imported by.

    ``python -m pkg.app`` knows it (``__spec__.name``). ``python app.py``
    does not: each `sys.path` entry holding the file gives a dotted name,
    kept only if importing that name finds this very file; the longest wins
    (``pkg.app`` over ``app`` when ``src/pkg/app.py`` runs and ``src`` is
    on the path). Without one (the REPL, ``-c``, a file no import can
    find), ``__main__`` stays.
    """
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name)
    file = getattr(main, "__file__", None)
    if not isinstance(file, str):
        return module
    path = Path(file).resolve()
    found = [name for name in _candidates(path) if _finds(name, path)]
    return max(found, key=lambda name: name.count("."), default=module)


def _candidates(path: Path) -> list[str]:
    """Dotted names `path` would have under each `sys.path` entry that holds it."""
    names: list[str] = []
    for entry in sys.path:
        try:
            relative = path.relative_to(Path(entry or ".").resolve())
        except (ValueError, OSError):
            continue
        parts = relative.with_suffix("").parts
        if parts and parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and all(part.isidentifier() for part in parts):
            names.append(".".join(parts))
    return names


def _finds(name: str, path: Path) -> bool:
    """Whether importing `name` would load the file at `path` (its parents are imported)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    origin = spec.origin if spec is not None else None
    return origin is not None and Path(origin).resolve() == path
