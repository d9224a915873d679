"""Entry point of the ``recsys`` command. Sub-commands import their heavy modules lazily."""

from __future__ import annotations

import typer

from recsys_cli import data_cmd, model_cmd

app = typer.Typer(
    name="recsys",
    help="Real-time streaming movie recommender: data, training, evaluation and the stack.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_cmd.app, name="data")
model_cmd.register(app)

if __name__ == "__main__":
    app()
