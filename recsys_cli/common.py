"""Options and error handling shared by every ``recsys`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from recsys_core.errors import RecsysError
from recsys_core.loaders import DATA_DIR_ENV

console = Console()
err_console = Console(stderr=True)

MODEL_DIR_ENV = "RECSYS_MODEL_DIR"

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_ENV,
        help=f"Where datasets live (default: ${DATA_DIR_ENV}, else ./data).",
        file_okay=False,
    ),
]
ModelDir = Annotated[
    Path,
    typer.Option(
        "--model-dir",
        envvar=MODEL_DIR_ENV,
        help=f"Where model versions are published (${MODEL_DIR_ENV}).",
        file_okay=False,
    ),
]
DEFAULT_MODEL_DIR = Path("artifacts/models")
#: where ``recsys demo`` / ``up`` keep their run (devstack.runfile.DEFAULT_RUN_DIR)
STACK_RUN_DIR = Path("runs/stack")

FoundModelDir = Annotated[
    Path | None,
    typer.Option(
        "--model-dir",
        envvar=MODEL_DIR_ENV,
        help=(f"Where model versions are published (default: ${MODEL_DIR_ENV}, else the "
              f"models of the stack running or last run in {STACK_RUN_DIR}, else "
              f"{DEFAULT_MODEL_DIR})."),
        file_okay=False,
    ),
]


def model_dir_candidates() -> list[Path]:
    """Where read commands look for models when no directory is given, in order: the stack
    running or last run in ``runs/stack`` (``recsys demo`` / ``up``), then
    ``artifacts/models`` (``recsys train``)."""
    out = []
    if (STACK_RUN_DIR / "stack.json").is_file():
        out.append(STACK_RUN_DIR / "models")
    out.append(DEFAULT_MODEL_DIR)
    return out


def resolve_model_dir(model_dir: Path | None) -> Path:
    """The directory given (option or ``$RECSYS_MODEL_DIR``), else the first candidate with a
    published version; a clear error naming every place looked at when none has one."""
    if model_dir is not None:
        return model_dir
    candidates = model_dir_candidates()
    for path in candidates:
        if (path / "CURRENT").is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise fail(f"no model published in {looked}; start the stack (`recsys up`), train one "
               f"(`recsys train`) or pass --model-dir / ${MODEL_DIR_ENV}")


def fail(exc: RecsysError | str) -> typer.Exit:
    """Print one red line and return the exit to raise."""
    err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def check_fraction(value: float | None) -> float | None:
    """Typer callback: a share in (0, 1]."""
    if value is not None and not 0.0 < value <= 1.0:
        raise typer.BadParameter(f"{value:g} is not a share in (0, 1], e.g. 0.8")
    return value


def check_positive(value: float | None) -> float | None:
    """Typer callback: a number > 0."""
    if value is not None and not value > 0:
        raise typer.BadParameter(f"{value:g} is not > 0")
    return value
