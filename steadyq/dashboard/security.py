"""Who may see the dashboard, and which requests may change something.

* No token configured (allowed only on a loopback bind): every request is let in,
  but only with a loopback ``Host`` header, so that a web page elsewhere cannot
  reach the dashboard through DNS rebinding.
* A token configured: every route but ``/healthz`` needs it, as
  ``Authorization: Bearer …`` or as the ``steadyq_token`` cookie, which a browser
  gets once by opening any page with ``?token=…`` (then redirected to the same page
  without it, so the token does not linger in the address bar or in history).
  Tokens are compared in constant time.
* A POST must also come from the page itself: its ``Origin`` (or, when absent,
  ``Sec-Fetch-Site``) names this origin. A POST authorised by a Bearer header and
  carrying neither is a script's (curl), not a browser's: it is let through.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

COOKIE = "steadyq_token"
OPEN_PATHS = frozenset(("/healthz",))
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null"
    # on a form POST, and the same-origin check below could not tell it apart
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """Whether a bind address only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def tokens_match(given: str | None, token: str) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Guard:
    """ASGI middleware doing the checks above and adding the security headers."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        path = scope.get("path", "")
        refusal = self._refusal(scope, headers, path)
        if refusal is not None:
            await _plain(send, *refusal)
            return
        if self.token is not None and path not in OPEN_PATHS:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if "token" in query and scope["method"] == "GET":
                # a valid token in the URL (the check passed): keep it as a cookie instead
                del query["token"]
                location = path + ("?" + urlencode(query) if query else "")
                cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                if scope.get("scheme") == "https":
                    cookie += "; Secure"
                await _plain(
                    send,
                    303,
                    "see other",
                    [(b"location", location.encode()), (b"set-cookie", cookie.encode())],
                )
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                added = [(k, v) for k, v in SECURITY_HEADERS if k not in have]
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(
        self, scope: Scope, headers: dict[str, str], path: str
    ) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        if path in OPEN_PATHS:
            return None
        if self.token is None:
            if not is_loopback(_host_name(headers.get("host", ""))):
                return 403, "403: this dashboard answers only on loopback addresses", []
        else:
            bearer = None
            auth = headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                bearer = auth[7:].strip()
            cookie = SimpleCookie()
            try:
                cookie.load(headers.get("cookie", ""))
            except Exception:  # a malformed cookie header is no token at all
                cookie = SimpleCookie()
            from_cookie = cookie[COOKIE].value if COOKIE in cookie else None
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if not (
                tokens_match(bearer, self.token)
                or tokens_match(from_cookie, self.token)
                or tokens_match(query.get("token"), self.token)
            ):
                return (
                    401,
                    "401: a token is needed (Authorization: Bearer …, or open ?token=… once)",
                    [(b"www-authenticate", b'Bearer realm="steadyq"')],
                )
        if scope["method"] not in ("GET", "HEAD") and not self._same_origin(scope, headers):
            return 403, "403: a change must come from the dashboard's own page", []
        return None

    def _same_origin(self, scope: Scope, headers: dict[str, str]) -> bool:
        origin = headers.get("origin")
        if origin is not None:
            parts = urlsplit(origin)
            own = scope.get("scheme", "http")
            return parts.scheme == own and parts.netloc == headers.get("host")
        site = headers.get("sec-fetch-site")
        if site is not None:
            return site == "same-origin"
        # neither header: not a browser; only a Bearer header may change things
        return self.token is not None and headers.get("authorization", "")[:7].lower() == "bearer "


async def _plain(
    send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = (text + "\n").encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *(extra or []),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
