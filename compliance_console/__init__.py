"""The compliance officers' web console of one hospital, and the API the CLI uses.

``create_app(site)`` builds it; ``start_console(site, port)`` serves it on loopback in a
thread (the site's server process does this for every HTTP site); ``ConsoleClient`` is
the small HTTP client behind ``medsyft review``, which imports neither Syft nor PyTorch.
"""

from importlib import import_module

__all__ = ["create_app", "start_console", "ConsoleClient", "ConsoleError"]

_WHERE = {"create_app": "app", "start_console": "serving", "ConsoleClient": "client", "ConsoleError": "client"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'compliance_console' has no attribute {name!r}")
