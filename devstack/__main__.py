"""``python -m devstack [LOG_DIR]``: run the stack until interrupted.

Writes ``export RECSYS_...=...`` lines to stdout once both servers answer, then
waits for Ctrl-C or SIGTERM and stops them.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from devstack.launcher import DevStack


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    log_dir = argv[0] if argv else None
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with DevStack(log_dir=log_dir) as stack:
        for key, value in stack.env().items():
            sys.stdout.write(f"export {key}={value}\n")
        sys.stdout.flush()
        while not stopping.wait(1.0):
            if not stack.is_running():
                logging.getLogger("devstack").error("a component exited; stopping")
                return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
