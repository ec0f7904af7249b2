"""The OpenAPI schema as served under the app's mount path, and the interactive API docs (/docs, /redoc), their
scripts and styles pinned to one version each and checked by the browser against an integrity hash (Subresource
Integrity): a CDN that served other bytes would serve nothing.

The hashes are those of the files in the npm packages, which the CDN serves unchanged. To move to a newer version,
take its files from the npm package and compute `openssl dgst -sha384 -binary FILE | openssl base64 -A`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from user_service.api.openapi import served_under

SWAGGER_UI_VERSION = "5.35.0"
REDOC_VERSION = "2.5.4"
_CDN = "https://cdn.jsdelivr.net/npm"


@dataclass(frozen=True)
class Asset:
    url: str
    integrity: str

    def attributes(self, url_attribute: str) -> str:
        return (
            f'{url_attribute}="{html.escape(self.url)}" integrity="{self.integrity}" crossorigin="anonymous" '
            'referrerpolicy="no-referrer"'
        )


SWAGGER_JS = Asset(
    f"{_CDN}/swagger-ui-dist@{SWAGGER_UI_VERSION}/swagger-ui-bundle.js",
    "sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9",
)
SWAGGER_CSS = Asset(
    f"{_CDN}/swagger-ui-dist@{SWAGGER_UI_VERSION}/swagger-ui.css",
    "sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I",
)
REDOC_JS = Asset(
    f"{_CDN}/redoc@{REDOC_VERSION}/bundles/redoc.standalone.js",
    "sha384-w447zOpYfw/1Tv/5AK9NfHTlQIqE3RVR6KY62jCyy9zNDgO64cMwGGP1Fj0zJVf5",
)
ASSETS = (SWAGGER_JS, SWAGGER_CSS, REDOC_JS)


def _js_string(value: str) -> str:
    """A single-quoted JavaScript string that cannot end the string or the script element."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("<", "\\u003c").replace("\n", "\\n")
    return f"'{escaped}'"


def swagger_page(title: str, openapi_url: str) -> str:
    return f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{html.escape(title)}</title>
<link rel="stylesheet" {SWAGGER_CSS.attributes("href")}>
</head>
<body>
<div id="swagger-ui"></div>
<script {SWAGGER_JS.attributes("src")}></script>
<script>
const ui = SwaggerUIBundle({{
    url: {_js_string(openapi_url)},
    "dom_id": "#swagger-ui",
    "layout": "BaseLayout",
    "deepLinking": true,
    "persistAuthorization": true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
}})
</script>
</body>
</html>
"""


def redoc_page(title: str, openapi_url: str) -> str:
    return f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>body {{ margin: 0; padding: 0; }}</style>
</head>
<body>
<noscript>ReDoc needs JavaScript.</noscript>
<redoc spec-url="{html.escape(openapi_url)}"></redoc>
<script {REDOC_JS.attributes("src")}></script>
</body>
</html>
"""


def install_docs(app: FastAPI, openapi_url: str) -> None:
    """Serve the schema at `openapi_url`, and /docs and /redoc for it, each under the mount path when the app is
    mounted: the schema's server and the bearer scheme's login and refresh paths are the mounted ones."""

    def root_path(request: Request) -> str:
        prefix: str = request.scope.get("root_path", "")
        return prefix.rstrip("/")

    def schema_url(request: Request) -> str:
        return root_path(request) + openapi_url

    @app.get(openapi_url, include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(served_under(app.openapi(), root_path(request)))

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return HTMLResponse(swagger_page(f"{app.title} - Swagger UI", schema_url(request)))

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return HTMLResponse(redoc_page(f"{app.title} - ReDoc", schema_url(request)))
