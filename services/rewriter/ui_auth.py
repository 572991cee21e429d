"""The job console's sign-in: the service's API key, given once in a form, is exchanged for
an HttpOnly, SameSite=Strict cookie that holds a token derived from it (HMAC), never the key
itself; the key never appears in a URL. Without ``MINDGAP_API_KEY`` the console is open, as
the API is."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request, Response

COOKIE = "mindgap_console"
COOKIE_PATH = "/ui"
SESSION_S = 12 * 3600
"""How long a sign-in lasts."""


def session_token(api_key: str) -> str:
    """The cookie's value for ``api_key`` (changes when the key does)."""
    return hmac.new(api_key.encode(), b"mindgap console session", hashlib.sha256).hexdigest()


def key_matches(sent: str, api_key: str) -> bool:
    """Whether ``sent`` is the API key (constant time)."""
    return secrets.compare_digest(sent.encode(), api_key.encode())


def signed_in(request: Request, api_key: str | None) -> bool:
    """Whether the request carries a valid console cookie (always, without a key)."""
    if not api_key:
        return True
    sent = request.cookies.get(COOKIE, "")
    return secrets.compare_digest(sent.encode(), session_token(api_key).encode())


def set_session(response: Response, request: Request, api_key: str) -> None:
    """Put the session cookie on ``response`` (Secure when served over HTTPS)."""
    response.set_cookie(COOKIE, session_token(api_key), max_age=SESSION_S, path=COOKIE_PATH,
                        httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def end_session(response: Response) -> None:
    """Remove the session cookie."""
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
