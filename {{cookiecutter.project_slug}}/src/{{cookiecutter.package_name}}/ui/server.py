"""`<package> ui`: configure, launch, watch and compare experiments in the browser.

    <package> ui                      serve this project on http://127.0.0.1:8765/?token=... and open a browser
    <package> ui --port 0 --no-browser   any free port; print the address only (on a login node)

On a cluster login node, forward the port from your laptop and open the printed address there:

    ssh -L 8765:127.0.0.1:8765 user@login-node

The token (a new one at every start) is the password: anyone with the address can run the project's commands.
The app listens on 127.0.0.1 only unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import socket
import sys
import threading
import webbrowser

from ..errors import ForgeError
from ..profiles import project_root

DEFAULT_PORT = 8765


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, made here so the printed port is the real one (--port 0) and a busy port is a clear
    error before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ForgeError(f"cannot listen on {host}:{port} ({exc.strerror}). Fix: another program (another `ui`?) "
                         f"uses it: pass --port {port + 1}, or --port 0 for any free port.") from None
    sock.listen(128)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _hosts(host: str) -> set[str] | None:
    """Names a browser may put in the Host header: loopback always, the --host given; None (any) for 0.0.0.0."""
    if host in ("0.0.0.0", "::"):
        return None
    return {host, f"[{host}]"} if ":" in host else {host}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ui", description=__doc__.split("\n\n")[0],
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; reach it with ssh -L)")
    parser.add_argument("--no-browser", action="store_true", help="print the address, do not open a browser")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: a port is 0 to 65535")

    import uvicorn

    from .app import create_app

    root = project_root()
    sock = _bind(args.host, args.port)
    port = sock.getsockname()[1]
    token = secrets.token_urlsafe(24)
    shown_host = args.host if _is_loopback(args.host) or args.host not in ("0.0.0.0", "::") else socket.getfqdn()
    shown_host = f"[{shown_host}]" if ":" in shown_host else shown_host
    url = f"http://{shown_host}:{port}/?token={token}"
    app = create_app(root, token, port, _hosts(args.host))
    package = __package__.split(".")[0]
    print(f"{package} ui: {root}\n\n    {url}\n\n"
          f"On a remote machine (login node): run `ssh -L {port}:127.0.0.1:{port} user@host` on your laptop, then\n"
          "open the address above there. Ctrl-C stops the app (queued experiments and started jobs go on).",
          flush=True)
    if not _is_loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who can reach this port and has the token can run this "
              "project's commands.", file=sys.stderr, flush=True)
    if not args.no_browser:
        threading.Timer(0.5, webbrowser.open, [url]).start()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
