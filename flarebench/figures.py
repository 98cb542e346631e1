"""The paper's figure for one experiment: test accuracy vs round and vs cumulative uplink bits, one
line per method, one figure per sparsity (the uncompressed FedAvg run, method ``none``, is drawn in
every one). Drawn with :mod:`flarebench.plots` (its panels, styles, families and legends). The title is
the sweep config's ``[meta] title``, else what the runs share (dataset/model, clients, rounds, lr, batch).
For a sweep config, runs in its out directory that differ from a grid run only in seed are drawn too.

File names are stable, so a paper's LaTeX can include them:
``OUT/{experiment}-s{sparsity}.png`` and ``.pdf`` (e.g. ``cnn_mnist_smoke-s0.99999.pdf``);
``{experiment}-dense`` when only uncompressed runs exist; ``{experiment}-{dataset}-{model}-s...``
when a directory mixes datasets or models.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ResultsError
from .results import CONFIG_FILE, RunRecord

FORMATS = ("png", "pdf")


def _records_of(target: Path, runs: Path | None = None) -> tuple[str, str | None, list[RunRecord], Path, list[str]]:
    """(experiment name, title, runs, default out dir, warnings) for a sweep config or a results directory."""
    from .compare import collect_runs

    if target.suffix == ".toml" or target.is_file():
        from .sweep import load_sweep

        sweep = load_sweep(target, out=runs)
        dirs = [Path(c.out) / c.name for c in sweep.configs()]
        present = [d for d in dirs if (d / CONFIG_FILE).is_file()]
        missing = [f"{d} has not been run" for d in dirs if d not in present]
        if not present:
            raise ResultsError(f"no runs of {target} under {sweep.out}; run `flarebench sweep {target}` first")
        records, warnings = collect_runs(present)
        return sweep.experiment, sweep.meta.get("title"), records + _more_seeds(records, sweep.out), sweep.out / "figures", missing + warnings
    if not target.is_dir():
        raise ResultsError(f"{target} is neither a sweep config (.toml) nor a results directory")
    records, warnings = collect_runs([target])
    return target.resolve().name, None, records, target / "figures", warnings  # the name: file names only; titles say what the runs share


def _more_seeds(records: list[RunRecord], out: Path) -> list[RunRecord]:
    """Runs under ``out`` beyond the config's grid that differ from a grid run only in seed (e.g. a
    ``sweep --seeds 1,2`` of some methods): they join their experiment's line."""
    from .compare import collect_runs, experiment_key

    keys = {experiment_key(r) for r in records}
    have = {r.path.resolve() for r in records}
    try:
        found, _ = collect_runs([out])
    except ResultsError:
        return []
    return [r for r in found if r.path.resolve() not in have and experiment_key(r) in keys and r.meta.get("status") == "complete"]


def paper_figures(
    target: str | Path, out_dir: str | Path | None = None, formats=FORMATS, runs: str | Path | None = None
) -> tuple[list[Path], list[str]]:
    """Write the experiment's figures for a sweep config (its runs under ``runs``, default the
    sweep's out) or a results directory; returns (paths written, warnings about runs left out)."""
    import matplotlib.pyplot as plt

    from .methods.presets import uses_sparsity
    from .plots import STYLE, by_group, describe, experiments, group_slug, panel_figure

    experiment, title, records, default_out, warnings = _records_of(Path(target), None if runs is None else Path(runs))
    out = Path(out_dir) if out_dir is not None else default_out
    out.mkdir(parents=True, exist_ok=True)
    groups = by_group(records)
    paths: list[Path] = []
    with plt.rc_context(STYLE):
        for group, runs in groups:
            every = [r for r in runs if not uses_sparsity(r.config)]  # FedAvg (and other non-sparsifiers): in every figure
            sparsities = sorted({r.config["sparsity"] for r in runs if uses_sparsity(r.config)})
            prefix = experiment if len(groups) == 1 else f"{experiment}-{group_slug(group)}"
            head = title or describe(runs)
            for s in sparsities or [None]:
                chosen = every + [r for r in runs if uses_sparsity(r.config) and r.config["sparsity"] == s]
                stem = f"{prefix}-dense" if s is None else f"{prefix}-s{s:.10g}"
                rate = "" if s is None else f"R = {100 * (1 - s):.4g}%"
                sub = "" if s is None else (f"sparsity {s:.10g}" if rate in head else f"{rate} (sparsity {s:.10g})")
                fig = panel_figure(experiments(chosen), [("accuracy", "round"), ("accuracy", "bits")], f"{head}\n{sub}" if sub else head)
                for fmt in formats:
                    path = out / f"{stem}.{fmt}"
                    fig.savefig(path, bbox_inches="tight", pad_inches=0.03)
                    paths.append(path)
                plt.close(fig)
    return paths, warnings


__all__ = ["paper_figures"]
