"""A member's Prometheus ``/metrics``, fetched from its client URL (HTTPS with our client certificate
when the cluster uses TLS), and what a failure to fetch it means in our errors."""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request

from etcdops.adapters.etcd.client import TlsFiles
from etcdops.domain.errors import EtcdTimeoutError, EtcdUnavailableError

__all__ = ["MAX_METRICS_BYTES", "fetch_metrics"]

MAX_METRICS_BYTES = 8 * 1024 * 1024  # etcd's answer is ~100 KiB; more is not a member's metrics


def _context(tls: TlsFiles) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=str(tls.ca))
        if tls.cert is not None:
            context.load_cert_chain(str(tls.cert), str(tls.key) if tls.key else None)
    except (OSError, ssl.SSLError) as exc:
        raise EtcdUnavailableError(f"TLS files for /metrics unusable: {exc}") from exc
    return context


def fetch_metrics(client_url: str, tls: TlsFiles | None, timeout: float) -> str:
    """The text of ``<client_url>/metrics``; :class:`EtcdTimeoutError` when it does not answer within
    ``timeout`` seconds, :class:`EtcdUnavailableError` for any other failure (named, one line)."""
    url = client_url.rstrip("/") + "/metrics"
    context = _context(tls) if tls is not None and url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            body: bytes = response.read(MAX_METRICS_BYTES + 1)
    except TimeoutError as exc:
        raise EtcdTimeoutError(f"{url}: no answer within {timeout:.1f} s") from exc
    except urllib.error.HTTPError as exc:
        raise EtcdUnavailableError(f"{url}: HTTP {exc.code}") from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise EtcdTimeoutError(f"{url}: no answer within {timeout:.1f} s") from exc
        raise EtcdUnavailableError(f"{url}: {exc.reason}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise EtcdUnavailableError(f"{url}: {type(exc).__name__}: {exc}") from exc
    if len(body) > MAX_METRICS_BYTES:
        raise EtcdUnavailableError(f"{url}: the answer is larger than {MAX_METRICS_BYTES} bytes")
    return body.decode("utf-8", errors="replace")
