"""Sign-in, the session cookie and CSRF tokens of the web console.

The API token a user signs in with is kept in one cookie, ``akece_session``: ``HttpOnly`` (no script
reads it), ``SameSite=Strict`` (no other site's page sends it), ``Path=/app``, ``Secure`` when the
request came over HTTPS, and no ``Max-Age`` (it ends with the browser session). It is never put in
a URL or in the page.

Every change is a ``POST`` carrying a CSRF token derived from the session's API token,
``HMAC-SHA256(sha256(token), "akece-console-csrf")``: a page of another site can neither read it nor
compute it, and any API instance can check it without shared state. A change whose ``Origin``
header names another site is refused too.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from aiohttp import web

from services.shared.auth import Principal, TokenAuthenticator

COOKIE = "akece_session"
COOKIE_PATH = "/app"
CSRF_FIELD = "csrf_token"
_CSRF_CONTEXT = b"akece-console-csrf"


@dataclass(frozen=True)
class Session:
    """A signed-in user: the API token (to call the API with) and who it belongs to."""

    token: str
    principal: Principal

    @property
    def csrf(self) -> str:
        return csrf_token(self.token)

    def home(self) -> str:
        if self.principal.account_id is None:
            return "/app/overview"
        return f"/app/accounts/{self.principal.account_id}/webhooks"


def csrf_token(token: str) -> str:
    return hmac.new(hashlib.sha256(token.encode()).digest(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def current(request: web.Request, auth: TokenAuthenticator) -> Session | None:
    """The request's session, if its cookie holds a token the API accepts."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    principal = auth.authenticate(token)
    return None if principal is None else Session(token, principal)


def same_origin(request: web.Request) -> bool:
    """``Origin`` (sent by browsers on every POST) names this host, or is absent (older clients)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin == f"{request.scheme}://{request.host}"


def csrf_ok(session: Session, form: dict[str, str], request: web.Request) -> bool:
    presented = form.get(CSRF_FIELD, "")
    return same_origin(request) and hmac.compare_digest(presented.encode(), session.csrf.encode())


def sign_in(response: web.StreamResponse, request: web.Request, token: str) -> None:
    response.set_cookie(COOKIE, token, path=COOKIE_PATH, httponly=True, samesite="Strict",
                        secure=request.secure)


def sign_out(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path=COOKIE_PATH)
