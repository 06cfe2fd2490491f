"""``python -m benchmarks chart``: PNG charts from ``benchmarks/results/*.json`` (matplotlib).

Writes one ``<name>.png`` per result next to its JSON, and ``performance.png``
with the four throughput charts together; ``--docs`` also copies that one to
``docs/_static/performance.png`` for the documentation.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import RESULTS, ROOT


def _bars(ax: Any, labels: list[str], values: list[float], notes: list[str], title: str,
          ylabel: str) -> None:
    bars = ax.bar(labels, values, color="#4878a8")
    for bar, note in zip(bars, notes, strict=True):
        ax.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    if len(labels) > 8:  # many bars: slanted one-line labels, annotations smaller
        ax.set_xticks(range(len(labels)), [label.replace("\n", " ") for label in labels],
                      rotation=40, ha="right", fontsize=7)
        for text in ax.texts:
            text.set_fontsize(6)
    ax.margins(y=0.15)


def plot_http(ax: Any, data: dict[str, Any]) -> None:
    """req/s per worker class and case, with the ratio to that class's ``bare``."""
    summary = data["summary"]
    if "bare" in summary:  # a result from before worker classes: one class
        summary = {"": summary}
    labels, values, notes = [], [], []
    for cls, s in summary.items():
        for case, v in s.items():
            labels.append(f"{case}\n{cls}" if cls else case)
            values.append(v["rps"])
            notes.append(f"{v['ratio']:.2f}x")
    _bars(ax, labels, values, notes, "HTTP: req/s (ratio to bare view, per worker class)",
          "requests/s")


def plot_strategies(ax: Any, data: dict[str, Any]) -> None:
    """Admitted orders/s per strategy, hot item and 1,000 items."""
    labels, values, notes = [], [], []
    for scenario, per in data["summary"].items():
        for strategy, v in per.items():
            if "orders_per_s" not in v:
                continue
            labels.append(f"{strategy}\n{scenario}")
            values.append(v["orders_per_s"])
            notes.append(f"{v['vs_lua']:.2f}x")
    _bars(ax, labels, values, notes, "Strategies: orders/s, 64 clients (ratio to lua)",
          "orders/s")


def plot_worker(ax: Any, data: dict[str, Any]) -> None:
    """Orders/s drained per hook and worker count."""
    labels, values, notes = [], [], []
    for hook, entry in data["summary"].items():
        for workers in sorted(k for k in entry if k.isdigit()):
            labels.append(f"{hook}\n{workers} worker{'s' if workers != '1' else ''}")
            values.append(entry[workers]["orders_per_s"])
            notes.append(f"{entry[workers]['orders_per_s']:,.0f}")
    if not labels:
        ax.text(0.5, 0.5, "worker: not available yet", ha="center", va="center")
        ax.set_axis_off()
        return
    _bars(ax, labels, values, notes, "Worker: orders/s drained", "orders/s")


def plot_ceiling(ax: Any, data: dict[str, Any]) -> None:
    """redis-benchmark calls/s per case."""
    s = data.get("summary", {})
    items = sorted(s.items(), key=lambda kv: -kv[1]["rps"])
    _bars(ax, [k.replace(" EVALSHA", "\nEVALSHA") for k, _ in items],
          [v["rps"] for _, v in items], [f"{v['rps']:,.0f}" for _, v in items],
          "Redis ceiling: calls/s on one core", "calls/s")
    ax.set_yscale("log")


def plot_sellout(ax: Any, data: dict[str, Any]) -> None:
    """Milestones of the spike."""
    t = data["timing"]
    _bars(ax, ["first sale", "sold out", "all answered"],
          [t["first_sale_ms"] or 0, t["sold_out_ms"] or 0, t["all_answered_ms"]],
          [f"{v or 0:,.0f} ms" for v in (t["first_sale_ms"], t["sold_out_ms"],
                                         t["all_answered_ms"])],
          f"Sell-out: {data['settings']['stock']:,} units, "
          f"{data['settings']['buyers']:,} buyers", "ms after the spike starts")


PLOTS: dict[str, Callable[[Any, dict[str, Any]], None]] = {
    "http": plot_http,
    "strategies": plot_strategies,
    "worker": plot_worker,
    "redis-ceiling": plot_ceiling,
    "sellout": plot_sellout,
}


def render_all(out: Path | None = None, docs: bool = False) -> list[Path]:
    """Render every chart whose JSON exists; return the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = out or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    loaded = {}
    for name in PLOTS:
        path = RESULTS / f"{name}.json"
        if path.exists():
            loaded[name] = json.loads(path.read_text())
    for name, data in loaded.items():
        fig, ax = plt.subplots(figsize=(7, 4))
        PLOTS[name](ax, data)
        fig.tight_layout()
        target = out / f"{name}.png"
        fig.savefig(target, dpi=100)
        plt.close(fig)
        written.append(target)
    combined = [n for n in ("http", "strategies", "worker", "redis-ceiling") if n in loaded]
    if combined:
        fig, axes = plt.subplots(2, 2, figsize=(12, 8))
        for ax, name in zip(axes.flat, combined, strict=False):
            PLOTS[name](ax, loaded[name])
        for ax in list(axes.flat)[len(combined):]:
            ax.set_axis_off()
        machine = next(iter(loaded.values()))["machine"]
        fig.suptitle(f"Flask-FlashSale benchmarks: {machine.get('cores')} cores, "
                     f"{machine.get('cpu', '')}", fontsize=11)
        fig.tight_layout()
        target = out / "performance.png"
        fig.savefig(target, dpi=90)
        plt.close(fig)
        written.append(target)
        if docs:
            static = ROOT / "docs" / "_static"
            static.mkdir(exist_ok=True)
            shutil.copyfile(target, static / "performance.png")
            written.append(static / "performance.png")
    return written
