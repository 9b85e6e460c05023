"""A backtest's report: plots, a metrics table, Markdown, self-contained HTML and JSON.

    >>> from usp.eval.report import write_report, metrics_table
    >>> print(metrics_table(backtest))
    >>> paths = write_report(backtest, "report/")   # PNGs, report.md, report.html, metrics.json

Everything here only reads a :class:`usp.eval.backtest.Backtest`. The ``plot_*`` functions draw
on a given matplotlib axis so the case-studies chapter can compose them into its own figures.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from usp.contracts.config import PredictorConfig
from usp.eval.backtest import Backtest

MODEL_ORDER = ("usp", "naive", "ewma", "ar1", "garch")
"""First rows of the metrics table: the ensemble and the baselines; each branch alone follows,
in the predictor's branch order (``Backtest.branch_labels``)."""
MODEL_LABELS = {
    "usp": "usp (blend)",
    "naive": "random walk",
    "ewma": "EWMA",
    "ar1": "AR(1)",
    "garch": "AR-GARCH",
}
FLAG_FIELDS = (
    ("emergency_mode", "emergency"),
    ("robust_mode", "robust (Huber)"),
    ("regime_change_detected", "regime change"),
    ("kurtosis_alert", "kurtosis alert"),
    ("degraded_inference_mode", "degraded"),
)
TABLE_COLUMNS = (
    ("rmse", "RMSE"),
    ("mae", "MAE"),
    ("rmse_over_naive", "RMSE/RW"),
    ("mae_over_naive", "MAE/RW"),
    ("directional_accuracy", "dir. acc."),
)
FIGURES = ("predictions", "weights", "holder", "cusum", "flags")


# -- numbers --------------------------------------------------------------------------------


def json_clean(value: Any) -> Any:
    """``value`` with numpy scalars and arrays made plain, and NaN/±inf made ``None``
    (JSON has no NaN; ``json.dumps`` would write the invalid token ``NaN``)."""
    if isinstance(value, dict):
        return {str(k): json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_clean(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _format(value: float | None, key: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if key == "directional_accuracy" or key.startswith("coverage"):
        return f"{value:.3f}"
    if key.endswith("_over_naive"):
        return f"{value:.4f}"
    return f"{value:.5g}"


def ordered_models(backtest: Backtest) -> list[str]:
    """Models with metrics, in table order (known names first, any others after)."""
    order = [*MODEL_ORDER, *backtest.branch_labels]
    known = [m for m in order if m in backtest.metrics]
    return known + sorted(m for m in backtest.metrics if m not in order)


def model_label(backtest: Backtest, model: str) -> str:
    """A model's display name: a branch's label, a baseline's, or the name itself."""
    return backtest.branch_labels.get(model) or MODEL_LABELS.get(model, model)


def calibration(backtest: Backtest) -> dict[str, float]:
    """The "usp" metrics that describe its intervals (coverage_50, coverage_90, ...)."""
    usp = backtest.metrics.get("usp", {})
    return {k: v for k, v in usp.items() if k.startswith("coverage")}


def flag_shares(backtest: Backtest) -> dict[str, float]:
    """Share of forecasts made with each flag raised (regime changes: count of alarms)."""
    shares = {}
    for field_name, _ in FLAG_FIELDS:
        if field_name in backtest.telemetry:
            flags = np.asarray(backtest.telemetry[field_name], dtype=bool)
            if field_name == "regime_change_detected":
                shares["regime_changes"] = int(flags.sum())
            else:
                shares[f"{field_name}_share"] = float(flags.mean()) if flags.size else 0.0
    return shares


def metrics_table(backtest: Backtest) -> str:
    """A fixed-width table of every model's accuracy, then usp's interval coverage."""
    lines = [f"{backtest.name}: {len(backtest.index)} one-step forecasts, no look-ahead"]
    header = f"{'model':<13}" + "".join(f"{label:>11}" for _, label in TABLE_COLUMNS)
    lines += [header, "-" * len(header)]
    for model in ordered_models(backtest):
        row = backtest.metrics[model]
        cells = "".join(f"{_format(row.get(key), key):>11}" for key, _ in TABLE_COLUMNS)
        lines.append(f"{model_label(backtest, model):<13}{cells}")
    coverage = calibration(backtest)
    if coverage:
        shown = ", ".join(f"{_level(k)} → {v:.3f}" for k, v in sorted(coverage.items()))
        lines.append(f"usp interval coverage (nominal → observed): {shown}")
    flags = flag_shares(backtest)
    if flags:
        lines.append("flags: " + _flag_text(flags))
    return "\n".join(lines)


def _level(key: str) -> str:
    """'coverage_90' -> '90%'."""
    return key.removeprefix("coverage_") + "%"


# -- plots ----------------------------------------------------------------------------------


def time_axis(backtest: Backtest) -> np.ndarray:
    """x values of the plots: numeric timestamps, dates parsed as ``datetime64``, or index."""
    stamps = backtest.timestamps
    if stamps is None:
        return np.asarray(backtest.index)
    stamps = np.asarray(stamps)
    if np.issubdtype(stamps.dtype, np.number) or np.issubdtype(stamps.dtype, np.datetime64):
        return stamps
    try:
        return stamps.astype("datetime64[D]")
    except ValueError:
        return np.asarray(backtest.index)


def plot_predictions(
    backtest: Backtest,
    ax,
    *,
    models: Sequence[str] = ("usp",),
    level: str = "90%",
    last: int | None = None,
) -> None:
    """Realised values, the chosen models' forecasts and usp's predictive band."""
    x = time_axis(backtest)
    window = slice(-last, None) if last else slice(None)
    ax.plot(x[window], backtest.realised[window], color="black", lw=1.0, label="realised")
    if level in backtest.intervals:
        band = np.asarray(backtest.intervals[level])[window]
        ax.fill_between(
            x[window], band[:, 0], band[:, 1], color="C0", alpha=0.2, lw=0, label=f"usp {level}"
        )
    for i, model in enumerate(models):
        if model in backtest.forecasts:
            ax.plot(
                x[window],
                np.asarray(backtest.forecasts[model])[window],
                color=f"C{i}",
                lw=0.9,
                label=model_label(backtest, model),
                zorder=3 if model == "usp" else 2,  # the blend on top of what it is compared with
            )
    ax.set_ylabel("value")
    ax.legend(fontsize=8, loc="best")


def plot_weights(backtest: Backtest, ax) -> None:
    """The blend's weights ρ_t over the branches as a stacked area (they sum to one)."""
    weights = np.asarray(backtest.telemetry["weights"])
    labels = list(backtest.branch_labels.values())
    ax.stackplot(time_axis(backtest), weights.T, labels=labels, alpha=0.85)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("weight")
    ax.legend(fontsize=8, loc="upper left", ncol=len(labels))


def plot_holder(backtest: Backtest, ax, *, threshold: float | None = None) -> None:
    """The WTMM Hölder exponent H_t and the circuit breaker's threshold."""
    threshold = PredictorConfig().holder_threshold if threshold is None else threshold
    x = time_axis(backtest)
    ax.plot(x, backtest.telemetry["holder_exponent"], color="C2", lw=0.9, label="H_t")
    ax.axhline(threshold, color="red", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.axhline(0.5, color="grey", ls=":", lw=1, label="Brownian 0.5")
    ax.set_ylabel("Hölder exponent")
    ax.legend(fontsize=8, loc="best", ncol=3)


def plot_cusum(backtest: Backtest, ax) -> None:
    """CUSUM drift G_t against the kurtosis-adaptive threshold h_t, alarms marked."""
    x = time_axis(backtest)
    drift = np.asarray(backtest.telemetry["cusum_drift"])
    ax.plot(x, drift, color="C1", lw=0.9, label="drift G_t")
    if "adaptive_threshold" in backtest.telemetry:
        ax.plot(x, backtest.telemetry["adaptive_threshold"], "k--", lw=1, label="threshold h_t")
    if "regime_change_detected" in backtest.telemetry:
        alarms = np.asarray(backtest.telemetry["regime_change_detected"], dtype=bool)
        ax.plot(x[alarms], drift[alarms], "rv", ms=6, label=f"alarm ({alarms.sum()})")
    ax.set_ylabel("CUSUM")
    ax.legend(fontsize=8, loc="upper left", ncol=3)


def plot_flags(backtest: Backtest, ax) -> None:
    """One raster row per flag: a mark wherever the flag was raised."""
    x = time_axis(backtest)
    rows = [(f, label) for f, label in FLAG_FIELDS if f in backtest.telemetry]
    for row, (field_name, _) in enumerate(rows):
        raised = np.asarray(backtest.telemetry[field_name], dtype=bool)
        ax.plot(x[raised], np.full(raised.sum(), row), "|", ms=10, color=f"C{row}")
    ax.set_yticks(range(len(rows)), [label for _, label in rows], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    if len(x):
        ax.set_xlim(x[0], x[-1])
    ax.grid(axis="y", alpha=0.3)


def _figure(draw, backtest: Backtest, title: str, height: float = 3.2, **kwargs):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, height), layout="constrained")
    ax = fig.subplots()
    draw(backtest, ax, **kwargs)
    ax.set_title(f"{backtest.name}: {title}", fontsize=10)
    return fig


ZOOM = 150
"""Targets shown in the close-up panel of the predictions figure."""


def _predictions_figure(backtest: Backtest):
    """The whole test period, then a close-up of its last ZOOM targets (a long series' band is
    too thin to see at full scale)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 6), layout="constrained")
    whole, close = fig.subplots(2, 1)
    plot_predictions(backtest, whole, models=("usp",))
    whole.set_title(f"{backtest.name}: one-step forecasts and the 90% predictive band", fontsize=10)
    plot_predictions(backtest, close, models=("usp", "naive"), last=ZOOM)
    close.set_title(f"the last {min(ZOOM, len(backtest.index))} targets", fontsize=10)
    return fig


def report_figures(backtest: Backtest, *, holder_threshold: float | None = None) -> dict:
    """The report's matplotlib figures, by name. They are ``matplotlib.figure.Figure``s made
    without pyplot: no backend is chosen or changed, nothing joins pyplot's list of open
    figures, and each is freed with its last reference (``fig.savefig`` renders it)."""
    return {
        "predictions": _predictions_figure(backtest),
        "weights": _figure(plot_weights, backtest, "branch weights ρ_t"),
        "holder": _figure(
            plot_holder, backtest, "Hölder exponent (WTMM)", threshold=holder_threshold
        ),
        "cusum": _figure(plot_cusum, backtest, "CUSUM on the forecast errors"),
        "flags": _figure(plot_flags, backtest, "flags raised", height=2.4),
    }


# -- files ----------------------------------------------------------------------------------


def metrics_document(backtest: Backtest, config: PredictorConfig | None = None) -> dict:
    """What metrics.json holds: the series, the forecast range, metrics, flags, the config."""
    return json_clean(
        {
            "name": backtest.name,
            "forecasts": len(backtest.index),
            "first_index": int(backtest.index[0]) if len(backtest.index) else None,
            "last_index": int(backtest.index[-1]) if len(backtest.index) else None,
            "metrics": backtest.metrics,
            "flags": flag_shares(backtest),
            "config": None if config is None else config.to_dict(),
        }
    )


def _markdown_table(backtest: Backtest) -> str:
    head = "| model | " + " | ".join(label for _, label in TABLE_COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(TABLE_COLUMNS)
    rows = [
        f"| {model_label(backtest, m)} | "
        + " | ".join(_format(backtest.metrics[m].get(k), k) for k, _ in TABLE_COLUMNS)
        + " |"
        for m in ordered_models(backtest)
    ]
    return "\n".join([head, rule, *rows])


def _html_table(backtest: Backtest) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in TABLE_COLUMNS)
    rows = []
    for m in ordered_models(backtest):
        cells = "".join(
            f"<td>{_format(backtest.metrics[m].get(k), k)}</td>" for k, _ in TABLE_COLUMNS
        )
        rows.append(f"<tr><th>{html.escape(model_label(backtest, m))}</th>{cells}</tr>")
    return f"<table><tr><th>model</th>{head}</tr>{''.join(rows)}</table>"


def _calibration_lines(backtest: Backtest) -> list[str]:
    """One line per interval level, then one line of flag frequencies."""
    coverage = calibration(backtest)
    lines = [
        f"{_level(k)} interval: observed coverage {v:.3f}" for k, v in sorted(coverage.items())
    ]
    flags = flag_shares(backtest)
    if flags:
        lines.append("flags: " + _flag_text(flags))
    return lines


def _flag_text(flags: dict[str, float]) -> str:
    return ", ".join(
        f"{k.removesuffix('_share').replace('_', ' ')} "
        + (f"{v}" if isinstance(v, int) else f"{100 * v:.1f}%")
        for k, v in flags.items()
    )


FIGURE_CAPTIONS = {
    "predictions": "Realised values, usp's one-step forecasts and its 90% predictive band.",
    "weights": "The blend's weights over branches A–D (JKO flow; guards override them).",
    "holder": "WTMM Hölder exponent of the buffer; below the threshold the breaker trips.",
    "cusum": "CUSUM drift of the standardised forecast errors, its adaptive threshold, alarms.",
    "flags": "Ticks at which each flag was raised.",
}


def write_report(
    backtest: Backtest,
    directory: str | Path,
    *,
    config: PredictorConfig | None = None,
    dpi: int = 110,
) -> dict[str, Path]:
    """Write the PNGs, ``report.md``, a self-contained ``report.html`` (images inlined as
    base64) and ``metrics.json`` into ``directory`` (created). Returns name -> path.

    ``config`` is the predictor's configuration: its Hölder threshold is drawn and it is
    recorded in metrics.json (default: ``PredictorConfig()``).
    """
    config = PredictorConfig() if config is None else config
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    figures = report_figures(backtest, holder_threshold=config.holder_threshold)
    for name, fig in figures.items():
        paths[name] = directory / f"{name}.png"
        fig.savefig(paths[name], dpi=dpi)

    document = metrics_document(backtest, config)
    paths["metrics"] = directory / "metrics.json"
    paths["metrics"].write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")

    title = f"usp backtest: {backtest.name}"
    summary = (
        f"{len(backtest.index)} one-step forecasts of `{backtest.name}` (targets "
        f"{document['first_index']}–{document['last_index']}), each made from the values "
        "before its target only. Ratios are against the random walk (RW); directional "
        "accuracy counts the sign of the forecast change against the realised change."
    )
    calibration = _calibration_lines(backtest)
    markdown = [f"# {title}", "", summary, "", _markdown_table(backtest), ""]
    markdown += [f"- {line}" for line in calibration]
    markdown += ["", "## Figures", ""]
    for name in FIGURES:
        markdown += [f"![{FIGURE_CAPTIONS[name]}]({name}.png)", "", FIGURE_CAPTIONS[name], ""]
    paths["markdown"] = directory / "report.md"
    paths["markdown"].write_text("\n".join(markdown))

    images = "".join(
        f"<figure><img alt='{name}' src='data:image/png;base64,"
        f"{base64.b64encode(paths[name].read_bytes()).decode()}'>"
        f"<figcaption>{html.escape(FIGURE_CAPTIONS[name])}</figcaption></figure>"
        for name in FIGURES
    )
    calibration_items = "".join(f"<li>{html.escape(line)}</li>" for line in calibration)
    paths["html"] = directory / "report.html"
    paths["html"].write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(summary.replace('`', ''))}</p>"
        f"{_html_table(backtest)}<ul>{calibration_items}</ul>{images}</body></html>\n"
    )
    return paths


_CSS = (
    "body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1.5em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}"
    "td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:right}"
    "tr th:first-child{text-align:left}img{max-width:100%}"
    "figcaption{font-size:.9em;color:#555}"
)
