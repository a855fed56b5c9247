"""Sources behind a URL: fail in seconds, with one line, where there is no network.

Without this, gcsfs retries a dead connection for about 85 s and then prints ten chained tracebacks. Before any
remote read, `require_reachable(url)` opens one connection to the store's endpoint (with a TLS handshake for HTTPS
endpoints; plain TCP to an HTTPS proxy) in a thread given `timeout` seconds in all, name lookup included.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from urllib.parse import urlsplit

from .errors import DataError

PROBE_TIMEOUT_S = float(os.environ.get("FORGE_PROBE_TIMEOUT_S", 5))
LOCAL_PROTOCOLS = ("file", "local", "memory")


def protocol(path: str) -> str | None:
    """The URL scheme of `path` ("gs", "s3", "https", ...), or None for a local path."""
    return path.split("://", 1)[0].lower() if "://" in path else None


def is_remote(path: str) -> bool:
    return protocol(path) not in (None, *LOCAL_PROTOCOLS)


def _host_port(url: str, default_port: int = 443) -> tuple[str, int, bool] | None:
    """(host, port, TLS?) of a URL (https when it has no scheme)."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if not parts.hostname:
        return None
    tls = parts.scheme == "https"
    return parts.hostname, parts.port or (443 if tls else 80 if parts.scheme == "http" else default_port), tls


def endpoint(url: str) -> tuple[str, int, bool] | None:
    """(host, port, TLS?) that reading `url` connects to first: the HTTPS proxy when one is set, else the store's
    service endpoint; None when it cannot be told (then nothing is probed)."""
    proto = protocol(url)
    if not is_remote(url):
        return None
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy:
        found = _host_port(proxy, 3128)
        return (found[0], found[1], False) if found else None  # the proxy speaks plain HTTP (CONNECT)
    if proto in ("http", "https"):
        return _host_port(url)
    if proto in ("gs", "gcs"):
        return _host_port(os.environ.get("STORAGE_EMULATOR_HOST") or "https://storage.googleapis.com")
    if proto in ("s3", "s3a"):
        return _host_port(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                          or "https://s3.amazonaws.com")
    if proto in ("az", "abfs", "abfss") and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        return _host_port("https://" + url.split("://", 1)[1].split("/", 1)[0].split("@", 1)[1])
    return None


def _connect(host: str, port: int, tls: bool, timeout: float, outcome: list) -> None:
    """Open a TCP connection and, for TLS endpoints, finish a handshake (a firewall or sandbox that accepts every
    connection but forwards nothing fails here). Certificates are not checked: only that a server answers."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if tls:
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                context.wrap_socket(sock, server_hostname=host).close()
        outcome.append(None)
    except OSError as exc:  # ssl.SSLError and socket.timeout are OSErrors
        outcome.append(exc.strerror or str(exc) or exc.__class__.__name__)


def require_reachable(url: str, key: str = "data.source", timeout: float | None = None) -> None:
    """Raise DataError (one line) unless the endpoint of `url` accepts a connection within `timeout` seconds."""
    where = endpoint(url)
    if where is None:
        return
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    outcome: list = []
    probe = threading.Thread(target=_connect, args=(*where, timeout, outcome), daemon=True)
    probe.start()
    probe.join(timeout + 0.5)  # the name lookup is not bounded by the socket timeout: the join bounds it
    if outcome == [None]:
        return
    why = outcome[0] if outcome else f"no answer within {timeout:g} s"
    raise DataError(
        f"params.yaml: {key} {url!r}: cannot reach {where[0]}:{where[1]} ({why}); is there a network here? "
        f"Fix: run where {where[0]} is reachable (login nodes usually are, compute nodes often not), or copy the "
        f"data to a local folder and set {key} to that path."
    )
