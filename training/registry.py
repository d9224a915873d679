"""Versioned model bundles on disk: ``v{N}/`` directories and a ``CURRENT`` pointer.

A version is written whole under a new number, then the pointer flips with one atomic
rename; the last ``keep`` versions stay for rollback. Integers only ever increase.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from recsys_core.artifacts import ModelBundle, load_bundle, read_manifest, save_bundle
from recsys_core.errors import ArtifactError, ModelNotLoaded

POINTER = "CURRENT"


class ModelRegistry:
    def __init__(self, root: Path, keep: int = 5) -> None:
        self.root = Path(root)
        self.keep = max(1, keep)

    def _dir(self, version: int) -> Path:
        return self.root / f"v{version}"

    def versions(self) -> list[int]:
        if not self.root.is_dir():
            return []
        found = []
        for entry in self.root.iterdir():
            if entry.is_dir() and entry.name.startswith("v") and entry.name[1:].isdigit():
                found.append(int(entry.name[1:]))
        return sorted(found)

    def current_version(self) -> int | None:
        try:
            text = (self.root / POINTER).read_text().strip()
        except FileNotFoundError:
            return None
        if not text.isdigit():
            raise ArtifactError(f"{self.root / POINTER}: not a version number: {text!r}")
        return int(text)

    def next_version(self) -> int:
        existing = self.versions()
        return (max(existing) + 1) if existing else 1

    def manifest(self, version: int) -> dict[str, Any]:
        if version not in self.versions():
            raise ArtifactError(f"no model version {version} under {self.root}")
        return read_manifest(self._dir(version))

    def load(self, version: int | None = None) -> ModelBundle:
        v = self.current_version() if version is None else version
        if v is None:
            raise ModelNotLoaded(f"no model published under {self.root} yet")
        return load_bundle(self._dir(v))

    def save(self, bundle: ModelBundle) -> Path:
        """Write a version without making it current (e.g. one the quality gate refused)."""
        return save_bundle(bundle, self._dir(bundle.version))

    def flip(self, version: int) -> None:
        if version not in self.versions():
            raise ArtifactError(f"no model version {version} under {self.root}")
        tmp = self.root / f".{POINTER}.{os.getpid()}"
        tmp.write_text(f"{version}\n")
        os.replace(tmp, self.root / POINTER)

    def publish(self, bundle: ModelBundle) -> Path:
        path = self.save(bundle)
        self.flip(bundle.version)
        self.prune()
        return path

    def rollback(self, version: int | None = None) -> int:
        """Make ``version`` (default: the newest one older than the current) current."""
        current = self.current_version()
        if version is None:
            older = [v for v in self.versions() if current is None or v < current]
            if not older:
                raise ArtifactError("no older version to roll back to")
            version = older[-1]
        load_bundle(self._dir(version))  # refuse to point at a broken bundle
        self.flip(version)
        return version

    def prune(self) -> list[int]:
        current = self.current_version()
        versions = self.versions()
        removed = []
        for v in versions[: max(0, len(versions) - self.keep)]:
            if v != current:
                shutil.rmtree(self._dir(v), ignore_errors=True)
                removed.append(v)
        return removed
