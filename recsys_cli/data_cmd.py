"""``recsys data``: download and inspect datasets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from recsys_cli.common import DataDir, console, err_console
from recsys_cli.common import fail as _fail
from recsys_core.errors import RecsysError
from recsys_core.loaders import (
    FETCHABLE_DATASETS,
    KNOWN_DATASETS,
    default_data_dir,
    describe_dataset,
    fetch_dataset,
    load_dataset,
)

app = typer.Typer(
    help="Download and inspect MovieLens datasets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
@app.command()
def fetch(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(FETCHABLE_DATASETS)}.")],
    data_dir: DataDir = None,
    force: Annotated[bool, typer.Option(help="Download again even if present.")] = False,
) -> None:
    """Download a GroupLens dataset, check its checksum and unpack it."""
    base = data_dir or default_data_dir()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    bar = Progress(*columns, console=err_console, transient=True)
    task = bar.add_task(name, total=None)

    def report(done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total or None)

    try:
        path = fetch_dataset(name, base, progress=report, force=force)
    except RecsysError as exc:
        raise _fail(exc) from None
    finally:
        bar.stop()
    console.print(f"[green]{name}[/green] is in {path}")


@app.command()
def info(
    name_or_path: Annotated[
        str, typer.Argument(help=f"A known name ({', '.join(KNOWN_DATASETS)}) or a directory.")
    ],
    data_dir: DataDir = None,
) -> None:
    """Load a dataset and print a summary."""
    try:
        dataset = load_dataset(name_or_path, data_dir)
    except RecsysError as exc:
        raise _fail(exc) from None
    stats = describe_dataset(dataset)
    table = Table(title=f"dataset {stats.name}", show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("users", f"{stats.users:,}")
    table.add_row("movies", f"{stats.movies:,}")
    table.add_row("interactions", f"{stats.interactions:,}")
    if stats.rating_min is not None and stats.rating_max is not None:
        table.add_row("rating range", f"{stats.rating_min:g} - {stats.rating_max:g}")
    if stats.first_timestamp is not None and stats.last_timestamp is not None:
        table.add_row(
            "time range (UTC)",
            f"{_date(stats.first_timestamp)} - {_date(stats.last_timestamp)}",
        )
    for kind, count in stats.attributes.items():
        table.add_row(f"{kind} attributes", f"{count:,} on {stats.movies_with[kind]:,} movies")
    if not stats.attributes:
        table.add_row("attributes", "none")
    console.print(table)


def _date(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d")
