"""``python -m streams``: run one stream worker (``recsys worker`` does the same)."""

from __future__ import annotations

from streams.worker import main

if __name__ == "__main__":
    main()
