"""One exception hierarchy for the whole system.

Errors are raised deep and turned into an HTTP status, a dead-letter reason, a fallback
or a CLI message in exactly one place each.
"""

from __future__ import annotations

from pathlib import Path


class RecsysError(Exception):
    """Base class of every error this project raises on purpose."""


class DataFormatError(RecsysError):
    """A dataset file cannot be read: names the file and, where known, the line."""

    def __init__(self, path: Path | str, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class DatasetNotFound(RecsysError):
    """No dataset of that name or at that path."""


class DownloadError(RecsysError):
    """A dataset could not be downloaded (offline, bad checksum, HTTP error)."""


class InvalidEvent(RecsysError):
    """An event failed validation; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class UnknownMovie(RecsysError):
    """The movie id is not in the model's vocabulary."""

    def __init__(self, movie_id: str) -> None:
        self.movie_id = movie_id
        super().__init__(f"unknown movie id {movie_id!r}")


class UnknownUser(RecsysError):
    """The user id is not known."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        super().__init__(f"unknown user id {user_id!r}")


class PredictionImpossible(RecsysError):
    """A model cannot score this input; callers turn it into a fallback with this reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ModelNotLoaded(RecsysError):
    """No model version is available yet."""


class ArtifactError(RecsysError):
    """A model bundle is missing, inconsistent or of an unsupported format version."""


class EmptyTrainingData(RecsysError):
    """The training window holds no usable interactions."""
