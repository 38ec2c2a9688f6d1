"""Every teaching lab runs top to bottom (fast mode) and its closing asserts hold. Apart
from the role notebooks so that the two pytest workers share them."""

from __future__ import annotations

from pathlib import Path

import pytest

LABS = sorted((Path(__file__).resolve().parent.parent / "notebooks" / "labs").glob("*.ipynb"))


@pytest.mark.parametrize("path", LABS, ids=[p.stem for p in LABS])
def test_lab_runs(path, run_notebook):
    run_notebook(path)


def test_every_lab_is_collected():
    assert len(LABS) >= 6
