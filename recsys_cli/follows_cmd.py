"""``recsys follows``: bring a follow graph to the stack, or make a synthetic one.

- ``recsys follows load FILE``: every edge of a ``follower,followee[,timestamp]`` CSV sent to
  ``follows.v1`` as a follow event (event ids made from the edge, so loading the same file
  again changes nothing); the stream applies them.
- ``recsys follows synth -d ml-100k -o follows.csv``: a homophilous follow graph with
  power-law follower counts over a dataset's users (:func:`recsys_core.follows.synthetic_follows`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from recsys_cli.common import DataDir, console, err_console, fail
from recsys_cli.stream_cmd import KafkaBootstrap, TopicPrefix, _connect
from recsys_core.errors import InvalidEvent, RecsysError

app = typer.Typer(help="Load a follow graph into the stack, or make a synthetic one.",
                  no_args_is_help=True)
ACK_TIMEOUT_S = 60.0


@app.command("load")
def load(
    path: Annotated[Path, typer.Argument(help="CSV of follower,followee[,timestamp].")],
    kafka_bootstrap: KafkaBootstrap = None,
    topic_prefix: TopicPrefix = None,
) -> None:
    """Send every edge of an edge list to the follows topic (applied by the stream)."""
    from kafka.errors import KafkaError

    from recsys_core.events import validate_event
    from recsys_core.follows import load_edge_list

    now = int(datetime.now(UTC).timestamp())
    try:
        graph = load_edge_list(path, default_time=now)
    except RecsysError as exc:
        raise fail(exc) from None
    settings, producer = _connect(kafka_bootstrap, topic_prefix)
    columns = (TextColumn("sending follows"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    try:
        with Progress(*columns, console=err_console, transient=True) as bar:
            task = bar.add_task("follows", total=len(graph))
            for n, (follower, followee, ts) in enumerate(graph.itertuples(index=False)):
                when = datetime.fromtimestamp(int(ts), UTC).isoformat()
                event = validate_event("follow", {
                    "event_id": f"follows-{follower}-{followee}-{int(ts)}",
                    "occurred_at": when, "user_id": follower, "followee_id": followee})
                producer.send("follow", event)
                if n % 1000 == 999:
                    bar.update(task, completed=n + 1)
            producer.flush(timeout=ACK_TIMEOUT_S)
            bar.update(task, completed=len(graph))
    except InvalidEvent as exc:
        raise fail(f"{path}: an edge is not a valid follow event: {exc}") from None
    except KafkaError as exc:
        raise fail(f"follows not delivered to {settings.kafka_bootstrap}: "
                   f"{type(exc).__name__}: {exc}") from None
    finally:
        producer.close()
    console.print(f"[green]sent[/green] {len(graph):,} follows of "
                  f"{graph['follower'].nunique():,} users to {settings.topic('follow')}",
                  highlight=False)


@app.command("synth")
def synth(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset name or directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV to write.")],
    mean_follows: Annotated[float, typer.Option(min=1.0, help="Mean follows per user.")] = 8.0,
    homophily: Annotated[float, typer.Option(min=0.0, max=1.0, help=(
        "Share of follows among the most similar users."))] = 0.8,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    data_dir: DataDir = None,
) -> None:
    """Write a synthetic follow graph (homophilous, power-law follower counts)."""
    from recsys_core.follows import (
        SyntheticFollows,
        follower_counts,
        save_edge_list,
        synthetic_follows,
    )
    from recsys_core.loaders import load_dataset

    try:
        ds = load_dataset(dataset, data_dir)
    except RecsysError as exc:
        raise fail(exc) from None
    graph = synthetic_follows(ds, SyntheticFollows(mean_follows=mean_follows,
                                                   homophily=homophily, seed=seed))
    save_edge_list(graph, out)
    counts = follower_counts(graph)
    console.print(f"wrote {len(graph):,} follows of {graph['follower'].nunique():,} users to "
                  f"{out} (followers: median {counts.median():.0f}, most {counts.iloc[0]:,})",
                  highlight=False)


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="follows")
