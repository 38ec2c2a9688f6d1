"""The isolation machinery itself: the data-only wire format, the import boundary, fail-closed."""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datasites.jobs import wire

ROOT = Path(__file__).resolve().parents[1]


def test_the_wire_format_round_trips_data_and_withholds_objects():
    value = {"w": np.arange(6, dtype="float32").reshape(2, 3), "n": 7, ("a", 1): [1.5, None, True, "x"],
             "b": b"\x00\x01", "t": (1, 2), "s": {3}, "f": [float("nan"), float("inf")], 3: np.int64(4)}
    back = wire.loads(wire.dumps(value))
    assert back["w"].dtype == np.float32 and np.array_equal(back["w"], value["w"])
    assert back[("a", 1)] == [1.5, None, True, "x"] and back["b"] == b"\x00\x01" and back["t"] == (1, 2)
    assert back["s"] == {3} and np.isnan(back["f"][0]) and back["f"][1] == float("inf") and back[3] == 4
    withheld = wire.loads(wire.dumps({"rows": pd.DataFrame({"a": [1]}), "obj": object(),
                                      "strings": np.array(["x"], dtype=object)}))
    assert withheld["rows"] == wire.Withheld("DataFrame") and withheld["obj"].kind == "object"
    assert withheld["strings"].kind.startswith("ndarray")


@pytest.mark.parametrize("payload", [
    pickle.dumps({"a": 1}),                                        # a pickle is never a message
    b"\x00\x00\x00\x02{}\x00\x00\x00\x00" + b"extra",              # trailing bytes
    wire.dumps({"x": 1})[:-1],                                     # truncated
])
def test_the_wire_format_refuses_anything_else(payload):
    with pytest.raises(wire.WireError):
        wire.loads(payload)


def _message(head: dict, blob: bytes) -> bytes:
    import json
    import struct

    text = json.dumps(head).encode()
    return struct.pack(">II", len(text), 1) + text + struct.pack(">Q", len(blob)) + blob


def test_a_lying_array_header_is_refused():
    blob = np.zeros(4).tobytes()
    assert wire.loads(_message({"$": "nd", "dtype": "float64", "shape": [4], "blob": 0}, blob)).shape == (4,)
    with pytest.raises(wire.WireError, match="size"):  # claims 400 million values, carries 4
        wire.loads(_message({"$": "nd", "dtype": "float64", "shape": [400000000], "blob": 0}, blob))
    with pytest.raises(wire.WireError, match="header"):  # object arrays would unpickle
        wire.loads(_message({"$": "nd", "dtype": "object", "shape": [4], "blob": 0}, blob))


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module or "")
    return names


def test_the_worker_package_imports_nothing_from_the_server_side():
    allowed = {"numpy", "pandas", "torch", "opacus", "tenseal", "cryptography", "opendp", "privacy", "secagg", "he",
               "synthetic_data", "datasites.jobs"}
    stdlib = set(sys.stdlib_module_names)
    for path in sorted((ROOT / "datasites" / "jobs").glob("*.py")):
        for name in _imports(path):
            root = name.split(".")[0]
            assert root in stdlib or root in allowed or name.startswith("datasites.jobs"), f"{path.name}: {name}"
    loaded = subprocess.run([sys.executable, "-c", "import sys, datasites.jobs.runner, datasites.jobs.training, "
                             "datasites.jobs.rwe, datasites.jobs.secure_round; print(sorted(m for m in sys.modules "
                             "if m.split('.')[0] in ('syft', 'federation', 'syft_policies', 'scratchnet') or "
                             "m in ('datasites.server', 'datasites.isolation')))"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert loaded.stdout.strip() == "[]", loaded.stderr[-2000:]


def test_the_reviewer_imports_nothing_from_datasites():
    for path in sorted((ROOT / "syft_policies").glob("*.py")):
        tree = ast.parse(path.read_text())
        templates = {n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("medsyft_")}
        inside = {id(n) for f in templates for n in ast.walk(f)}  # request code, run in the worker only
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in inside:
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.startswith("datasites") for n in names), f"{path.name} line {node.lineno}"


def test_without_bubblewrap_the_site_refuses_to_run_code(site, monkeypatch):
    import sys as _sys

    from datasites.isolation import sandbox
    from federation import fetch_result, submit_request
    from scratchnet import approve_anyway
    from syft_policies.quiet import quiet
    from syft_policies.release import ReleasePolicy
    from syft_policies.templates import medsyft_dp_prevalence

    ds = site.researcher()
    cohort = {a.name: a for a in ds.datasets[site.spec.dataset_name].assets}["sepsis_cohort"]
    plan = {"study": "fail-closed", "dataset": site.spec.dataset_name, "epsilon": 0.5}
    with quiet():
        fn = _sys.modules["syft"].syft_function(
            input_policy=_sys.modules["syft"].MixedInputPolicy(client=ds, cohort=cohort,
                                                                plan=_sys.modules["syft"].Constant(val=plan)),
            output_policy=ReleasePolicy(limit=2), name="fail_closed_prevalence")(medsyft_dp_prevalence)
    approve_anyway(site, submit_request(ds, fn))
    spent = site.ledger().spent(site.spec.dataset_name)
    monkeypatch.setenv("PATH", "/nonexistent")  # this host has no bwrap
    sandbox.check.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="bubblewrap is not installed"):
            fetch_result(ds, "fail_closed_prevalence", cohort=cohort)
    finally:
        monkeypatch.undo()
        sandbox.check.cache_clear()
    assert site.ledger().spent(site.spec.dataset_name) == spent  # nothing ran, nothing was paid
    assert fetch_result(ds, "fail_closed_prevalence", cohort=cohort)["epsilon"] == 0.5  # with bwrap back, it runs


@pytest.mark.parametrize("extra, problem", [
    ('[policy]\ncustom_code = "sometimes"\n', "policy.custom_code"),
    ("[isolation]\nmemory_mb = -1\n", "isolation.memory_mb"),
    ("[isolation]\nwall_seconds = nan\n", "isolation.wall_seconds"),
    ("[isolation]\nthreads = 4\n", "unknown key 'isolation.threads'"),
])
def test_site_policy_and_limits_in_the_spec_are_checked(tmp_path, extra, problem):
    from datasites.spec import SPEC_DIR, SpecError, load_spec

    text = (SPEC_DIR / "lyon-chu.toml").read_text().split("[policy]")[0] + extra
    (tmp_path / "site.toml").write_text(text)
    with pytest.raises(SpecError, match=problem.replace(".", r"\.")):
        load_spec(tmp_path / "site.toml")
