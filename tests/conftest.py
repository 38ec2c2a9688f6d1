"""Shared fixtures: a small generated network on disk, started as real Syft datasites."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MEDSYFT_HOME", "/nonexistent-use-tmp")


@pytest.fixture(scope="session")
def specs():
    from datasites import shipped_specs

    return shipped_specs()


@pytest.fixture(scope="session")
def network_home(tmp_path_factory, specs):
    """Site data for the three shipped hospitals (small population)."""
    from datasites import ensure_site_data

    home = tmp_path_factory.mktemp("medsyft-home")
    ensure_site_data(specs, home, n_patients=600, seed=11)
    return home


@pytest.fixture(scope="session")
def site(network_home, specs):
    """One in-process hospital datasite (the first shipped spec)."""
    from datasites import start_site

    handle = start_site(specs[0], network_home)
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def network(tmp_path_factory, network_home, specs):
    """Three fresh in-process hospitals on a copy of the session's generated data (studies
    and the secure-aggregation attacks share them: each uses its own study ids)."""
    import shutil

    from datasites import start_site

    home = tmp_path_factory.mktemp("study-home")
    for spec in specs:
        shutil.copytree(network_home / spec.name / "data", home / spec.name / "data")
    sites = {spec.name: start_site(spec, home) for spec in specs}
    for site in sites.values():  # many tests spend here: a budget none of them runs out of by accident
        site.ledger().set_budget(site.spec.dataset_name, 1000.0)
    yield home, sites
    for site in sites.values():
        site.stop()


@pytest.fixture
def run_notebook(monkeypatch):
    """Execute a notebook top to bottom in fast mode; fail on any error output."""
    def run(path):
        import nbformat
        from nbclient import NotebookClient

        monkeypatch.setenv("MEDSYFT_FAST", "1")
        monkeypatch.setenv("MPLBACKEND", "Agg")
        book = nbformat.read(path, as_version=4)
        NotebookClient(book, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}" if errors else ""
    return run
