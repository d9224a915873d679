"""benchmarks.training end to end on a tiny synthetic size (on request: -m benchmark)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.training import TRAIN_PHASES

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.benchmark
def test_training_benchmark_runs_end_to_end_on_a_tiny_synthetic_dataset(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.training", "--interactions", "20000",
         "--skip-ml100k", "--json", str(out)],
        cwd=ROOT, check=True, timeout=300, capture_output=True,
    )
    result = json.loads(out.read_text())["synthetic"]
    assert result["shape"]["interactions"] == 20_000
    (run,) = result["runs"]
    assert run["published"] and run["version"] == 1
    assert run["window"]["interactions"] == 20_000
    assert run["seconds"]["total"] > 0 and run["seconds"]["publish"] > 0
    # every training phase the pipeline times is one row of the report
    phases = {k.removeprefix("train_") for k in run["seconds"] if k.startswith("train_")}
    assert phases - {"total"} == set(TRAIN_PHASES)
    assert result["pipeline_peak_rss_mb"] > result["loaded"]["imported_rss_mb"] > 0
    bare = result["implicit"]
    assert bare["nnz"] == 20_000 and len(bare["seconds"]) == 1
    assert bare["cg_steps"] == 2 and len(bare["default_seconds"]) == 1
    assert bare["peak_rss_mb"] > 0
