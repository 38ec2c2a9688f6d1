"""The demo study over a bad network: ratios measured in one run on this machine.

    .venv/bin/python benchmarks/network.py [--patients 4000] [--rounds 8] [--latency 0.1] [--resets 0.05]

Runs the sepsis demo with every hospital as its own HTTP server twice: once with the
researcher talking to the hospitals directly, once through a fault-injecting TCP proxy in
front of each (``tests/faults/proxy.py``: ``--latency`` seconds on every chunk each way,
``--resets`` of new connections reset). Prints both AUROCs (each run draws fresh secret DP
noise, so they differ by that noise only), the wall times and their ratio, and how many
connections the proxies reset (the study's retries absorbed them).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _run(home: Path, args, proxies: dict | None) -> tuple[dict, float]:
    from federation.demo import run_demo

    def connect(site):
        if proxies is None:
            return site.researcher()
        from tests.faults.proxy import FaultProxy

        proxy = proxies[site.spec.name] = FaultProxy(site.port, seed=len(proxies)).start()
        for attempt in range(10):  # the login meets the same resets
            try:
                client = dataclasses.replace(site, port=proxy.port).researcher()
                break
            except Exception:  # noqa: BLE001
                if attempt == 9:
                    raise
                time.sleep(1)
        proxy.latency, proxy.reset_rate = args.latency, args.resets
        return client

    started = time.monotonic()
    try:
        summary = run_demo(home, n_patients=args.patients, rounds=args.rounds, servers=True, retries=5, console=False,
                           results=home / ("results-proxy" if proxies is not None else "results"),
                           echo=lambda *_: None, progress=False, connect=connect)
    finally:
        for proxy in (proxies or {}).values():
            proxy.stop()
    return summary, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--resets", type=float, default=0.05)
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    home = Path(tempfile.mkdtemp(prefix="medsyft-network-"))
    clean, clean_s = _run(home, args, None)
    proxies: dict = {}
    lossy, lossy_s = _run(home, args, proxies)
    print(f"demo over HTTP, {args.patients} patients, {args.rounds} rounds")
    print(f"  direct:  AUROC {clean['auroc']['federated_dp']:.3f} in {clean_s:.0f} s")
    print(f"  through the proxy ({args.latency * 1000:.0f} ms per chunk, {args.resets:.0%} of connections reset): "
          f"AUROC {lossy['auroc']['federated_dp']:.3f} in {lossy_s:.0f} s "
          f"({sum(p.connections for p in proxies.values())} connections, "
          f"{sum(p.resets for p in proxies.values())} reset)")
    print(f"  time ratio {lossy_s / clean_s:.2f}; AUROC difference "
          f"{abs(lossy['auroc']['federated_dp'] - clean['auroc']['federated_dp']):.3f}")


if __name__ == "__main__":
    main()
