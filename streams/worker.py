"""Start a stream worker process: settings from the environment, topics ensured, Faust run."""

from __future__ import annotations

import logging

from threadpoolctl import threadpool_limits

from adapters.kafka import ensure_topics
from streams.app import create_app
from streams.settings import StreamSettings


def main() -> None:
    import faust

    settings = StreamSettings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s",'
               '"message":"%(message)s"}',
    )
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    threadpool_limits(1, "blas")
    settings.stream_data_dir.mkdir(parents=True, exist_ok=True)
    ensure_topics(settings, settings.stream_partitions)
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, redirect_stdouts=False)
    worker.execute_from_commandline()
