"""How long the officer's ``medsyft`` commands take against a running HTTP site.

    .venv/bin/python benchmarks/cli.py [--before REV] [--repeat 3]

Starts one hospital (its own home and port under a temp folder), has the researcher
submit two studies (template requests) and two custom requests, and times each command
as a fresh process, the way an officer runs it: median of ``--repeat`` runs for the
read-only ones, one run for each decision. ``--before REV`` times the same commands of
an older commit (checked out in a temporary git worktree, run with this venv) on the
same site, for a before / after table; the console's JSON API is what made them fast.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed(cmd: list[str], env: dict, cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed: {(proc.stderr or proc.stdout).strip()[:300]}")
    return seconds, proc.stdout


def _submit(spec, home: Path, workdir: Path) -> dict[str, list[str]]:
    """Two template studies and two custom requests, as the site's researcher."""
    import syft as sy

    from datasites import connect
    from federation import Study, StudyPlan, submit_request
    from syft_policies.quiet import quiet
    from syft_policies.release import ReleasePolicy

    site = connect(spec, home)
    ds = site.researcher()
    ids: dict[str, list[str]] = {"study": [], "custom": []}
    for name in ("bench-a", "bench-b"):
        plan = StudyPlan(study=name, sites=[spec.name], rounds=1, epsilon=1.0, model="mlp")
        study = Study(plan, {spec.name: ds}, directory=workdir / name, echo=lambda *_: None, progress=False)
        study.submit()
        ids["study"].append(name)
    patients = ds.datasets[spec.dataset_name].assets["patients"]
    with quiet():
        @sy.syft_function(input_policy=sy.ExactMatch(patients=patients), output_policy=ReleasePolicy(limit=1))
        def bench_count(patients):
            return {"n": 1}

        @sy.syft_function(input_policy=sy.ExactMatch(patients=patients), output_policy=ReleasePolicy(limit=1))
        def bench_rows(patients):
            return patients.head(3)
    ids["custom"] = [submit_request(ds, bench_count), submit_request(ds, bench_rows)]
    return ids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a git revision whose CLI to time too (e.g. e9a3346)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    from datasites import load_spec, stop_site
    from datasites.spec import SPEC_DIR

    tmp = Path(tempfile.mkdtemp(prefix="medsyft-bench-cli-"))
    specs = tmp / "specs"
    specs.mkdir()
    port = _free_port()
    text = (SPEC_DIR / "lyon-chu.toml").read_text().replace("port = 8102", f"port = {port}")
    (specs / "lyon-chu.toml").write_text(text + "")
    spec = load_spec(specs / "lyon-chu.toml")
    home = tmp / "home"
    env = {**os.environ, "MEDSYFT_SPECS": str(specs), "MEDSYFT_HOME": str(home)}
    medsyft = [sys.executable, "-m", "federation.cli"]
    worktree = None
    try:
        print(f"starting {spec.name} on port {port} (generates its data once)...", flush=True)
        _timed(medsyft + ["data", "generate", "--patients", "600"], env, ROOT)
        _timed(medsyft + ["sites", "up"], env, ROOT)
        ids = _submit(spec, home, tmp)
        site = ["--site", spec.name]
        reads = {
            "medsyft --help": ["--help"],
            "review list": ["review", "list", *site],
            "review list --all": ["review", "list", "--all", *site],
            "review show ID": ["review", "show", ids["custom"][0][:10], *site],
            "budget show": ["budget", "show", *site],
            "audit verify": ["audit", "verify", *site],
        }
        govern = ["--purpose", "benchmark", "--irb", "IRB-BENCH-1"]
        versions = {"after": (medsyft, env)}
        if args.before:
            worktree = tmp / "before"
            subprocess.run(["git", "worktree", "add", "-q", "--detach", str(worktree), args.before], cwd=ROOT,
                           check=True)
            versions = {"before": (medsyft, {**env, "PYTHONPATH": str(worktree)}), **versions}
        times: dict[str, dict[str, float]] = {}
        for version, (cmd, venv) in versions.items():
            cwd = worktree if version == "before" else ROOT
            for label, extra in reads.items():
                runs = [_timed(cmd + extra, venv, cwd)[0] for _ in range(args.repeat)]
                times.setdefault(label, {})[version] = statistics.median(runs)
        # one decision each, so each version decides different requests
        decisions = {"after": [("review approve ID (custom, 1st of 2 officers)", ["review", "approve", ids["custom"][0],
                                                                               *site, *govern]),
                               ("review deny ID", ["review", "deny", ids["custom"][1], *site, "--reason", "rows"]),
                               ("review approve --study NAME (2 requests)",
                                ["review", "approve", "--study", ids["study"][0], *site, *govern])]}
        if args.before:
            from datasites import connect
            from syft_policies import list_requests

            officer = connect(spec, home).officer()
            study_b = [r.id for r in list_requests(officer) if (r.plan or {}).get("study") == ids["study"][1]]
            decisions["before"] = [("review approve ID (template)", ["review", "approve", study_b[0], *site, *govern]),
                                   ("review approve ID (template), 2nd", ["review", "approve", study_b[1], *site,
                                                                          *govern])]
        for version, steps in decisions.items():
            cmd, venv = versions[version]
            cwd = worktree if version == "before" else ROOT
            for label, extra in steps:
                times.setdefault(label, {})[version] = _timed(cmd + extra, venv, cwd)[0]
        cols = list(versions)
        print(f"\n{'command':<46}" + "".join(f"{c:>10}" for c in cols) + "   (seconds, 2 cores; fresh process each)")
        for label, row in times.items():
            print(f"{label:<46}" + "".join(f"{row[c]:>10.2f}" if c in row else f"{'-':>10}" for c in cols))
    finally:
        stop_site(spec, home)
        if worktree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
