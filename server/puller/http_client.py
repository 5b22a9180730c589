"""Open a GET with the standard library's http.client: redirects, TLS, proxies, credential hygiene.

Why not urllib3, httpx or aiohttp: measured on loopback (bench/puller_throughput.py
--clients, docs/benchmarks.md), http.client's `readinto` fills our block
straight from the socket, where urllib3 copies every block once more (0.43 vs
0.55 CPU-s per GiB) and httpx and aiohttp spend 2-6x the CPU per byte. The
body is the hot path of the puller; the rest is simple:
- TLS verifies certificates and host names (ssl.create_default_context honours
  SSL_CERT_FILE / SSL_CERT_DIR for private CAs);
- redirects are followed up to 5 times, and Authorization is dropped when one
  leaves the origin (the Hub's CDN, presigned storage URLs);
- HTTPS_PROXY / HTTP_PROXY / NO_PROXY are honoured (CONNECT tunnel for https).
"""

from __future__ import annotations

import http.client
import ssl
import urllib.request
from collections.abc import Mapping
from urllib.parse import urljoin, urlsplit

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SSL_CONTEXT = ssl.create_default_context()


class TransportError(Exception):
    """The request could not be made or answered; `retryable` says whether trying again may help."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def open_get(
    url: str, headers: Mapping[str, str], connect_timeout: float, read_timeout: float
) -> http.client.HTTPResponse:
    """GET `url`, following redirects; the caller reads (and closes) the final response."""
    headers = dict(headers)
    for _ in range(MAX_REDIRECTS + 1):
        response = _request(url, headers, connect_timeout, read_timeout)
        location = response.getheader("Location")
        if response.status not in _REDIRECTS or not location:
            return response
        response.close()
        target = urljoin(url, location)
        if _origin(target) != _origin(url):
            headers = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "cookie")}
        url = target
    raise TransportError(f"more than {MAX_REDIRECTS} redirects", retryable=False)


def _request(
    url: str, headers: dict[str, str], connect_timeout: float, read_timeout: float
) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TransportError(f"cannot follow a redirect to a {parts.scheme or 'relative'} URL", retryable=False)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    connection = _connection(parts.scheme, parts.hostname, parts.port, connect_timeout)
    if connection.host != parts.hostname and parts.scheme == "http":
        target = url  # a plain-HTTP proxy takes the absolute URL
    try:
        connection.connect()
        assert connection.sock is not None
        connection.sock.settimeout(read_timeout)  # from now on the timeout measures a stall
        connection.request("GET", target, headers={"Accept-Encoding": "identity", **headers})
        return connection.getresponse()
    except ssl.SSLCertVerificationError as err:
        connection.close()
        raise TransportError(f"TLS certificate rejected: {err.verify_message}", retryable=False) from None
    except TimeoutError:
        connection.close()
        raise TransportError("timed out waiting for the server") from None
    except (OSError, http.client.HTTPException) as err:
        connection.close()
        raise TransportError(f"cannot connect ({type(err).__name__})") from None


def _connection(scheme: str, host: str, port: int | None, timeout: float) -> http.client.HTTPConnection:
    proxy = None if urllib.request.proxy_bypass_environment(host) else urllib.request.getproxies_environment().get(scheme)
    if proxy is None:
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=_SSL_CONTEXT)
        return http.client.HTTPConnection(host, port, timeout=timeout)
    proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if scheme == "https":
        connection = http.client.HTTPSConnection(
            proxy_parts.hostname or "", proxy_parts.port, timeout=timeout, context=_SSL_CONTEXT
        )
        connection.set_tunnel(host, port)
        return connection
    return http.client.HTTPConnection(proxy_parts.hostname or "", proxy_parts.port, timeout=timeout)


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname, parts.port or default
