"""Download a MovieLens zip from GroupLens, check its MD5 and unpack it (standard library only).

Checksums are pinned where several independent sources agree on GroupLens's published
value; for the others the ``<name>.zip.md5`` file published next to the archive is fetched.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from http.client import HTTPException, HTTPResponse
from pathlib import Path, PurePosixPath

from recsys_core.errors import DatasetNotFound, DownloadError

GROUPLENS_BASE_URL = "https://files.grouplens.org/datasets/movielens"
FETCHABLE_DATASETS = ("ml-100k", "ml-1m", "ml-latest-small", "ml-25m", "ml-32m")
#: MD5 of each archive as published by GroupLens in ``<name>.zip.md5``
PINNED_MD5 = {
    "ml-100k": "0e33842e24a9c977be4e0107933c0723",
    "ml-1m": "c4d9eecfca2ab87c1945afe126590906",
    "ml-25m": "6b51fb2759a8657d3bfcbfc42b592ada",
}
_CHUNK = 1 << 16
_MD5_TEXT = re.compile(r"\b([0-9a-fA-F]{32})\b")

Progress = Callable[[int, int], None]


def fetch_dataset(
    name: str,
    data_dir: Path,
    progress: Progress | None = None,
    *,
    base_url: str = GROUPLENS_BASE_URL,
    timeout: float = 30.0,
    force: bool = False,
) -> Path:
    """Download ``<name>.zip`` into ``data_dir/<name>`` and return that directory.

    ``progress(done_bytes, total_bytes)`` is called while downloading (``total`` is 0 when
    the server does not say). An existing non-empty directory is kept unless ``force``.
    """
    if name not in FETCHABLE_DATASETS:
        raise DatasetNotFound(
            f"no download known for {name!r}; known: {', '.join(FETCHABLE_DATASETS)}"
        )
    target = data_dir / name
    if target.is_dir() and any(target.iterdir()) and not force:
        return target
    if urllib.parse.urlsplit(base_url).scheme not in {"http", "https"}:
        raise DownloadError(f"base URL must be http(s), not {base_url!r}")
    url = f"{base_url.rstrip('/')}/{name}.zip"
    expected = PINNED_MD5.get(name) or _published_md5(url, timeout)
    created = not data_dir.exists()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {data_dir}: {exc.strerror or exc}") from None
    archive = data_dir / f".{name}.zip.part"
    try:
        actual = _download(url, archive, progress, timeout)
        if actual != expected:
            raise DownloadError(
                f"checksum mismatch for {url}: expected MD5 {expected}, got {actual};"
                " the partial download was deleted"
            )
        _unpack(archive, target, url)
    finally:
        archive.unlink(missing_ok=True)
        if created and not any(data_dir.iterdir()):
            data_dir.rmdir()
    return target


def _open(url: str, timeout: float) -> HTTPResponse:
    """``urlopen`` with every failure turned into :class:`DownloadError`."""
    try:
        response: HTTPResponse = urllib.request.urlopen(url, timeout=timeout)
        return response
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _unreachable(url, exc) from None


def _unreachable(url: str, exc: BaseException) -> DownloadError:
    host = urllib.parse.urlsplit(url).hostname or url
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, TimeoutError):
        reason = "timed out"
    return DownloadError(f"cannot reach {host} (offline?): {reason}")


def _published_md5(url: str, timeout: float) -> str:
    md5_url = f"{url}.md5"
    with _open(md5_url, timeout) as response:
        try:
            text = response.read(4096).decode("ascii", errors="replace")
        except (OSError, HTTPException) as exc:
            raise _unreachable(md5_url, exc) from None
    match = _MD5_TEXT.search(text)
    if match is None:
        raise DownloadError(f"{md5_url} holds no MD5 checksum")
    return match.group(1).lower()


def _download(url: str, archive: Path, progress: Progress | None, timeout: float) -> str:
    """Stream ``url`` into ``archive``; return the MD5 of what was written."""
    digest = hashlib.md5(usedforsecurity=False)
    with _open(url, timeout) as response:
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        if progress is not None:
            progress(0, total)
        try:
            with archive.open("wb") as out:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise _unreachable(url, exc) from None
        except HTTPException as exc:
            raise DownloadError(f"{url}: connection broken: {exc!r}") from None
        except OSError as exc:
            raise DownloadError(f"cannot write {archive}: {exc}") from None
    if total and done != total:
        raise DownloadError(f"{url}: connection closed after {done} of {total} bytes")
    return digest.hexdigest()


def _unpack(archive: Path, target: Path, url: str) -> None:
    """Extract into ``target``, dropping the archive's single top-level folder."""
    staging = target.with_name(f".{target.name}.unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = [info for info in bundle.infolist() if not info.is_dir()]
            paths = [PurePosixPath(info.filename) for info in members]
            if any(p.is_absolute() or ".." in p.parts for p in paths):
                raise DownloadError(f"{url}: archive holds unsafe paths; not extracted")
            roots = {p.parts[0] for p in paths if len(p.parts) > 1}
            strip = len(roots) == 1 and all(len(p.parts) > 1 for p in paths)
            for info, path in zip(members, paths, strict=True):
                relative = PurePosixPath(*path.parts[1:]) if strip else path
                destination = staging.joinpath(*relative.parts)
                destination.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(info) as source, destination.open("wb") as out:
                    shutil.copyfileobj(source, out)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    except zipfile.BadZipFile:
        raise DownloadError(f"{url}: the download is not a valid zip archive") from None
    except OSError as exc:
        raise DownloadError(f"cannot unpack into {target}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
