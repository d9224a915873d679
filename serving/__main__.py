"""``python -m serving``: the API, the web page and /metrics under uvicorn."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from serving.settings import ServingSettings


def uvicorn_options(settings: ServingSettings) -> dict[str, Any]:
    """How uvicorn serves the API: an idle keep-alive connection is closed after
    ``RECSYS_API_TIMEOUT_KEEP_ALIVE`` s; the body limit and its timeout are the app's
    (``serving.security``). Uvicorn has no timeout for a request line and headers that
    trickle in: put a reverse proxy in front on a public network (``docs/deployment.md``)."""
    return {"host": settings.api_host, "port": settings.api_port,
            "log_level": settings.log_level.lower(), "access_log": False,
            "timeout_keep_alive": settings.api_timeout_keep_alive}


def main() -> None:
    settings = ServingSettings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run("serving.app:create_app", factory=True, **uvicorn_options(settings))


if __name__ == "__main__":
    main()
