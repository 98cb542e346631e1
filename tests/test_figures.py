"""Figures that stay readable with the whole zoo, read back from their matplotlib artists.

On the committed zoo (results/reference/zoo_mnist_mlp, 28 runs of 19 methods) and on a synthetic
directory of 25 methods (19 presets and 6 names no preset has, 2 seeds of some, a diverged run and a
far outlier), written here with the results contract (config.json + metrics.csv): every frontier label
names the run of the point it is attached to (its xy), is nearer that point than any other or has a
leader line; labels overlap neither each other nor a legend; legends overlap no axes; no two methods
share a style; loss axes are logarithmic and not stretched by a diverged run, which the note names.
"""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Annotation, Text

from flarebench.compare import collect_runs
from flarebench.methods.presets import method_names
from flarebench.plots import STYLE, describe, experiments, frontier_figure, panel_figure, panels_for, save_figures
from flarebench.styles import POOL_SIZE, method_styles, style_at
from conftest import cli

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "results" / "reference" / "zoo_mnist_mlp"

EXTRA = [("mine-sketch", "count-sketch", True), ("lab-quant", "qsgd", False), ("lab-sign", "sign", False),
         ("plugin-topk", "topk", True), ("plugin-rank", "powersgd", False), ("acme-threshold", "threshold", False)]


def fake_run(root: Path, name: str, method: str, compressor: str, sparsity: float, seed: int, final: float, bits_per_round: int,
             diverge_at: int | None = None, rounds: int = 20, num_params: int = 1000) -> None:
    """A run directory as `flarebench run` writes one: config.json (config + meta) and metrics.csv."""
    d = root / name
    d.mkdir(parents=True)
    config = {"method": method, "sparsity": sparsity, "compressor": compressor, "dataset": "synthetic-data", "model": "tiny",
              "rounds": rounds, "clients": 4, "lr": 0.1, "batch_size": 10, "local_epochs": 1, "seed": seed, "engine": "sequential"}
    (d / "config.json").write_text(json.dumps({"config": config, "num_params": num_params, "status": "complete", "device": "cpu"}))
    rng = np.random.default_rng(seed * 1000 + sum(map(ord, name)))
    rows = []
    for r in range(rounds + 1):
        ev = r % 5 == 0
        acc = final * (1 - math.exp(-r / 4)) + 0.1 * math.exp(-r / 4) + (rng.normal(0, 0.003) if r else 0)
        loss = 2.3 * math.exp(-r / 6) + 0.1
        if diverge_at is not None and r >= diverge_at:
            loss, acc = (math.inf if r > diverge_at + 5 else 10.0 ** (3 * (r - diverge_at + 2))), 0.1
        up = bits_per_round * 4 * (r > 0)
        rows.append({"round": r, "clients": 4 * (r > 0), "train_loss": "", "test_loss": loss if ev else "", "test_accuracy": acc if ev else "",
                     "nnz": 10 * (r > 0), "uplink_bits": up, "cumulative_uplink_bits": up * r, "downlink_bits": 32000 * (r > 0),
                     "cumulative_downlink_bits": 32000 * r, "wall_time_s": 0.01 * r})
    pd.DataFrame(rows).to_csv(d / "metrics.csv", index=False)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """25 methods: every preset (19) and 6 other names; clustered finals, 2 seeds of some, one diverged, one far below."""
    from flarebench.methods.presets import get_preset, uses_sparsity

    root = tmp_path_factory.mktemp("synthetic") / "zoo25"
    methods = [(m, get_preset(m).compressor, uses_sparsity(m)) for m in method_names()] + EXTRA
    assert len(methods) >= 25
    for i, (m, comp, sparse) in enumerate(methods):
        for s, sp in enumerate([0.99, 0.999] if sparse else [0.0]):
            seeds = [0, 1] if i % 5 == 0 else [0]
            for seed in seeds:
                final = 0.93 + 0.002 * ((i * 7) % 11) - 0.01 * s + 0.004 * seed
                fake_run(root, f"{m}-s{sp}-seed{seed}" if sparse else f"{m}-seed{seed}", m, comp, sp, seed,
                         final=0.25 if m == "randk" and s == 1 else final, bits_per_round=int(2000 * (1 + i % 9) / (1 + 9 * s)),
                         diverge_at=5 if m == "lab-sign" else None)
    return root


def _dirs(synthetic):
    return [ZOO, synthetic]


def frontier_truth(records):
    """label -> (mean total bits, mean final accuracy %) per experiment, computed from the metrics here."""
    out = {}
    for e in experiments(records):
        b = np.mean([r.metrics["cumulative_uplink_bits"].iloc[-1] for r in e.runs])
        a = np.mean([100 * r.metrics["test_accuracy"].dropna().iloc[-1] for r in e.runs])
        out[e.label] = (float(b), float(a))
    return out


def overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("which", ["zoo", "synthetic25"])
def test_frontier_labels_name_their_own_point_and_do_not_overlap(which, synthetic):
    import matplotlib.pyplot as plt

    records, _ = collect_runs([ZOO if which == "zoo" else synthetic])
    truth = frontier_truth(records)
    with plt.rc_context(STYLE):
        fig = frontier_figure(experiments(records), "t")
        fig.canvas.draw()
        ax = fig.axes[0]
        r = fig.canvas.get_renderer()
        anns = [t for t in ax.texts if isinstance(t, Annotation)]
        lo, hi = ax.get_ylim()
        on_axes = {k: v for k, v in truth.items() if lo <= v[1] <= hi}
        named = [n for a in anns for n in a.get_text().split(" = ")]
        assert sorted(named) == sorted(on_axes), "every point on the axes has exactly one label"
        note = " ".join(t.get_text() for leg in fig.legends for t in leg.get_texts())
        for label in set(truth) - set(on_axes):  # the points beyond the axes are named in the note
            assert f"{label}: final accuracy" in note, (label, note)
        pts = {k: ax.transData.transform(v) for k, v in on_axes.items()}
        boxes = [Text.get_window_extent(a, r) for a in anns]  # the text alone (an Annotation's own extent includes its leader)
        legends = [leg.get_window_extent(r) for leg in fig.legends + [ax.get_legend()] if leg is not None]
        area = ax.get_window_extent(r)
        assert legends and not any(overlap(leg, area) for leg in legends), "the legend and the note stay off the data area"
        for a, box in zip(anns, boxes):
            names = a.get_text().split(" = ")
            for n in names:  # the label's xy is its own point
                assert a.xy == pytest.approx(truth[n], rel=1e-9), (n, a.xy, truth[n])
            dist = {k: math.hypot(max(box.x0 - p[0], 0, p[0] - box.x1), max(box.y0 - p[1], 0, p[1] - box.y1)) for k, p in pts.items()}
            nearest = min(dist, key=dist.get)
            if dist[nearest] < dist[names[0]] - 0.5:  # nearer another point: a leader line must end on its own
                assert a.arrow_patch is not None, (a.get_text(), nearest)
            if a.arrow_patch is not None:
                end = a.arrow_patch.get_path().vertices[-1]
                own = ax.transData.transform(truth[names[0]])
                assert math.hypot(*(end - own)) < 6 * fig.dpi / 72, (a.get_text(), end, own)
            assert area.x0 <= box.x0 and box.x1 <= area.x1 and area.y0 <= box.y0 and box.y1 <= area.y1, a.get_text()
            assert not any(overlap(box, leg) for leg in legends), a.get_text()
        for (a, ba), (b, bb) in itertools.combinations(zip(anns, boxes), 2):
            assert not overlap(ba, bb), (a.get_text(), b.get_text())
        plt.close(fig)


@pytest.mark.parametrize("which", ["zoo", "synthetic25"])
def test_summary_legends_stay_off_the_axes_and_styles_are_distinct(which, synthetic):
    import matplotlib.pyplot as plt

    records, _ = collect_runs([ZOO if which == "zoo" else synthetic])
    exps = experiments(records)
    styles = {}
    for e in exps:
        styles.setdefault(e.method, e.style)
    assert len(set(styles.values())) == len(styles) >= (19 if which == "zoo" else 25), "no two methods share a style"
    assert len({(s.color, s.marker) for s in styles.values()}) == len(styles), "nor a marker of one colour (the frontier has no lines)"
    variants = [(e.style, e.fill) for e in exps]
    assert len(set(variants)) == len(variants), "no two experiments are drawn alike"
    with plt.rc_context(STYLE):
        fig = panel_figure(exps, panels_for(("bits", "round")), describe(records), letters=True)
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        areas = [ax.get_window_extent(r) for ax in fig.axes]
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
        assert len(fig.axes) >= 9  # families as rows: 3 panels x at least 3 rows
        for leg in legends:
            box = leg.get_window_extent(r)
            assert not any(overlap(box, a) for a in areas), "a legend covers an axes' data area"
        for ax in fig.axes:
            if ax.get_ylabel().startswith("Test loss"):
                assert ax.get_yscale() == "log" and ax.get_ylim()[1] < 100, ax.get_ylim()
        lines = {l.get_label(): l for ax in fig.axes for l in ax.get_lines() if not l.get_label().startswith("_")}
        assert all(l.get_marker() not in (None, "", "None") for l in lines.values()), "markers at evaluated points"
        note = " ".join(t.get_text() for leg in fig.legends for t in leg.get_texts())
        exploding = []  # runs whose test loss is not finite or above 100x its first: named in the note as diverged
        for rec in records:
            loss = rec.metrics["test_loss"].dropna().to_numpy(dtype=float)
            if not (np.isfinite(loss).all() and loss.max() <= 100 * loss[0]):
                exploding.append(rec.path.name)
        assert note.count("diverged at round") == len(exploding) and all(f"{n}: diverged at round" in note for n in exploding), note
        if which == "synthetic25":
            assert exploding == ["lab-sign-seed0"] and "lab-sign-seed0: diverged at round 5" in note and "lab-sign (diverged)" in lines
        assert "zoo" not in fig.texts[0].get_text() if fig.texts else True
        plt.close(fig)


def test_styles_are_stable_distinct_and_independent_of_order():
    names = method_names()
    assert len({style_at(i) for i in range(POOL_SIZE)}) == POOL_SIZE >= 24
    builtin = method_styles(names)
    assert len(set(builtin.values())) == len(names) and builtin["none"].color == "#000000"
    others = ["zz-plugin", "flare+stc", "my-method", "a", "b", "c"]
    mixed = method_styles(others + names[::-1])
    assert mixed == method_styles(names + others) and len(set(mixed.values())) == len(mixed)
    assert all(mixed[n] == builtin[n] for n in names)  # presets keep their style whatever else is drawn
    assert not set(mixed[o] for o in others) & set(builtin.values())  # other names never take a preset's style


def test_figures_are_titled_by_the_experiment_and_written(tmp_path, synthetic):
    records, _ = collect_runs([synthetic])
    assert describe(records).startswith("synthetic-data/tiny: 4 clients, 20 rounds, E = 1, lr 0.1, batch 10")
    few = [r for r in records if r.config["method"] in ("none", "topk-ef", "flare", "lab-sign")]
    paths = save_figures(few, tmp_path, formats=["png"], x="bits", summary=False)
    assert sorted(p.name for p in paths) == ["synthetic-data-tiny-accuracy-vs-bits.png", "synthetic-data-tiny-frontier.png",
                                             "synthetic-data-tiny-loss-vs-bits.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_piped_compare_table_fits_120_columns_with_whole_distinct_names(tmp_path, capsys, synthetic):
    code, out, err = cli(capsys, "compare", ZOO, "--out", tmp_path / "c", "--figures", "none", "--runs")
    assert code == 0, err
    lines = out.splitlines()
    assert max(map(len, lines)) <= 120
    rows = [l.split()[0] for l in lines if l.strip().endswith("Gib") or l.strip().endswith("Mib")]
    runs = sorted(p.name for p in ZOO.iterdir() if (p / "config.json").is_file())
    assert sorted(rows) == runs  # every run once, its whole name
    # two runs of one name in different directories: the directory tells them apart
    for sub in ("a", "b"):
        fake_run(tmp_path / "two" / sub, "same-name", "none", "identity", 0.0, 0, 0.9, 32000)
    code, out, err = cli(capsys, "compare", tmp_path / "two", "--out", tmp_path / "c2", "--figures", "none", "--runs")
    assert code == 0 and "a/same-name" in out and "b/same-name" in out, out


def test_compare_prints_csv_and_markdown(tmp_path, capsys, synthetic):
    code, out, err = cli(capsys, "compare", synthetic, "--out", tmp_path / "c", "--figures", "none", "--format", "csv")
    assert code == 0, err
    assert out == (tmp_path / "c" / "compare.csv").read_text() and "wrote" in err
    code, out, err = cli(capsys, "compare", synthetic, "--out", tmp_path / "c", "--figures", "none", "--format", "csv", "--runs")
    assert code == 0 and out == (tmp_path / "c" / "runs.csv").read_text(), err
    code, out, err = cli(capsys, "compare", synthetic, "--out", tmp_path / "c", "--figures", "none", "--format", "markdown")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("| method | seeds | final acc |") and lines[1].startswith("|---|---:|---:|")
    assert sum(l.startswith("| ") for l in lines) == 1 + len(pd.read_csv(tmp_path / "c" / "compare.csv"))
    code, out, err = cli(capsys, "compare", synthetic, "--out", tmp_path / "c", "--figures", "none", "--format", "markdown", "--runs")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("| run | method |") and lines[1].startswith("|---|---|---:|")
    assert sum(l.startswith("| ") for l in lines) == 1 + len(pd.read_csv(tmp_path / "c" / "runs.csv"))
    code, _, err = cli(capsys, "compare", synthetic, "--out", tmp_path / "c3", "--format", "html")
    assert code == 2 and err.count("\n") == 1 and "--format takes table, csv, markdown" in err and not (tmp_path / "c3").exists()
    code, _, err = cli(capsys, "compare", synthetic, "--out", tmp_path / "c4", "--format", "none")  # the old meaning: figures
    assert code == 0 and "use --figures none" in err and sorted(p.name for p in (tmp_path / "c4").iterdir()) == ["compare.csv", "runs.csv"]


def test_the_table_fits_any_terminal_width_and_never_cuts_a_number(synthetic):
    from rich.console import Console

    from flarebench.compare import summarize
    from flarebench.tables import render

    records, _ = collect_runs([ZOO])
    table = summarize(records)
    finals = [f"{v:.4f}" for v in table["final_accuracy"]]
    for width in (200, 100, 60, 40):
        console = Console(force_terminal=True, width=width, color_system=None)
        with console.capture() as cap:
            render(table, "table", console)
        lines = cap.get().splitlines()
        assert max(map(len, lines)) <= width, width
        body = [l for l in lines if any(f in l.split() for f in finals)]
        assert len(body) == len(finals) and all(f in l.split() for f, l in zip(finals, body)), width  # a row per run, in order
        if width >= 100:  # whole names on one line each
            assert [l.replace("│", " ").split()[0] for l in body] == list(table["run"]), width
