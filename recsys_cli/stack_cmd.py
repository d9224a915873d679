"""``recsys demo``, ``recsys up``, ``recsys down`` and ``recsys status``: the whole stack.

``demo`` is the supervisor (``devstack.stack.Stack``) in the foreground with a live status;
``up`` runs the same supervisor detached (``demo --no-live`` in a new session, output in
``<run-dir>/logs/supervisor.log``) and returns once it is ready; ``down`` and ``status``
find it through ``<run-dir>/stack.json``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from recsys_cli.common import DataDir, check_fraction, check_positive, console, err_console, fail
from recsys_cli.stack_view import panel, status_line, status_table

if TYPE_CHECKING:
    from devstack.stack import Stack, StackOptions

DEFAULT_RUN_DIR = Path("runs/stack")
#: how long ``up`` waits for the detached supervisor (training included)
UP_TIMEOUT = 900.0
#: how long ``down`` waits for the supervisor to stop every role
DOWN_TIMEOUT = 120.0

Dataset = Annotated[str, typer.Option("--dataset", "-d", help="Dataset name or directory.")]
TrainFraction = Annotated[float, typer.Option(
    "--train-fraction", callback=check_fraction,
    help="Train version 1 (and every later one) on the oldest share of the dataset's events "
         "by time; the rest is replayed.")]
Replay = Annotated[bool, typer.Option(
    "--replay/--no-replay", help="Replay the newer events through Kafka.")]
Rate = Annotated[float, typer.Option(callback=check_positive, help="Replay rate, events/s.")]
Workers = Annotated[int, typer.Option(min=1, max=64, help="Stream worker processes.")]
ApiPort = Annotated[int, typer.Option(min=1, max=65535, help="Port of the API and pages.")]
ApiProcesses = Annotated[int, typer.Option(
    min=0, max=256, help="API processes serving the one port, sharing one copy of the "
                         "model's arrays (0: one per core).")]
Partitions = Annotated[int, typer.Option(min=1, max=1024, help="Partitions per input topic.")]
RunDirOpt = Annotated[Path, typer.Option(
    "--run-dir", file_okay=False, help="Models, event log, logs and stack.json of the run.")]
External = Annotated[bool, typer.Option(
    "--external", help="Use the broker and Redis of $RECSYS_KAFKA_BOOTSTRAP and "
                       "$RECSYS_REDIS_URL instead of starting private ones.")]
FitWeights = Annotated[bool, typer.Option(
    "--fit-weights/--no-fit-weights",
    help="Fit blend weights for version 1 (about 10 s on ml-100k) or use the defaults.")]
ReadyTimeout = Annotated[float, typer.Option(
    min=1.0, help="Seconds each role may take to become ready.")]


def _options(**given: Any) -> StackOptions:
    from devstack.stack import StackOptions

    return StackOptions(**given)


class _Stop(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C: unwind to the code that stops everything."""


class _Signals:
    """Where a Ctrl-C or SIGTERM goes. While the stack starts, it raises at once (the start
    only waits on processes and sleeps); once it runs, the handler only records it and the
    supervising loop stops at its next check: an exception raised at an arbitrary point
    could leave a lock held (e.g. in ``subprocess``) that the clean-up then waits on."""

    supervising = False
    requested = False


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    if _Signals.supervising:
        _Signals.requested = True
        return
    raise _Stop


def _ignore_signals() -> None:
    """While stopping: a second Ctrl-C or SIGTERM must not cut the clean-up short (every
    stop has its own deadline)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def demo(
    dataset: Dataset = "ml-100k",
    data_dir: DataDir = None,
    train_fraction: TrainFraction = 0.8,
    replay: Replay = True,
    rate: Rate = 20.0,
    workers: Workers = 1,
    api_port: ApiPort = 8000,
    api_processes: ApiProcesses = 0,
    partitions: Partitions = 4,
    run_dir: RunDirOpt = DEFAULT_RUN_DIR,
    external: External = False,
    fit_weights: FitWeights = True,
    ready_timeout: ReadyTimeout = 120.0,
    live: Annotated[bool, typer.Option(
        "--live/--no-live", help="Show the live status (else print the addresses and wait "
                                 "quietly, as `recsys up` runs it).")] = True,
) -> None:
    """Run the whole stack in the foreground until Ctrl-C.

    Starts a broker and Redis, trains model version 1 on the oldest --train-fraction of the
    dataset, seeds those users into Redis, starts the stream workers, the trainer and the
    API, replays the newer events through Kafka, shows the addresses and live figures, and
    stops everything on Ctrl-C or SIGTERM (a role that dies stops it all, exit code 1)."""
    import logging

    from devstack.process import DevStackError
    from devstack.stack import Stack, preflight

    options = _options(dataset=dataset, data_dir=data_dir, train_fraction=train_fraction,
                       replay=replay, rate=rate, workers=workers, api_port=api_port,
                       api_processes=api_processes, partitions=partitions,
                       run_dir=run_dir, external=external,
                       fit_weights=fit_weights, ready_timeout=ready_timeout)
    try:
        preflight(options)
    except DevStackError as exc:
        raise fail(exc) from None
    logging.basicConfig(level=logging.WARNING if live else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    stack = Stack(options)
    error: str | None = None
    try:
        if live and not console.is_terminal:  # a file or a pipe: one line per phase
            stack.on_phase = lambda phase: console.print(phase, highlight=False)
            stack.start()
        elif live:
            with console.status("starting") as spinner:
                stack.on_phase = lambda phase: spinner.update(escape(phase))
                stack.start()
        else:
            stack.start()
        console.print(panel(stack.describe(), foreground=live))
        _supervise(stack, live)
    except KeyboardInterrupt:
        console.print("stopping: replay, API, trainer, workers, broker, Redis")
    except DevStackError as exc:
        error = str(exc)
    finally:
        _ignore_signals()
        stack.stop(error)
    if error is not None:
        err_console.print("[red]error:[/red] " + escape(error), highlight=False,
                          soft_wrap=True)
        err_console.print("every process of the stack is stopped")
        raise typer.Exit(code=1)
    console.print("[green]stopped[/green]: every process of the stack has exited")


def _supervise(stack: Stack, live: bool) -> None:
    """Until a role dies (StackError) or Ctrl-C: watch the roles, refresh the figures."""
    from rich.live import Live

    from devstack.figures import FigureTracker
    from devstack.stack import StackError

    def check() -> None:
        if _Signals.requested:
            raise _Stop
        failure = stack.poll()
        if failure is not None:
            raise StackError(failure)

    _Signals.supervising = True

    if not live:
        while True:
            check()
            time.sleep(0.2)
    tracker = FigureTracker()

    def every(seconds: float) -> Iterator[tuple[dict[str, Any], Any]]:
        """The stack's description and figures every ``seconds``, checking it meanwhile."""
        while True:
            for _ in range(int(seconds / 0.25)):
                check()
                time.sleep(0.25)
            data = stack.describe()
            yield data, tracker.collect(data["roles"])

    data = stack.describe()
    if not console.is_terminal:  # a file or a pipe: a compact line every few seconds
        tracker.collect(data["roles"])
        for data, figures in every(5.0):
            console.print(status_line(data, figures), highlight=False)
    with Live(status_table(data, tracker.collect(data["roles"])), console=console,
              auto_refresh=False) as view:
        for data, figures in every(1.0):
            view.update(status_table(data, figures), refresh=True)


def up(
    dataset: Dataset = "ml-100k",
    data_dir: DataDir = None,
    train_fraction: TrainFraction = 0.8,
    replay: Replay = True,
    rate: Rate = 20.0,
    workers: Workers = 1,
    api_port: ApiPort = 8000,
    api_processes: ApiProcesses = 0,
    partitions: Partitions = 4,
    run_dir: RunDirOpt = DEFAULT_RUN_DIR,
    external: External = False,
    fit_weights: FitWeights = True,
    ready_timeout: ReadyTimeout = 120.0,
) -> None:
    """Start the whole stack in the background; return once every role is ready.

    The same stack as `recsys demo`, under a detached supervisor that writes
    RUN_DIR/stack.json; `recsys status` shows it, `recsys down` stops it."""
    from devstack.process import DevStackError, log_tail
    from devstack.runfile import RunDir
    from devstack.stack import preflight

    options = _options(dataset=dataset, data_dir=data_dir, train_fraction=train_fraction,
                       replay=replay, rate=rate, workers=workers, api_port=api_port,
                       api_processes=api_processes, partitions=partitions,
                       run_dir=run_dir, external=external,
                       fit_weights=fit_weights, ready_timeout=ready_timeout)
    run = RunDir.at(run_dir)
    try:
        preflight(options)
        for note in run.prepare():
            console.print(note)
    except DevStackError as exc:
        raise fail(exc) from None
    argv = [sys.executable, "-m", "recsys_cli.main", "demo", "--no-live",
            "--dataset", dataset, "--train-fraction", repr(train_fraction),
            "--replay" if replay else "--no-replay", "--rate", repr(rate),
            "--workers", str(workers), "--api-port", str(api_port),
            "--api-processes", str(api_processes),
            "--partitions", str(partitions), "--run-dir", str(run.root),
            "--fit-weights" if fit_weights else "--no-fit-weights",
            "--ready-timeout", repr(ready_timeout)]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir.resolve())]
    if external:
        argv.append("--external")
    log_path = run.log("supervisor")
    with log_path.open("wb") as log:
        supervisor = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + UP_TIMEOUT
    data: dict[str, Any] | None = None
    try:
        with console.status("starting the supervisor") as spinner:
            while True:
                data = run.read()
                mine = data is not None and data["supervisor"]["pid"] == supervisor.pid
                if mine and data is not None and data["state"] == "ready":
                    break
                if supervisor.poll() is not None or (mine and data is not None
                                                     and data["state"] == "failed"):
                    supervisor.wait(timeout=DOWN_TIMEOUT)
                    _sweep(run, quiet=True)
                    data = run.read()
                    why = (data or {}).get("error") or log_tail(log_path)
                    raise fail(f"the stack did not start: {why}\n(supervisor log: {log_path})")
                if time.monotonic() >= deadline:
                    _stop_supervisor(run, supervisor.pid)
                    raise fail(f"the stack was not ready within {UP_TIMEOUT:.0f} s; see "
                               f"{log_path}")
                if mine and data is not None:
                    spinner.update(escape(str(data.get("phase", ""))))
                time.sleep(0.2)
    except KeyboardInterrupt:
        _stop_supervisor(run, supervisor.pid)
        err_console.print("interrupted: the stack is stopped")
        raise typer.Exit(code=130) from None
    console.print(panel(data, foreground=False))


def _stop_supervisor(run: Any, pid: int) -> None:
    from devstack.runfile import terminate

    terminate(pid, None, DOWN_TIMEOUT)
    _sweep(run, quiet=True)


def _sweep(run: Any, *, quiet: bool) -> list[str]:
    """Stop any process recorded in ``stack.json`` that is still alive (its supervisor died
    without stopping it); the names of those stopped."""
    from devstack.runfile import terminate

    data = run.read() or {}
    stopped = []
    for role in reversed(data.get("roles", [])):
        pid = role.get("pid")
        if isinstance(pid, int) and terminate(pid, role.get("start_ticks"), 10.0):
            stopped.append(f"{role['name']} (pid {pid})")
    if stopped and not quiet:
        err_console.print(f"[yellow]stopped leftover processes:[/yellow] {', '.join(stopped)}")
    return stopped


def down(run_dir: RunDirOpt = DEFAULT_RUN_DIR) -> None:
    """Stop the stack started by `recsys up` in RUN_DIR.

    SIGTERM to its supervisor, which stops every role in reverse order; then any process of
    the stack still alive is stopped too."""
    from devstack.runfile import RunDir, terminate, wait_gone

    run = RunDir.at(run_dir)
    data = run.read()
    if data is None:
        console.print(f"no stack in {run.root}")
        return
    supervisor = data.get("supervisor", {})
    pid, ticks = supervisor.get("pid"), supervisor.get("start_ticks")
    if isinstance(pid, int) and run.running_supervisor() == pid:
        with console.status(f"stopping the stack in {run.root} (supervisor pid {pid})"):
            os.kill(pid, signal.SIGTERM)
            if not wait_gone(pid, ticks, DOWN_TIMEOUT):
                err_console.print(f"[yellow]supervisor pid {pid} still running after "
                                  f"{DOWN_TIMEOUT:.0f} s: killing it[/yellow]")
                terminate(pid, ticks, 1.0)
    else:
        console.print(f"no supervisor running in {run.root} (state: {data.get('state')})")
    _sweep(run, quiet=False)
    console.print(f"[green]stopped[/green]: nothing of the stack in {run.root} is running")


def status(
    run_dir: RunDirOpt = DEFAULT_RUN_DIR,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Refresh every second until Ctrl-C.")] = False,
) -> None:
    """Each role of the stack in RUN_DIR: pid, port, state and live figures."""
    from rich.live import Live

    from devstack.figures import FigureTracker
    from devstack.runfile import RunDir

    run = RunDir.at(run_dir)
    data = run.read()
    if data is None:
        raise fail(f"no stack in {run.root} (start one with `recsys up --run-dir {run_dir}`)")
    if run.running_supervisor() is None:
        console.print(status_table(data, None))
        err = f": {data['error']}" if data.get("error") else ""
        raise fail(f"the stack in {run.root} is not running (state {data.get('state')}{err})")
    tracker = FigureTracker()
    tracker.collect(data["roles"])
    if not watch:
        time.sleep(1.0)
        console.print(panel(data, foreground=False))
        console.print(status_table(run.read() or data, tracker.collect(data["roles"])))
        return
    try:
        with Live(console=console, auto_refresh=False) as view:
            while run.running_supervisor() is not None:
                time.sleep(1.0)
                data = run.read() or data
                view.update(status_table(data, tracker.collect(data["roles"])), refresh=True)
    except KeyboardInterrupt:
        return
    raise fail(f"the stack in {run.root} stopped")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
