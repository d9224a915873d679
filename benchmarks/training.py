"""Training benchmark: full retrain + publish, per phase, with peak memory, next to a bare
``implicit`` ALS fit on the same confidence matrix in the same run.

- ml-100k: a first version, then ``--repeats`` retrains that reuse the published blend
  weights (``fit_weights=False``, what the trainer does between refits) and one that refits
  them; each through ``training.train.run_training`` with a registry, as the trainer calls it
  (quality-gate holdout included, reported as its own phase).
- synthetic: ``--interactions`` ratings from :mod:`benchmarks.synthetic` (power-law
  popularity, log-normal activity, sittings, metadata); one retrain + publish.

Each measured step runs in a fresh child process so that each peak RSS (the
child's ``VmHWM``) is its own: the pipeline in one child (it saves the confidence matrix it
built), then the bare ``AlternatingLeastSquares(factors=64, iterations=15,
regularization=<the pipeline's>, use_gpu=False)`` fit on that matrix in another, with the
pipeline's conjugate-gradient steps per half-step (``cg_steps``) and, when those differ,
also with ``implicit``'s default (3).

Run: ``python -m benchmarks.training [--interactions 10_000_000] [--users N] [--movies M]
[--seed 0] [--skip-ml100k] [--repeats 3] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchmarks.harness import DATA_DIR, ROOT

console = Console()
TRAIN_PHASES = ("prepare", "als", "neighbors", "sequence", "content", "popularity", "rating")


def peak_rss_mb() -> float:
    """This process's peak resident set so far, in MiB: ``VmHWM`` of /proc/self/status (the
    high-water mark of this program's own memory), else ``ru_maxrss``, which on Linux also
    counts the parent's resident set at the fork (the parent holds the generated data)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _emit(**record: Any) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------ children


def child_pipeline(args: argparse.Namespace) -> None:
    """Load the data, run the requested trainings, save the confidence matrix."""
    import scipy.sparse as sp

    from benchmarks.synthetic import SyntheticArrays, to_dataset
    from recsys_core.loaders import load_dataset
    from training.registry import ModelRegistry
    from training.train import run_training

    imported_mb = peak_rss_mb()
    t = time.perf_counter()
    if args.source.endswith(".npz"):
        dataset = to_dataset(SyntheticArrays.load(Path(args.source)))
    else:
        dataset = load_dataset(args.source, DATA_DIR)
    _emit(kind="loaded", seconds=time.perf_counter() - t, imported_rss_mb=imported_mb,
          loaded_rss_mb=peak_rss_mb(), interactions=len(dataset.interactions))
    registry = ModelRegistry(Path(args.model_dir))
    run = None
    for label in args.runs.split(","):
        start = time.perf_counter()

        def progress(phase: str, label: str = label, start: float = start) -> None:
            _emit(kind="phase", run=label, phase=phase, at=time.perf_counter() - start)

        run = run_training(dataset, registry, fit_weights=label == "fit", progress=progress,
                           holdout_fraction=args.holdout_fraction)
        _emit(kind="run", run=label, seconds=run.seconds, published=run.published,
              version=run.version, peak_rss_mb=peak_rss_mb(),
              holdout_hr=run.metrics.get("holdout_hr@10"),
              window=run.models.bundle.manifest["data_window"])
    if run is not None:
        sp.save_npz(args.matrix, run.models.data.confidence, compressed=False)
        _emit(kind="done", peak_rss_mb=peak_rss_mb(),
              als_regularization=run.models.als.regularization,
              als_cg_steps=run.models.bundle.manifest["params"].get("als_cg_steps", 3))


def child_implicit(args: argparse.Namespace) -> None:
    """``--repeats`` bare ``implicit`` fits on the saved confidence matrix with the pipeline's
    CG steps (``seconds``), then, when those differ from ``implicit``'s default (3), as many
    with the default (``default_seconds``)."""
    import numpy as np
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    matrix = sp.load_npz(args.matrix).tocsr().astype(np.float32)
    loaded = peak_rss_mb()
    times: dict[int, list[float]] = {}
    for steps in dict.fromkeys([args.cg_steps, 3]):
        for _ in range(args.repeats):
            with threadpool_limits(1, "blas"):  # as the pipeline; implicit's threads: all CPUs
                model = AlternatingLeastSquares(
                    factors=64, iterations=15, regularization=args.regularization, alpha=1.0,
                    use_gpu=False, random_state=0, calculate_training_loss=False)
                model.cg_steps = steps
                t = time.perf_counter()
                model.fit(matrix, show_progress=False)
                times.setdefault(steps, []).append(time.perf_counter() - t)
    _emit(kind="done", seconds=times[args.cg_steps], cg_steps=args.cg_steps,
          default_seconds=times[3], loaded_rss_mb=loaded, peak_rss_mb=peak_rss_mb(),
          shape=list(matrix.shape), nnz=int(matrix.nnz))


# ------------------------------------------------------------------ parent


def run_child(argv: list[str], on_record: Callable[[dict[str, Any]], None]
              ) -> list[dict[str, Any]]:
    """Run ``python -m benchmarks.training --child ...`` and collect its JSON lines."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.training", *argv], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, text=True)
    records = []
    for line in proc.stdout or ():
        if line.startswith("{"):
            record = json.loads(line)
            records.append(record)
            on_record(record)
    if proc.wait() != 0:
        raise RuntimeError(f"child {argv[:2]} failed with exit code {proc.returncode}")
    return records


def measure(source: str, runs: str, scratch: Path, repeats: int, holdout: float,
            bar: Progress, title: str) -> dict[str, Any]:
    """The pipeline child, then the bare-implicit child on the matrix it saved."""
    task = bar.add_task(f"{title}: starting", total=None)

    def show(record: dict[str, Any]) -> None:
        if record["kind"] == "phase":
            bar.update(task, description=f"{title}: {record['run']} run, {record['phase']} "
                                         f"(at {record['at']:.1f}s)")
        elif record["kind"] == "run":
            bar.update(task, description=f"{title}: {record['run']} run done in "
                                         f"{record['seconds']['total']:.1f}s")

    matrix = scratch / f"{title}-confidence.npz"
    records = run_child(["--child", "pipeline", "--source", source, "--runs", runs,
                         "--model-dir", str(scratch / f"{title}-models"),
                         "--matrix", str(matrix), "--holdout-fraction", str(holdout)], show)
    done = next(r for r in records if r["kind"] == "done")
    bar.update(task, description=f"{title}: bare implicit fit")
    bare = run_child(["--child", "implicit", "--matrix", str(matrix), "--repeats",
                      str(repeats), "--regularization", str(done["als_regularization"]),
                      "--cg-steps", str(done["als_cg_steps"])], lambda r: None)[-1]
    bar.update(task, description=f"{title}: done", total=1, completed=1)
    return {
        "loaded": next(r for r in records if r["kind"] == "loaded"),
        "runs": [r for r in records if r["kind"] == "run"],
        "pipeline_peak_rss_mb": done["peak_rss_mb"],
        "implicit": bare,
    }


def summarise(run: dict[str, Any], bare_s: float) -> dict[str, float]:
    s = run["seconds"]
    train = sum(s.get(f"train_{p}", 0.0) for p in TRAIN_PHASES)
    publish = s.get("publish", 0.0)
    return {
        **{p: s.get(f"train_{p}", 0.0) for p in TRAIN_PHASES},
        "train": train,
        "publish": publish,
        "train_publish": train + publish,
        "holdout": s.get("holdout", 0.0),
        "blend_weights": s.get("blend_weights", 0.0),
        "total": s["total"],
        "ratio_train_publish": (train + publish) / bare_s,
        "ratio_total": s["total"] / bare_s,
        "ratio_als": s.get("train_als", 0.0) / bare_s,
    }


def report(name: str, result: dict[str, Any]) -> None:
    bare = result["implicit"]
    bare_s = min(bare["seconds"])
    t = Table(title=f"{name}: retrain + publish, seconds (load average before: "
                    f"{result.get('load_before', '?')}, after: {result['load_after']})")
    t.add_column("phase")
    rows = [summarise(run, bare_s) for run in result["runs"]]
    for run in result["runs"]:
        t.add_column(f"{run['run']} (v{run['version']})", justify="right")
    labels = {p: p for p in TRAIN_PHASES} | {
        "train": "train (all models)", "publish": "publish", "train_publish":
        "retrain + publish", "holdout": "quality-gate holdout", "blend_weights":
        "blend-weight fit", "total": "total", "ratio_train_publish":
        "ratio (retrain + publish) / bare implicit", "ratio_total": "ratio total / bare implicit",
        "ratio_als": "ratio ALS phase / bare implicit"}
    for key, label in labels.items():
        t.add_row(label, *(f"{r[key]:.2f}" for r in rows))
    console.print(t)
    loaded = result["loaded"]
    default_s = min(bare["default_seconds"])
    console.print(
        f"bare implicit fit ({bare['cg_steps']} CG steps, as the pipeline): "
        f"{', '.join(f'{s:.2f}' for s in bare['seconds'])} s "
        f"(best {bare_s:.2f} s); with implicit's default 3 CG steps: "
        f"{', '.join(f'{s:.2f}' for s in bare['default_seconds'])} s (best {default_s:.2f} s; "
        f"ratio retrain + publish / that: {rows[0]['train_publish'] / default_s:.2f}) "
        f"on {bare['shape'][0]:,} × {bare['shape'][1]:,}, "
        f"{bare['nnz']:,} nnz; peak RSS {bare['peak_rss_mb']:,.0f} MB "
        f"({bare['loaded_rss_mb']:,.0f} MB after loading the matrix)")
    console.print(
        f"pipeline child: peak RSS {result['pipeline_peak_rss_mb']:,.0f} MB "
        f"({loaded['imported_rss_mb']:,.0f} MB after imports, "
        f"{loaded['loaded_rss_mb']:,.0f} MB after loading the data in "
        f"{loaded['seconds']:.1f} s)")


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interactions", type=lambda v: int(v.replace("_", "")),
                    default=10_000_000, help="synthetic ratings (0: skip)")
    ap.add_argument("--users", type=int, default=None, help="default: interactions / 71")
    ap.add_argument("--movies", type=int, default=None, help="default: interactions / 333")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-ml100k", action="store_true")
    ap.add_argument("--repeats", type=int, default=3,
                    help="ml-100k retrains with reused weights, and bare implicit fits")
    ap.add_argument("--holdout-fraction", type=float, default=0.1,
                    help="quality-gate holdout (the trainer's default 0.1; 0: no gate)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    # the children (not for direct use)
    ap.add_argument("--child", choices=("pipeline", "implicit"), help=argparse.SUPPRESS)
    ap.add_argument("--source", help=argparse.SUPPRESS)
    ap.add_argument("--runs", default="first", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--matrix", help=argparse.SUPPRESS)
    ap.add_argument("--regularization", type=float, default=0.5, help=argparse.SUPPRESS)
    ap.add_argument("--cg-steps", type=int, default=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "pipeline":
        return child_pipeline(args)
    if args.child == "implicit":
        return child_implicit(args)

    from benchmarks.synthetic import describe, generate

    results: dict[str, Any] = {"load_before": load(), "cpus": os.cpu_count()}
    scratch = Path(tempfile.mkdtemp(prefix="bench-training-"))
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as bar:
            if not args.skip_ml100k:
                runs = ",".join(["first", *["reuse"] * args.repeats, "fit"])
                load_start = load()
                results["ml-100k"] = measure("ml-100k", runs, scratch, args.repeats,
                                             args.holdout_fraction, bar, "ml-100k")
                results["ml-100k"].update(load_before=load_start, load_after=load())
            if args.interactions > 0:
                task = bar.add_task("synthetic: generating", total=None)
                t = time.perf_counter()
                arrays = generate(args.interactions, args.users, args.movies, args.seed)
                gen_s = time.perf_counter() - t
                shape = describe(arrays)
                path = scratch / "synthetic.npz"
                arrays.save(path)
                del arrays
                bar.update(task, description=f"synthetic: generated in {gen_s:.1f}s",
                           total=1, completed=1)
                load_start = load()
                result = measure(str(path), "first", scratch, 1, args.holdout_fraction, bar,
                                 "synthetic")
                results["synthetic"] = {**result, "generate_seconds": gen_s, "shape": shape,
                                        "load_before": load_start, "load_after": load()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if "ml-100k" in results:
        report("ml-100k", results["ml-100k"])
    if "synthetic" in results:
        syn = results["synthetic"]
        console.print(f"synthetic data, generated in {syn['generate_seconds']:.1f} s: "
                      + ", ".join(f"{k} {v:,.3f}" if isinstance(v, float) else f"{k} {v:,}"
                                  for k, v in syn["shape"].items()))
        report(f"synthetic {syn['shape']['interactions']:,}", syn)
    console.print(f"load average (1/5/15 min) before: {results['load_before']}; after: "
                  f"{load()}; {results['cpus']} CPUs")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
