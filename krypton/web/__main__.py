"""`python -m krypton.web [--host 127.0.0.1] [--port 8000] [--workers 1]`: the web demo without the CLI."""

from __future__ import annotations

import argparse

from krypton.web import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m krypton.web", description="krypton's interactive web demo")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1: this machine)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--workers", type=int, default=1, help="explanations run at once (default: 1)")
    args = parser.parse_args(argv)
    serve(args.host, args.port, workers=args.workers)


if __name__ == "__main__":
    main()
