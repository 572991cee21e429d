"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from files installed with the service (the
``fastapi-offline`` package's copies of their bundles), so they render on a cluster without
Internet access. FastAPI's own pages load them from a public CDN; each service's
``create_app`` turns those off (``docs_url=None, redoc_url=None``) and includes this router."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
          "redoc.standalone.js": "text/javascript", "favicon.png": "image/png"}
"""The files served under ``/docs/assets/``, with their media types."""
_FOLDER = files("fastapi_offline") / "static"
_CACHE = {"Cache-Control": "public, max-age=86400"}

router = APIRouter(include_in_schema=False)


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over this app's OpenAPI schema, every file from this server."""
    return get_swagger_ui_html(openapi_url="/openapi.json",
                               title=f"{request.app.title} - Swagger UI",
                               swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                               swagger_css_url="/docs/assets/swagger-ui.css",
                               swagger_favicon_url="/docs/assets/favicon.png",
                               oauth2_redirect_url=None)


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    """ReDoc over this app's OpenAPI schema, every file from this server (no web fonts)."""
    return get_redoc_html(openapi_url="/openapi.json", title=f"{request.app.title} - ReDoc",
                          redoc_js_url="/docs/assets/redoc.standalone.js",
                          redoc_favicon_url="/docs/assets/favicon.png", with_google_fonts=False)


@router.get("/docs/assets/{name}")
def asset(name: str) -> Response:
    """One of the bundled files (404 for any other name)."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, f"no asset {name!r}")
    return Response((_FOLDER / name).read_bytes(), media_type=media_type, headers=_CACHE)
