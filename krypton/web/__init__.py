"""Interactive web demo: `krypton serve` (or `python -m krypton.web`) opens a page to explain predictions.

FastAPI serves one static page written in plain JavaScript (no build step, nothing to install for the
browser); explanations run in a bounded job queue and stream their heat maps to the page as they fill in.
"""

from __future__ import annotations

import sys
from typing import Any

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def create_app(*args: Any, **kwargs: Any) -> Any:
    """The FastAPI app (see `krypton.web.app.create_app`); imported lazily so `import krypton` stays light."""
    from krypton.web.app import create_app as make

    return make(*args, **kwargs)


class ServeError(ValueError):
    """The demo cannot listen where asked; the message says why and what to do."""


def _check_port(host: str, port: int) -> None:
    """Fail before printing a URL that would not work: bad port numbers, ports already in use."""
    import socket

    if not 1 <= port <= 65535:
        raise ServeError(f"--port {port}: a port number is between 1 and 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = "already in use" if exc.errno in (48, 98) else (exc.strerror or str(exc))
            raise ServeError(f"cannot listen on {host}:{port}: {reason}; choose another with --port") from None


def serve(host: str = "127.0.0.1", port: int = 8000, *, workers: int = 1, max_waiting: int = 8) -> None:
    """Run the web demo until interrupted. Listens on 127.0.0.1 only unless another `host` is given."""
    import uvicorn

    allowed = None
    if host not in LOOPBACK:
        print(
            f"krypton: warning: listening on {host}: anyone who can reach this machine can use the demo "
            "(there is no login)",
            file=sys.stderr,
        )
        allowed = ["*"]
    _check_port(host, port)
    app = create_app(workers=workers, max_waiting=max_waiting, allowed_hosts=allowed)
    shown = f"[{host}]" if ":" in host else host
    print(f"krypton web demo: http://{shown}:{port}/  (Ctrl+C to stop)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
