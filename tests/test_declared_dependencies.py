"""Every third-party module a distribution's source imports is one of its declared dependencies.

A module that arrives only as a dependency of a dependency (pamqp through aiormq
through aio-pika) works until that chain changes its own requirements; then
users' installs break on a release nobody here made. So each import found in a
distribution's `src/` must name a distribution in its `dependencies` or in one
of its extras.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTIONS = [
    ROOT / "upnext-core",
    ROOT / "upnext-redis",
    ROOT / "upnext-rabbitmq",
    ROOT / "upnext-postgres",
    ROOT / "examples" / "upnext-sqlite",
]


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The distribution a PEP 508 requirement string names."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, f"unreadable requirement {requirement!r}"
    return normalized(match.group(1))


def pyproject(path: Path) -> dict[str, Any]:
    """One distribution's pyproject.toml."""
    return tomllib.loads((path / "pyproject.toml").read_text())


def declared(path: Path) -> set[str]:
    """Every distribution named in `dependencies` or in any extra."""
    meta = pyproject(path)["project"]
    names = {requirement_name(r) for r in meta.get("dependencies", [])}
    for requirements in meta.get("optional-dependencies", {}).values():
        names |= {requirement_name(r) for r in requirements}
    return names


def workspace_modules() -> dict[str, str]:
    """Top-level import name -> distribution, for the packages built in this repository."""
    modules: dict[str, str] = {}
    for path in DISTRIBUTIONS:
        data = pyproject(path)
        wheel = data["tool"]["hatch"]["build"]["targets"]["wheel"]
        for package in wheel["packages"]:
            modules[Path(package).name] = normalized(data["project"]["name"])
    return modules


def imported_modules(source: Path) -> Iterator[tuple[str, Path, int]]:
    """Top-level names of the absolute imports in every module under `source`."""
    for file in sorted(source.rglob("*.py")):
        tree = ast.parse(file.read_text(), filename=str(file))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name.partition(".")[0], file, node.lineno
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield node.module.partition(".")[0], file, node.lineno


def providers(module: str) -> set[str]:
    """The distributions that install `module`; a module not installed here is its own name."""
    own = workspace_modules()
    if module in own:
        return {own[module]}
    return {normalized(d) for d in packages_distributions().get(module, [module])}


def undeclared_imports(path: Path, root: Path = ROOT) -> list[str]:
    """`file:line imports X (from Y), not declared` for each import outside the declared set."""
    allowed = declared(path) | {normalized(pyproject(path)["project"]["name"])}
    problems = []
    for module, file, line in imported_modules(path / "src"):
        if module in sys.stdlib_module_names or module == "__future__":
            continue
        found = providers(module)
        if not found & allowed:
            where = file.relative_to(root)
            problems.append(f"{where}:{line} imports {module} (from {', '.join(sorted(found))})")
    return problems


@pytest.mark.parametrize("path", DISTRIBUTIONS, ids=lambda p: p.name)
def test_every_import_is_a_declared_dependency(path: Path) -> None:
    """A distribution imports only what it declares (or the standard library, or itself)."""
    assert undeclared_imports(path) == []


def test_an_undeclared_import_is_named(tmp_path: Path) -> None:
    """The check finds an import of a module the distribution does not declare."""
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "__init__.py").write_text("import json\nimport pluggy.hooks\n")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "pkg"\ndependencies = ["pydantic"]')
    found = undeclared_imports(tmp_path, root=tmp_path)
    assert found == ["src/pkg/__init__.py:2 imports pluggy (from pluggy)"]


def documented_versions() -> list[tuple[str, str, str, str]]:
    """The rows of docs/dependencies.md's table: distribution, library, range, locked version."""
    rows = []
    for line in (ROOT / "docs" / "dependencies.md").read_text().splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("upnext-"):
            rows.append((cells[0], cells[1], cells[2], cells[3]))
    return rows


def declared_range(distribution: str, library: str) -> str:
    """The version range `distribution` (or `distribution[extra]`) declares for `library`."""
    name, _, extra = distribution.rstrip("]").partition("[")
    meta = pyproject(ROOT / name)["project"]
    requirements = meta["optional-dependencies"][extra] if extra else meta["dependencies"]
    for requirement in requirements:
        if requirement_name(requirement) == library:
            spec = re.sub(r"^[A-Za-z0-9._-]+(\[[^]]*\])?", "", requirement)
            return spec.partition(";")[0].strip()
    raise AssertionError(f"{distribution} declares no {library}")


def test_the_documented_versions_are_the_locked_ones() -> None:
    """docs/dependencies.md states each declared range and the version uv.lock holds."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked: dict[str, list[str]] = {}
    for package in lock["package"]:
        locked.setdefault(package["name"], []).append(package.get("version", ""))
    rows = documented_versions()
    assert len(rows) >= 15
    for distribution, library, spec, version in rows:
        assert spec == declared_range(distribution, library), (distribution, library)
        # Where the benchmark peers' fork holds a library back, the tests run the newest.
        newest = max(locked[library], key=lambda v: tuple(int(p) for p in v.split(".")))
        assert version == newest, f"{library}: docs say {version}, uv.lock holds {newest}"


def test_every_declared_library_is_documented() -> None:
    """Each library an in-tree distribution declares has its row in docs/dependencies.md."""
    wanted = set()
    for path in DISTRIBUTIONS[:4]:
        meta = pyproject(path)["project"]
        sections = {meta["name"]: meta["dependencies"]}
        for extra, requirements in meta.get("optional-dependencies", {}).items():
            sections[f"{meta['name']}[{extra}]"] = requirements
        for section, requirements in sections.items():
            wanted |= {
                (section, requirement_name(r))
                for r in requirements
                if not requirement_name(r).startswith("upnext")
            }
    assert {(row[0], row[1]) for row in documented_versions()} == wanted
