"""Temp-then-rename lives in one place (weights/atomic.py), so every durable write fsyncs the
file and its folder the same way."""
from __future__ import annotations

import ast
from pathlib import Path

import acerag_megatron
import checkpoints_convert
from acerag_megatron.weights.atomic import write_file

PACKAGE = Path(acerag_megatron.__file__).parent
PACKAGES = (PACKAGE, Path(checkpoints_convert.__file__).parent)
HELPER = PACKAGE / "weights" / "atomic.py"
RENAMES = {"replace", "rename", "renames"}


def _renames(tree: ast.AST) -> list[int]:
    """Lines calling os.replace / os.rename / os.renames or <path>.rename(...) / <path>.replace(x)
    with one argument (str.replace takes two, so one-argument .replace is a Path rename)."""
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        attr, owner = node.func.attr, node.func.value
        if attr not in RENAMES:
            continue
        on_os = isinstance(owner, ast.Name) and owner.id == "os"
        if on_os or attr == "rename" or (attr == "replace" and len(node.args) + len(node.keywords) == 1):
            lines.append(node.lineno)
    return lines


def test_scanner_finds_each_rename_form():
    src = ("import os\nos.replace(a, b)\nos.rename(a, b)\np.rename(q)\np.replace(q)\n"
           "s.replace('x', 'y')\n")
    assert _renames(ast.parse(src)) == [2, 3, 4, 5]


def test_no_rename_outside_atomic_helper():
    found = []
    for path in sorted(p for package in PACKAGES for p in package.rglob("*.py")):
        if path == HELPER:
            continue
        found += [f"{path.relative_to(PACKAGE.parent)}:{line}" for line in _renames(ast.parse(path.read_text()))]
    assert not found, "temp-then-rename outside acerag_megatron/weights/atomic.py: " + ", ".join(found)


def test_write_file_text_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.json"
    write_file(target, "first\n")
    write_file(target, "zweite Zeile äö\n")
    assert target.read_text(encoding="utf-8") == "zweite Zeile äö\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
