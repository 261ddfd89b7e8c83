"""The runtime stands apart: no module of stream/ or engines/ imports training, measurement or
test code (tools/, meshstream_tools, tests/), and the tools never import the tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

RUNTIME_PACKAGES = ("stream", "engines")
NOT_FOR_THE_RUNTIME = ("tools", "meshstream_tools", "tests", "conftest")


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a Python file under ``root``, at any depth (inside
    functions too); relative imports resolved against the file's package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = path.relative_to(root).parent.parts
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def offending_imports(folders: tuple[str, ...], forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    """"path:line imports module" for each import of a top-level name in ``forbidden`` by a
    Python file under root/folder."""
    lines = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            for line, module in imported_modules(path, root):
                if module.split(".")[0] in forbidden:
                    lines.append(f"{path.relative_to(root)}:{line} imports {module}")
    return lines


def test_runtime_modules_import_nothing_from_tools_or_tests():
    assert sum(1 for folder in RUNTIME_PACKAGES for _ in (ROOT / folder).rglob("*.py")) > 40
    assert offending_imports(RUNTIME_PACKAGES, NOT_FOR_THE_RUNTIME) == []


def test_tools_import_nothing_from_tests_and_edit_no_import_path():
    assert offending_imports(("tools",), ("tests", "conftest")) == []
    edits = [f"{path.relative_to(ROOT)}" for path in sorted((ROOT / "tools").rglob("*.py"))
             if "sys.path" in path.read_text(encoding="utf-8")]
    assert edits == []


@pytest.mark.parametrize("source, expected", [
    ("from meshstream_tools import mocap\n", "meshstream_tools"),
    ("def f():\n    import tests.conftest\n", "tests.conftest"),
    ("import importlib\nimportlib.import_module('tools.x')\n", "tools.x"),
    ("from ...tests import helpers\n", "imports tests"),
])
def test_the_check_sees_imports_wherever_they_are(tmp_path, source, expected):
    """The checker itself, on a real file tree: a forbidden import in a runtime module is caught,
    an allowed one is not."""
    (tmp_path / "engines" / "sub").mkdir(parents=True)
    (tmp_path / "engines" / "sub" / "probe.py").write_text(source)
    (tmp_path / "engines" / "fine.py").write_text("import numpy\nfrom engines import rotations\n")
    found = offending_imports(("engines",), NOT_FOR_THE_RUNTIME, root=tmp_path)
    assert len(found) == 1 and found[0].startswith("engines/sub/probe.py:") and found[0].endswith(expected)


def test_tests_import_the_tools_by_their_package_name():
    """``meshstream_tools``, installed with the project, not the folder ``tools`` as a namespace."""
    assert offending_imports(("tests",), ("tools",)) == []
