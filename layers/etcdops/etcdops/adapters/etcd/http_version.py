"""The cluster version from a member's HTTP ``/version`` (:meth:`EtcdClient.cluster_version`)."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from urllib.parse import urlsplit

from etcdops.adapters.etcd.channel import TlsFiles
from etcdops.domain.errors import EtcdRequestError, EtcdUnavailableError


def cluster_version(endpoint: str, tls: TlsFiles | None, wait: float) -> str:
    """``etcdcluster`` of ``endpoint``'s ``/version`` (over TLS with ``tls``, plain without), all of it
    within ``wait`` seconds."""
    parts = urlsplit(endpoint)
    host, port = parts.hostname or "", parts.port or 2379
    ends = time.monotonic() + wait
    connection: http.client.HTTPConnection | None = None

    def within_deadline(conn: http.client.HTTPConnection) -> None:
        # a socket timeout bounds each read; the deadline bounds the whole exchange
        left = ends - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline exceeded")
        if conn.sock is not None:
            conn.sock.settimeout(left)

    try:
        if tls is None:
            connection = http.client.HTTPConnection(host, port, timeout=wait)
        else:
            context = ssl.create_default_context(cafile=str(tls.ca))
            if tls.cert:
                context.load_cert_chain(str(tls.cert), str(tls.key) if tls.key else None)
            connection = http.client.HTTPSConnection(host, port, timeout=wait, context=context)
        connection.connect()  # TCP and the TLS handshake, each read under the socket timeout
        within_deadline(connection)
        connection.request("GET", "/version")
        within_deadline(connection)
        response = connection.getresponse()
        within_deadline(connection)
        body = response.read(64 * 1024)
    except (OSError, http.client.HTTPException) as exc:
        raise EtcdUnavailableError(f"{endpoint}: /version: {exc}") from exc
    finally:
        if connection is not None:
            connection.close()
    try:
        version = json.loads(body)["etcdcluster"] if response.status == 200 else None
    except (ValueError, KeyError, TypeError):
        version = None
    if not isinstance(version, str) or not version or version == "not_decided":
        raise EtcdRequestError(f"{endpoint}: /version gave no cluster version (HTTP {response.status})")
    return version
