"""``python -m serving``: the API, the web page and /metrics under uvicorn.

``RECSYS_API_PROCESSES`` processes (0, the default: one per core) serve one port (uvicorn's
``workers``: the port is bound once and each process accepts from it). Each process loads
the model itself, but the bundle's arrays are memory-mapped from the bundle file
(:func:`recsys_core.artifacts.read_arrays`), so the processes share one copy of them in the
page cache. With more than one process the metrics go through prometheus_client's
multiprocess mode (:mod:`serving.metrics`) in a fresh directory made here.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any

import uvicorn

from serving.metrics import MULTIPROC_ENV
from serving.settings import ServingSettings

log = logging.getLogger("serving")


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def api_processes(settings: ServingSettings) -> int:
    return settings.api_processes or cores()


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
    options = uvicorn_options(settings)
    processes = api_processes(settings)
    if processes > 1:
        options["workers"] = processes
    made = None
    if processes > 1 and not os.environ.get(MULTIPROC_ENV):
        # a fresh directory: samples of an earlier run must not add to this one's
        made = tempfile.mkdtemp(prefix="recsys-api-metrics-")
        os.environ[MULTIPROC_ENV] = made
    log.info("API on %s:%s with %d process(es)", settings.api_host, settings.api_port,
             processes)
    try:
        uvicorn.run("serving.app:create_app", factory=True, **options)
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


if __name__ == "__main__":
    main()
