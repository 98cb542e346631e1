"""What the terminal says: every help screen at 80 columns, and the progress line's labels."""

import io

import pytest
import typer
from rich.console import Console

from conftest import cli
from flarebench.cli import app
from flarebench.progress import SMOOTHING, RunProgress

COMMANDS = sorted(typer.main.get_command(app).commands)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_help_screen_reads_right_at_80_columns(capsys, monkeypatch, command):
    """No line over 80 columns, no name or sentence cut short, nothing eaten as markup ([flower] stays),
    no ``<bool>`` metavar, no escape backslash, and every option's full name shown."""
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = cli(capsys, *([command] if command else []), "--help")
    assert code == 0 and not err, err
    lines = out.splitlines()
    assert lines and max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert "…" not in out and "<bool>" not in out and "\\[" not in out
    if command:
        click_command = typer.main.get_command(app).commands[command]
        for param in click_command.params:
            for name in param.opts + param.secondary_opts:
                if name.startswith("--"):
                    assert name in out, f"{command}: {name} is not shown whole"
    if command == "run":
        assert "flarebench[flower]" in out and "--keep-optimizer-state / --fresh-optimizer" in out


def rows(n=6):
    for r in range(n + 1):
        yield {"round": r, "test_accuracy": 0.5 if r in (0, 4) else None, "test_loss": 1.25 if r in (0, 4) else None,
               "cumulative_uplink_bits": 1024 * r, "wall_time_s": 0.1 * r}


def test_the_bar_labels_test_accuracy_and_loss_with_their_round_and_a_smoothed_rate():
    buf = io.StringIO()
    with RunProgress(6, console=Console(file=buf, force_terminal=True, color_system=None, width=200)) as p:
        for row in rows():
            p(row)
    text = buf.getvalue()
    assert "test acc 0.5000 loss 1.2500 (round 4)" in text and "rounds/s (smoothed)" in text


def test_the_rate_is_an_exponential_average_of_seconds_per_round(monkeypatch):
    clock = iter([0.0, 1.0, 2.0, 5.0])  # rounds take 1 s, 1 s, then 3 s
    monkeypatch.setattr("flarebench.progress.time.perf_counter", lambda: next(clock))
    p = RunProgress(10, console=Console(file=io.StringIO()))
    for r in range(4):
        p({"round": r, "test_accuracy": None, "cumulative_uplink_bits": 0, "wall_time_s": 0.0})
    assert p._sec_per_round == pytest.approx(SMOOTHING * 3.0 + (1 - SMOOTHING) * 1.0)  # not the 3 s of the last round
    assert p._rate() == f"{1 / p._sec_per_round:.2f} rounds/s (smoothed)"


def test_the_probe_status_shows_on_the_bar_and_as_lines(capsys):
    import logging

    log = logging.getLogger("flarebench.engine.probe")
    buf = io.StringIO()
    with RunProgress(3, console=Console(file=buf)) as p:  # lines: the first and last word only
        log.info("engine: timing sequential and vectorized")
        log.debug("engine: timing vectorized, 1 local step")
        log.info("engine: probe done in 0.1 s")
    assert buf.getvalue().splitlines() == ["engine: timing sequential and vectorized", "engine: probe done in 0.1 s"]
    buf = io.StringIO()
    with RunProgress(3, console=Console(file=buf, force_terminal=True, color_system=None, width=200)) as p:
        log.debug("engine: timing vectorized [flower]")
        assert p._bar.tasks[0].description == "engine: timing vectorized \\[flower]"  # shown as text, not markup
    assert not log.handlers  # the status line's handler leaves with the progress


def test_ray_auto_without_a_cluster_names_flarebenchs_own_flag():
    """Ray's own advice (its --address flag, RAY_ADDRESS) is replaced by flarebench's (--ray HOST:PORT)."""
    from flarebench.errors import ConfigError
    from flarebench.sweep_ray import connect

    class NoCluster:  # what ray.init(address="auto") raises with nothing running (Ray 2.x wording)
        @staticmethod
        def is_initialized():
            return False

        @staticmethod
        def init(**kwargs):
            raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to by "
                                  "setting `--address` flag or `RAY_ADDRESS` environment variable.")

    with pytest.raises(ConfigError) as e:
        connect(NoCluster, "auto")
    assert "--ray HOST:PORT" in str(e.value) and "RAY_ADDRESS" not in str(e.value) and "--address" not in str(e.value)


def test_resume_of_a_complete_run_says_so_before_any_engine_line(tmp_path, capsys):
    args = ["run", "--clients", "3", "--samples-per-client", "60", "--rounds", "1", "--engine", "vectorized", "--device", "cpu",
            "--out", tmp_path, "--name", "done"]
    assert cli(capsys, *args)[0] == 0
    code, out, err = cli(capsys, "run", "--resume", tmp_path / "done")
    assert code == 2 and "is complete; nothing to resume" in err and "engine" not in out + err
