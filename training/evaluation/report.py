"""Run the protocols, aggregate seeds, write JSON and a comparison chart (PNG)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys_core.dataset import Dataset
from training.evaluation.protocols import protocol_rating, protocol_stream, protocol_topn
from training.evaluation.splits import Stratify
from training.pipeline import TrainParams

Progress = Callable[[str], None]

#: published figures on the same protocols, for the table and the chart (ml-100k)
PUBLISHED_TOPN = {
    "BiVAE": 0.475, "BPR": 0.442, "LightGCN": 0.420, "NCF": 0.396, "SAR": 0.382,
}
PUBLISHED_RATING = {
    "SVD++": (0.919, 0.721), "KNNBaseline": (0.931, 0.733), "SVD": (0.934, 0.737),
    "BaselineOnly": (0.944, 0.748),
}
TARGETS = {"topn_ndcg@10": 0.48, "rating_rmse": 0.92, "stream_hr@10": 0.24}


def mean_over_seeds(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    models = runs[0]["models"].keys()
    return {
        m: {
            metric: float(np.mean([r["models"][m][metric] for r in runs]))
            for metric in runs[0]["models"][m]
        }
        for m in models
    }


def run_evaluation(
    dataset: Dataset,
    protocols: Sequence[str],
    seeds: Sequence[int] = (42, 7, 2026),
    stratify: Stratify = "user",
    params: TrainParams | None = None,
    progress: Progress | None = None,
    retrain_every: int = 0,
    rerank_every: int = 5000,
) -> dict[str, Any]:
    out: dict[str, Any] = {"dataset": dataset.name, "summary": dataset.summary()}
    if "topn" in protocols:
        runs = [protocol_topn(dataset, params, s, stratify, progress) for s in seeds]
        out["topn"] = {"runs": runs, "mean": mean_over_seeds(runs), "seeds": list(seeds),
                       "stratify": stratify, "default_surface": runs[0]["default_surface"]}
    if "rating" in protocols:
        out["rating"] = protocol_rating(dataset, params, progress=progress)
    if "stream" in protocols:
        out["stream"] = protocol_stream(dataset, params, progress=progress,
                                        retrain_every=retrain_every,
                                        rerank_every=rerank_every)
    return out


def write_report(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"eval-{result['dataset']}"
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(result, indent=2, sort_keys=True))
    png_path = out_dir / f"{stem}.png"
    plot_report(result, png_path)
    return json_path, png_path


def plot_report(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in ("topn", "rating", "stream") if p in result]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "topn":
            ours = {m: v["ndcg@10"] for m, v in result["topn"]["mean"].items()}
            ref = PUBLISHED_TOPN if result["dataset"] == "ml-100k" else {}
            _bars(ax, ours, ref, "NDCG@10", "A · top-10 (mean over seeds)", TARGETS["topn_ndcg@10"])
        elif panel == "rating":
            ours = {m: v["rmse"] for m, v in result["rating"]["models"].items()}
            ref = ({k: v[0] for k, v in PUBLISHED_RATING.items()}
                   if result["dataset"] == "ml-100k" else {})
            _bars(ax, ours, ref, "RMSE (lower is better)", "B · rating, 5-fold CV",
                  TARGETS["rating_rmse"])
            ax.set_ylim(0.8, max(max(ours.values()), 1.0) + 0.05)
        else:
            ours = {m: v["hr@10"] for m, v in result["stream"]["models"].items()}
            _bars(ax, ours, {}, "HR@10", "C · streaming replay", TARGETS["stream_hr@10"])
    fig.suptitle(f"Offline evaluation on {result['dataset']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(ax: Any, ours: dict[str, float], ref: dict[str, float], ylabel: str, title: str,
          target: float) -> None:
    names = list(ours) + [f"{k}*" for k in ref]
    values = list(ours.values()) + list(ref.values())
    colors = ["#2b6cb0"] * len(ours) + ["#a0aec0"] * len(ref)
    ax.bar(range(len(values)), values, color=colors)
    ax.axhline(target, color="#c53030", linestyle="--", linewidth=1, label=f"target {target}")
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=7)
    ax.legend(fontsize=7, title="* published", title_fontsize=7)
