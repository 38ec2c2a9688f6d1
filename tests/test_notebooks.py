"""Every role notebook runs top to bottom (fast mode) and its closing asserts hold; every
notebook is numbered, grouped by role and stripped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").rglob("*.ipynb"))


def test_notebooks_are_numbered_grouped_and_stripped():
    assert {p.parent.name for p in NOTEBOOKS} == {"data-owner", "researcher", "compliance-officer", "labs"}
    import nbformat

    for path in NOTEBOOKS:
        assert path.name[:2].isdigit(), f"{path.name}: number notebooks in the order people use them"
        book = nbformat.read(path, as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path}: strip the outputs"
        assert "assert" in code[-1].source, f"{path}: end with asserts on what the notebook showed"
        source = "\n".join(c.source for c in code)
        for name in re.findall(r"^def (\w+)", source, re.MULTILINE):  # only code meant for a hospital
            submitted = re.search(rf"@sy\.syft_function[^\n]*\n(?:[^\n]*\n)*?def {name}\(|\)\(\s*{name}\s*\)", source)
            assert submitted, f"{path}: {name} is a helper; import it from a package instead of defining it in a cell"


ROLES = [p for p in NOTEBOOKS if p.parent.name != "labs"]  # the labs run in test_labs.py (another worker)


@pytest.mark.parametrize("path", ROLES, ids=[f"{p.parent.name}/{p.stem}" for p in ROLES])
def test_notebook_runs(path, run_notebook):
    run_notebook(path)
