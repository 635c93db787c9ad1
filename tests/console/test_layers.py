"""The console is an edge: it calls services, never the database (STYLE.md, "Edges are thin")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CONSOLE = Path(__file__).resolve().parents[2] / "src" / "tenantry" / "console"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", sorted(CONSOLE.glob("*.py")), ids=lambda p: p.name)
def test_console_modules_do_not_touch_the_database(path: Path) -> None:
    touching = sorted(i for i in _imports(path) if i.split(".")[0] == "sqlalchemy" or i.startswith("tenantry.db"))

    assert touching == []


def test_no_template_has_inline_script_or_style() -> None:
    """The Content-Security-Policy allows neither: an inline one would silently not run."""
    for template in (CONSOLE / "templates").glob("*.html"):
        html = template.read_text()
        assert "<script>" not in html, template.name
        assert "<style" not in html, template.name
        assert " style=" not in html, template.name
