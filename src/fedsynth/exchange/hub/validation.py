"""Request-validation errors that can always be rendered.

FastAPI's default 422 echoes each offending ``input``; when that input is ``NaN`` or holds a lone
surrogate, rendering the 422 itself fails (strict JSON, UTF-8) and the client gets a 500. The
routers use :class:`SafeErrorsRoute`, whose 422 names the field (``loc``) and the reason but never
echoes the input."""

# no `from __future__ import annotations`: FastAPI inspects these signatures

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response


def safe_errors(errors: Any) -> list[dict[str, Any]]:
    """Pydantic's error list without ``input``/``ctx``/``url``; ``loc`` and ``msg`` ASCII-safe."""
    out = []
    for e in errors:
        loc = [p if isinstance(p, int) else ascii(str(p))[1:-1] for p in e.get("loc", ())]
        out.append({"type": str(e.get("type", "")), "loc": loc, "msg": ascii(str(e.get("msg", "")))[1:-1]})
    return out


class SafeErrorsRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as e:
                return JSONResponse({"detail": safe_errors(e.errors())}, status_code=422)

        return route
