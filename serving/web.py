"""The web pages: ``/`` for people, ``/ops`` for operators (static files, no build step),
and ``/v1/admin/metrics``, the JSON samples the operator page charts (``serving.ops``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from serving.ops import ops_router
from serving.settings import ServingSettings

STATIC = Path(__file__).parent / "static"
#: the pages are small and change with the code: the browser revalidates each time
NO_CACHE = {"Cache-Control": "no-cache"}


def mount_web(app: FastAPI, settings: ServingSettings) -> None:
    app.include_router(ops_router(settings))
    if not STATIC.is_dir():
        return
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False, response_model=None)
    def index() -> FileResponse | RedirectResponse:
        page = STATIC / "index.html"
        return FileResponse(page, headers=NO_CACHE) if page.exists() else RedirectResponse(
            "/docs")

    @app.get("/ops", include_in_schema=False, response_model=None)
    def ops() -> FileResponse | RedirectResponse:
        page = STATIC / "ops.html"
        return FileResponse(page, headers=NO_CACHE) if page.exists() else RedirectResponse(
            "/docs")
