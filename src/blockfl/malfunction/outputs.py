"""Write the malfunction experiment's files: CSV, JSON summary and PNG figures."""

from __future__ import annotations

import json
from pathlib import Path

from blockfl.malfunction import plots, report
from blockfl.malfunction.experiment import MalfunctionResults
from blockfl.malfunction.time_to_accuracy import summarize, times_to_target


def write_outputs(results: MalfunctionResults, out_dir: Path) -> list[Path]:
    """Write ``malfunction_rounds.csv``, ``malfunction_time_to_target.csv``,
    ``malfunction_summary.json``, ``malfunction_config.toml`` and four PNGs into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    times = times_to_target(results)
    targets = summarize(times)
    summary_json = out_dir / "malfunction_summary.json"
    summary_json.write_text(json.dumps(report.summary(results, targets, times), indent=2) + "\n")
    config_toml = out_dir / "malfunction_config.toml"
    config_toml.write_text(results.config.to_toml())
    return [
        report.write_csv(results.records, out_dir / "malfunction_rounds.csv"),
        report.write_csv(times, out_dir / "malfunction_time_to_target.csv"),
        summary_json,
        config_toml,
        plots.plot_accuracy(results, out_dir / "malfunction_accuracy.png"),
        plots.plot_latency(results, out_dir / "malfunction_latency.png"),
        plots.plot_sweep(results, out_dir / "malfunction_accuracy_vs_p.png"),
        plots.plot_time_to_target(results, targets, times,
                                  out_dir / "malfunction_time_to_target.png"),
    ]
