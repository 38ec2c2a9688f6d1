"""Fault tests: hospitals served over HTTP in their own processes, each in a home of its own."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from datasites import load_spec
from datasites.spec import SPEC_DIR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def make_home(tmp_path_factory, network_home):
    """``make_home(site, port=None)``: a fresh home holding one hospital's generated data and a
    specs folder with only its spec, on ``port`` (a free one by default). Returns
    ``(spec, home, env)``, ``env`` carrying ``MEDSYFT_SPECS`` and ``MEDSYFT_HOME`` for the CLI."""

    def make(site: str = "boston-general", port: int | None = None):
        root = tmp_path_factory.mktemp(f"faults-{site}")
        text = (SPEC_DIR / f"{site}.toml").read_text()
        shipped = load_spec(SPEC_DIR / f"{site}.toml").port
        (root / "specs").mkdir()
        (root / "specs" / f"{site}.toml").write_text(text.replace(f"port = {shipped}", f"port = {port or free_port()}"))
        spec = load_spec(root / "specs" / f"{site}.toml")
        home = root / "home"
        shutil.copytree(Path(network_home) / site / "data", home / site / "data")
        env = {**os.environ, "MEDSYFT_SPECS": str(root / "specs"), "MEDSYFT_HOME": str(home)}
        return spec, home, env

    return make


@pytest.fixture(scope="module")
def datasite(make_home):
    """One hospital served over HTTP (``start_site(mode="http")``), stopped after the module."""
    from datasites import start_site, stop_site

    spec, home, _ = make_home()
    handle = start_site(spec, home, mode="http")
    yield handle
    stop_site(spec, home)
