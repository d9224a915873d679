"""Entry point of the ``recsys`` command. Sub-commands import their heavy modules lazily."""

from __future__ import annotations

import typer
from threadpoolctl import threadpool_limits

from recsys_cli import data_cmd, follows_cmd, model_cmd, stack_cmd, state_cmd, stream_cmd

app = typer.Typer(
    name="recsys",
    help="Real-time streaming movie recommender: data, training, evaluation and the stack.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_cmd.app, name="data")


@app.callback()
def _setup() -> None:
    """Real-time streaming movie recommender."""
    # many small matrix solves: competing BLAS threads cost far more than they give
    threadpool_limits(1, "blas")

model_cmd.register(app)
stream_cmd.register(app)
stack_cmd.register(app)
state_cmd.register(app)
follows_cmd.register(app)

if __name__ == "__main__":
    app()
