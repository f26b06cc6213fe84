"""Bearer tokens with roles: viewer < operator < admin. Tokens are kept only as SHA-256 digests."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from gateway.settings import ROLES, Role

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ROLE_KEY: web.RequestKey[Role] = web.RequestKey("vg_role", str)  # type: ignore[arg-type]


def _digest(token: str) -> bytes:
    # A header's bytes that are not UTF-8 reach here as surrogates (aiohttp decodes with surrogateescape): taken
    # as they came, they match no token.
    return hashlib.sha256(token.encode(errors="surrogateescape")).digest()


class Tokens:
    def __init__(self, tokens: list[tuple[str, Role]]) -> None:
        self._roles = {_digest(secret): role for secret, role in tokens}

    def role(self, token: str) -> Role | None:
        # A dict lookup on a digest: the time taken says nothing about how close a guess was.
        return self._roles.get(_digest(token))


INVALID_KEY: web.RequestKey[bool] = web.RequestKey("vg_token_invalid", bool)
TOKENS: web.AppKey[Tokens] = web.AppKey("vg_tokens", Tokens)


def json_error(status: type[web.HTTPException], code: str, message: str, headers: dict[str, str] | None = None,
               **extra: Any) -> web.HTTPException:
    # A message may quote a header, whose bytes that are not UTF-8 reach here as surrogates: shown as U+FFFD.
    message = message.encode(errors="surrogateescape").decode(errors="replace")
    return status(text=orjson.dumps({"error": code, "message": message, **extra}).decode(),
                  content_type="application/json", headers=headers)


async def read_object(request: web.Request, what: str = "a JSON object") -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it (a 413 past the size limit)."""
    try:
        body = await request.read()
    except web.HTTPException:
        raise  # aiohttp's own answer: a body over client_max_size is its 413
    except Exception as exc:  # what the client sent cannot be decoded as its Content-Encoding says
        raise json_error(web.HTTPBadRequest, "bad_body", f"the body cannot be read as sent "
                         f"(Content-Encoding {request.headers.get('Content-Encoding', 'none')}): {exc}") from None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise json_error(web.HTTPBadRequest, "bad_json", f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise json_error(web.HTTPBadRequest, "bad_request", f"the body must be {what}")
    return doc


MAX_INT64 = 2**63 - 1  # versions and sequence numbers (SQLite's integers) are never above it


def query_int(request: web.Request, name: str, default: int | None = None, minimum: int = 0,
              maximum: int = MAX_INT64) -> int:
    """A whole-number query parameter within [minimum, maximum] (the document states the same bounds), its default
    when it is absent, or a 400 saying what is allowed."""
    raw = request.query.get(name)
    if raw is None and default is not None:
        return default
    if raw is None or not (raw.isascii() and raw.isdigit()) or not minimum <= int(raw) <= maximum:
        raise json_error(web.HTTPBadRequest, "bad_request",
                         f"query parameter {name} must be a whole number from {minimum} to {maximum}")
    return int(raw)


def unauthorized(invalid: bool, required: str = "a bearer token is required (Authorization: Bearer TOKEN)"
                 ) -> web.HTTPException:
    """The 401: a token was given and is not valid (`invalid`), or none was given (`required` says how to)."""
    return json_error(web.HTTPUnauthorized, "unauthorized", "the bearer token is not valid" if invalid else required,
                      headers={"WWW-Authenticate": 'Bearer error="invalid_token"' if invalid
                               else 'Bearer realm="venue-gateway"'})


def requires(role: Role) -> Callable[[Handler], Handler]:
    """Wrap a handler so that it answers 401 without a valid token and 403 below `role`."""
    needed = ROLES.index(role)

    def wrap(handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            have: Role | None = request.get(ROLE_KEY)
            if have is None:
                raise unauthorized(request.get(INVALID_KEY, False))
            if ROLES.index(have) < needed:
                raise json_error(web.HTTPForbidden, "forbidden", f"this needs the {role} role; the token is {have}")
            return await handler(request)

        checked.__name__ = handler.__name__
        checked.__doc__ = handler.__doc__
        return checked

    return wrap


def middleware(tokens: Tokens) -> Any:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if header:  # a bad token is refused by the routes that need one; open routes ignore it
            role = tokens.role(token.strip()) if scheme.lower() == "bearer" else None
            if role is None:
                request[INVALID_KEY] = True
            else:
                request[ROLE_KEY] = role
        return await handler(request)

    return authenticate
