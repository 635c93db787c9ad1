"""Architecture rules as tests, so they cannot drift from STYLE.md and ARCHITECTURE.md."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "tenantry"
DOMAINS = ("identity", "tenancy", "events", "webhooks", "billing", "ratelimit", "realtime", "analytics")
EDGE_MODULES = ("fastapi", "starlette", "tenantry.http", "tenantry.app", "tenantry.cli")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _modules(folder: str) -> list[Path]:
    return sorted((SRC / folder).rglob("*.py"))


def _is_rest_edge(path: Path) -> bool:
    """REST routes live in a domain's ``api.py``, or ``<concept>_api.py`` when one file would outgrow a screen."""
    return path.name == "api.py" or path.name.endswith("_api.py")


def _hits(imports: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(i for i in imports if any(i == p or i.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("path", _modules("core") + _modules("db"), ids=lambda p: str(p.relative_to(SRC)))
def test_the_kernel_imports_no_domain(path: Path) -> None:
    if "migrations" in path.parts:
        return  # the migration environment must know every table
    assert _hits(_imports(path), tuple(f"tenantry.{d}" for d in DOMAINS)) == []


@pytest.mark.parametrize(
    "path",
    [p for d in DOMAINS if (SRC / d).exists() for p in _modules(d) if not _is_rest_edge(p)],
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_domains_never_import_an_edge(path: Path) -> None:
    assert _hits(_imports(path), EDGE_MODULES) == []


@pytest.mark.parametrize(
    "path", sorted(p for p in SRC.rglob("*.py") if _is_rest_edge(p)), ids=lambda p: str(p.relative_to(SRC))
)
def test_rest_routes_do_not_touch_the_database(path: Path) -> None:
    assert _hits(_imports(path), ("sqlalchemy", "tenantry.db")) == []


def test_no_module_is_named_for_nothing() -> None:
    vague = [p for p in SRC.rglob("*.py") if p.stem in ("utils", "helpers", "misc", "common")]
    assert vague == []


def test_tables_are_named_for_their_domain() -> None:
    from tenantry.db.base import Base

    for module in ("events", "identity", "tenancy"):
        __import__(f"tenantry.{module}.models")
    for table in Base.metadata.sorted_tables:
        domain = table.name.split("_", 1)[0]
        assert domain in DOMAINS, table.name
