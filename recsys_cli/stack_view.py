"""Rich renderings of a stack (from its ``stack.json`` data): the addresses panel and the
status table with live figures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from devstack.figures import StackFigures


def panel(data: dict[str, Any], *, foreground: bool) -> Panel:
    """Where everything is and how to stop it."""
    a = data["addresses"]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows = [
        ("API docs", a["docs"]),
        ("web page", a["web"]),
        ("operator page", a["ops"]),
        ("API metrics", a["metrics"]),
        *((f"worker-{n} metrics", url) for n, url in enumerate(a["worker_metrics"], 1)),
        ("trainer metrics", a["trainer_metrics"]),
        ("Kafka", a["kafka"]),
        ("Redis", a["redis"]),
        ("run directory", f"{data['run_dir']}  (logs/, models/, eventlog/, stack.json)"),
    ]
    options = data.get("options", {})
    if data.get("replay_events") and options.get("replay"):
        rows.append(("replay", f"{data['replay_events']:,} newer events of "
                               f"{Path(str(data.get('dataset'))).name} at "
                               f"{options['rate']:g}/s after {data['train_events']:,} "
                               "for training"))
    down = f"recsys down --run-dir {data['run_dir']}"
    stop = f"Ctrl-C (or {down})" if foreground else down
    rows += [("status", f"recsys status --run-dir {data['run_dir']}"), ("stop", stop)]
    for name, value in rows:
        grid.add_row(name, Text(str(value)))
    return Panel(grid, title="[green]recsys stack ready[/green]", expand=False)


def current_version(run_dir: Path) -> int | None:
    """The model version current in the run's registry."""
    from devstack.runfile import RunDir
    from recsys_core.errors import RecsysError
    from training.registry import ModelRegistry

    try:
        return ModelRegistry(RunDir.at(run_dir).models).current_version()
    except (RecsysError, OSError):
        return None


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def role_state(role: dict[str, Any], up: bool | None, healthy: bool | None = None) -> Text:
    from devstack.runfile import same_process

    pid = role.get("pid")
    alive = isinstance(pid, int) and same_process(pid, role.get("start_ticks"))
    if not alive:
        if role.get("finished"):
            return Text("finished", style="cyan")
        return Text("down", style="red")
    if up is False:
        return Text("not answering", style="yellow")
    if healthy is False:  # a worker up but not consuming and applying (its /healthz)
        return Text("unhealthy", style="yellow")
    return Text("up", style="green")


def status_table(data: dict[str, Any], figures: StackFigures | None) -> Group:
    """One row per role, then the stack's totals."""
    table = Table(title=f"stack in {data['run_dir']} ({data.get('state')})", expand=False)
    for column in ("role", "pid", "port", "state", "applied", "events/s", "lag", "model",
                   "req/s"):
        table.add_column(column, justify="left" if column in ("role", "state") else "right")
    for role in data.get("roles", []):
        f = figures.roles.get(role["name"]) if figures is not None else None
        up = f.up if f is not None else None
        table.add_row(
            role["name"], str(role.get("pid") or "-"), str(role.get("port") or "-"),
            role_state(role, up, f.healthy if f is not None else None),
            _fmt(f.applied if f else None), _fmt(f.applied_per_s if f else None, ",.1f"),
            _fmt(f.lag if f else None),
            f"v{f.model_version}" if f and f.model_version else "-",
            _fmt(f.requests_per_s if f else None, ",.1f"),
        )
    if figures is None:
        return Group(table)
    versions = sorted({f.model_version for f in figures.roles.values() if f.model_version})
    published = current_version(Path(data["run_dir"]))
    summary = Text.assemble(
        ("events applied/s ", "bold"), _fmt(figures.applied_per_s, ",.1f"),
        ("   consumer lag ", "bold"), _fmt(figures.lag),
        ("   model in use ", "bold"), ", ".join(f"v{v}" for v in versions) or "-",
        ("   published ", "bold"), f"v{published}" if published else "-",
        ("   API requests/s ", "bold"), _fmt(figures.requests_per_s, ",.1f"),
    )
    return Group(table, summary)



def status_line(data: dict[str, Any], figures: StackFigures) -> str:
    """The stack's totals on one line, for output that is not a terminal (a file, ``tee``)."""
    versions = sorted({f.model_version for f in figures.roles.values() if f.model_version})
    published = current_version(Path(data["run_dir"]))
    down = [r["name"] for r in data.get("roles", [])
            if (f := figures.roles.get(r["name"])) is not None and f.up is False]
    return (f"{data.get('state')}: applied {_fmt(figures.applied)}"
            f" ({_fmt(figures.applied_per_s, ',.1f')}/s), lag {_fmt(figures.lag)},"
            f" model in use {', '.join(f'v{v}' for v in versions) or '-'},"
            f" published {f'v{published}' if published else '-'},"
            f" API {_fmt(figures.requests_per_s, ',.1f')} req/s"
            + (f", not answering: {', '.join(down)}" if down else ""))
