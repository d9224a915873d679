"""``recsys state``: the users' live state in Redis (rebuild it from the durable history)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from recsys_cli.common import DataDir, console, err_console
from recsys_cli.common import fail as _fail
from recsys_core.errors import RecsysError

app = typer.Typer(
    help="The users' live state in Redis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

PHASES = {"base": "base dataset", "log": "event log", "vectors": "vectors"}


@app.command()
def rebuild(
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", help="Base dataset name or directory (default: $RECSYS_DATASET, "
        "else ml-100k).")] = None,
    train_fraction: Annotated[float | None, typer.Option(
        "--train-fraction", min=0.0, max=1.0, help="Oldest share of the base dataset the "
        "trainer reads (default: $RECSYS_TRAIN_BASE_FRACTION, else 1.0).")] = None,
    event_log_dir: Annotated[Path | None, typer.Option(
        "--event-log-dir", file_okay=False, help="The Parquet event log (default: "
        "$RECSYS_EVENT_LOG_DIR, else runs/eventlog).")] = None,
    model_dir: Annotated[Path | None, typer.Option(
        "--model-dir", file_okay=False, help="Published models, for the vectors (default: "
        "$RECSYS_MODEL_DIR, else artifacts/models).")] = None,
    redis_url: Annotated[str | None, typer.Option(
        "--redis-url", help="Redis (default: $RECSYS_REDIS_URL).")] = None,
    data_dir: DataDir = None,
    if_lost: Annotated[bool, typer.Option(
        "--if-lost", help="Only when the store lost its state (its built marker missing "
        "while a model exists).")] = False,
) -> None:
    """Rebuild every user's state (history, seen set, vector) from the base dataset and the
    event log, through the stream's own merge and fold-in. Running it again changes
    nothing; events the stream applies meanwhile are kept."""
    from adapters.redis_store import UserStateStore
    from training.rebuild import RebuildBusy, RebuildSettings, rebuild_locked

    overrides: dict[str, Any] = {k: v for k, v in {
        "dataset": dataset, "train_base_fraction": train_fraction, "data_dir": data_dir,
        "event_log_dir": event_log_dir, "model_dir": model_dir, "redis_url": redis_url,
    }.items() if v is not None}
    settings = RebuildSettings(**overrides)
    store = UserStateStore.from_url(settings.redis_url, keys=settings.keys,
                                    cap=settings.user_history_cap)
    bar = Progress(TextColumn("[bold]{task.description:<13}"), BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                   console=err_console)
    tasks: dict[str, TaskID] = {}

    def report(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(PHASES.get(phase, phase), total=total)
        bar.update(tasks[phase], completed=done, total=total)

    try:
        with bar:
            result = rebuild_locked(store, settings, report, only_if_lost=if_lost)
    except RebuildBusy as exc:
        err_console.print(f"[yellow]{exc}[/yellow]")
        raise typer.Exit(3) from None
    except RecsysError as exc:
        raise _fail(exc) from None
    finally:
        store.r.close()
    if result is None:
        console.print("the user state is in place (built marker present, or no model): "
                      "nothing to do")
        return
    table = Table(title="user state rebuilt", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("base rows", f"{result.base_events:,}")
    table.add_row("event-log events", f"{result.log_events:,}")
    table.add_row("applied (others: already there)", f"{result.applied:,}")
    table.add_row("users", f"{result.users:,}")
    table.add_row("vectors folded in", f"{result.vectors:,}")
    table.add_row("seconds", f"{result.seconds:.1f}")
    table.add_row("events/s", f"{result.events / result.seconds:,.0f}" if result.seconds
                  else "-")
    console.print(table)


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="state")
