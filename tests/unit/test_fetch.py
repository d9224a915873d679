"""Dataset download against a local HTTP server (no network needed) and ``recsys data fetch``."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys_cli import data_cmd
from recsys_core.errors import DatasetNotFound, DownloadError
from recsys_core.loaders import fetch_dataset, load_dataset
from recsys_core.loaders.fetch import PINNED_MD5

RATINGS = "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n2,1,3.5,964981247\n"
MOVIES = "movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, directory it serves) of an HTTP server on 127.0.0.1."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _publish(root: Path, name: str, md5: str | None = None) -> str:
    """Write ``<name>.zip`` (with a top-level ``<name>/`` folder) and its ``.md5``."""
    archive = root / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr(f"{name}/ratings.csv", RATINGS)
        bundle.writestr(f"{name}/movies.csv", MOVIES)
    actual = hashlib.md5(archive.read_bytes()).hexdigest()
    (root / f"{name}.zip.md5").write_text(f"MD5 ({name}.zip) = {md5 or actual}\n")
    return actual


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_fetch_downloads_verifies_and_unpacks(served: tuple[str, Path], tmp_path: Path) -> None:
    base_url, root = served
    _publish(root, "ml-latest-small")
    calls: list[tuple[int, int]] = []
    data_dir = tmp_path / "data"
    path = fetch_dataset(
        "ml-latest-small", data_dir, progress=lambda d, t: calls.append((d, t)), base_url=base_url
    )
    assert path == data_dir / "ml-latest-small"
    assert (path / "ratings.csv").read_text() == RATINGS
    size = (root / "ml-latest-small.zip").stat().st_size
    assert calls[0] == (0, size) and calls[-1] == (size, size)
    assert sorted(p.name for p in data_dir.iterdir()) == ["ml-latest-small"]
    ds = load_dataset("ml-latest-small", data_dir)
    assert (ds.n_users, ds.n_movies, len(ds.interactions)) == (2, 1, 2)


def test_fetch_checksum_mismatch_deletes_partial_file(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    base_url, root = served
    _publish(root, "ml-latest-small", md5="0" * 32)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with pytest.raises(DownloadError, match="checksum mismatch") as info:
        fetch_dataset("ml-latest-small", data_dir, base_url=base_url)
    assert "0" * 32 in str(info.value)
    assert list(data_dir.iterdir()) == []


def test_fetch_pinned_checksum_is_used_for_ml100k(served: tuple[str, Path], tmp_path: Path) -> None:
    base_url, root = served
    _publish(root, "ml-100k")  # the served .md5 matches, but the pinned value does not
    with pytest.raises(DownloadError, match=PINNED_MD5["ml-100k"]):
        fetch_dataset("ml-100k", tmp_path / "data", base_url=base_url)
    assert not (tmp_path / "data").exists()


def test_fetch_unreachable_host_says_offline(tmp_path: Path) -> None:
    base_url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(DownloadError, match=r"cannot reach 127\.0\.0\.1 \(offline\?\)"):
        fetch_dataset("ml-latest-small", tmp_path / "data", base_url=base_url, timeout=5)
    assert not (tmp_path / "data").exists()


def test_fetch_missing_archive_reports_http_status(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    base_url, _ = served
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_dataset("ml-32m", tmp_path / "data", base_url=base_url)


def test_fetch_keeps_existing_dataset_without_network(tmp_path: Path) -> None:
    target = tmp_path / "ml-1m"
    target.mkdir()
    (target / "ratings.dat").write_text("1::1::5::1\n")
    unreachable = f"http://127.0.0.1:{_closed_port()}"
    assert fetch_dataset("ml-1m", tmp_path, base_url=unreachable) == target


def test_fetch_unknown_name_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound, match="ml-100k"):
        fetch_dataset("ml-7b", tmp_path)


def test_fetch_command_downloads(
    served: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, root = served
    _publish(root, "ml-latest-small")
    monkeypatch.setattr(
        data_cmd, "fetch_dataset", functools.partial(fetch_dataset, base_url=base_url)
    )
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path / "env-data"))
    result = CliRunner().invoke(data_cmd.app, ["fetch", "ml-latest-small"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env-data" / "ml-latest-small" / "movies.csv").is_file()


def test_fetch_command_offline_exits_1_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unreachable = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(
        data_cmd, "fetch_dataset", functools.partial(fetch_dataset, base_url=unreachable)
    )
    result = CliRunner().invoke(data_cmd.app, ["fetch", "ml-1m", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "cannot reach 127.0.0.1 (offline?)" in result.output
    assert "Traceback" not in result.output
