"""``python -m serving``: the API, the web page and /metrics under uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from serving.settings import ServingSettings


def main() -> None:
    settings = ServingSettings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run("serving.app:create_app", factory=True, host=settings.api_host,
                port=settings.api_port, log_level=settings.log_level.lower(),
                access_log=False)


if __name__ == "__main__":
    main()
