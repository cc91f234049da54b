"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) from assets shipped in the package.

FastAPI's default pages load Swagger UI and ReDoc from a CDN, so they are blank on a machine
without internet (a hospital network, a cluster node). idcscan vendors ``swagger-ui-dist``
and ``redoc`` from npm under ``static/vendor/`` (licences kept there, see its README).

The pages are idcscan's own rather than FastAPI's ``get_swagger_ui_html``/``get_redoc_html``,
whose inline ``<script>`` and ``<style>`` the Content-Security-Policy refuses
(``idcscan.server.security``): the options live in data attributes and ``static/docs.js``
starts the viewer. Swagger UI's online spec validator badge is turned off: it would send the
API description to validator.swagger.io. ReDoc writes its styles into ``<style>`` elements at
run time; each ReDoc page gets a fresh nonce that ReDoc stamps on them, so the CSP admits those
(and, by hash, the two fixed ones it writes before it knows the nonce) and no others.
"""

from __future__ import annotations

import html
import secrets

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from idcscan.server.security import REDOC_STYLE_HASHES, content_security_policy

VENDOR = "/static/vendor"
FAVICON = f"{VENDOR}/swagger-ui/favicon-32x32.png"


def _page(title: str, head: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n"
        f'<link rel="icon" href="{FAVICON}">\n{head}</head>\n<body>\n{body}</body>\n</html>\n'
    )


def swagger_page(title: str, openapi_url: str) -> str:
    url = html.escape(openapi_url, quote=True)
    return _page(
        title,
        f'<link rel="stylesheet" href="{VENDOR}/swagger-ui/swagger-ui.css">\n',
        f'<div id="swagger-ui" data-openapi-url="{url}"></div>\n'
        f'<script src="{VENDOR}/swagger-ui/swagger-ui-bundle.js"></script>\n'
        '<script src="/static/docs.js"></script>\n',
    )


def redoc_page(title: str, openapi_url: str, nonce: str) -> str:
    url = html.escape(openapi_url, quote=True)
    return _page(
        title,
        '<link rel="stylesheet" href="/static/docs.css">\n',
        "<noscript>ReDoc needs JavaScript to show the API description; it is also at "
        f'<a href="{url}">{url}</a>.</noscript>\n'
        f'<div id="redoc" data-openapi-url="{url}"></div>\n'
        f'<script src="{VENDOR}/redoc/redoc.standalone.js"></script>\n'
        f'<script src="/static/docs.js" nonce="{nonce}"></script>\n',
    )


def install_docs(app: FastAPI) -> None:
    """Add /docs and /redoc; build the app with ``docs_url=None, redoc_url=None``."""
    openapi_url = app.openapi_url or "/openapi.json"
    title = f"{app.title} {app.version} · API"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(swagger_page(title, openapi_url))

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        nonce = secrets.token_urlsafe(18)
        return HTMLResponse(
            redoc_page(title, openapi_url, nonce),
            headers={"Content-Security-Policy": content_security_policy(
                style_nonce=nonce, style_hashes=REDOC_STYLE_HASHES)},
        )
