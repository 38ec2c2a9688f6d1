"""Serve one hospital datasite over HTTP on loopback: ``python -m datasites.serve``.

Started by ``medsyft sites up`` (each hospital its own process); provisions the site
in-process, then serves Syft's API with uvicorn until SIGTERM.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .isolation import harden
from .logins import client_address
from .provision import provision
from .server import LOOPBACK, open_datasite
from .spec import load_spec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    args = parser.parse_args(argv)

    import uvicorn
    from fastapi import APIRouter, FastAPI
    from syft.server.routes import make_routes

    os.umask(0o077)  # everything this hospital's process writes is its own
    spec = load_spec(args.spec)
    site_dir = args.home / spec.name
    server = open_datasite(spec, site_dir)
    provision(server, spec, site_dir)
    harden(site_dir)
    app = FastAPI(title=spec.name)

    @app.middleware("http")
    async def remember_client(request, call_next):  # logins are slowed down per address too
        token = client_address.set(request.client.host if request.client else "unknown")
        try:
            return await call_next(request)
        finally:
            client_address.reset(token)

    router = APIRouter()
    router.include_router(make_routes(worker=server))
    app.include_router(router, prefix="/api/v2")
    print(f"{spec.name}: serving on http://{LOOPBACK}:{args.port}", flush=True)
    uvicorn.run(app, host=LOOPBACK, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
