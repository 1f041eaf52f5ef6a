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
    app = create_app(workers=workers, max_waiting=max_waiting, allowed_hosts=allowed)
    shown = f"[{host}]" if ":" in host else host
    print(f"krypton web demo: http://{shown}:{port}/  (Ctrl+C to stop)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
