"""Live progress: a bar on a terminal, one line per evaluation otherwise, nothing with --quiet."""

import io

import pytest
from rich.console import Console

from flarebench.cli import main
from flarebench.progress import RunProgress


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rows(start=0, stop=6, eval_every=2):
    for r in range(start, stop + 1):
        evaluated = r % eval_every == 0 or r == stop
        yield {"round": r, "test_accuracy": 0.1 * r if evaluated else None, "test_loss": 2.0 - 0.1 * r if evaluated else None,
               "cumulative_uplink_bits": 4096 * r, "wall_time_s": 0.5 * r}


def test_plain_lines_only_for_evaluated_rounds():
    buf = io.StringIO()
    with RunProgress(6, console=Console(file=buf)) as p:  # a StringIO is not a terminal
        assert p.mode == "lines"
        for row in rows():
            p(row)
    lines = buf.getvalue().splitlines()
    assert [l.split()[1] for l in lines] == ["0/6", "2/6", "4/6", "6/6"]
    assert "acc 0.6000" in lines[-1] and "uplink 24.00 Kib" in lines[-1] and "rounds/s" in lines[-1] and "ETA" in lines[-1]


def test_quiet_prints_nothing():
    buf = io.StringIO()
    with RunProgress(6, quiet=True, console=Console(file=buf, force_terminal=True)) as p:
        for row in rows():
            p(row)
    assert buf.getvalue() == ""


def test_bar_on_a_terminal_shows_accuracy_bits_and_resumed_start():
    buf = io.StringIO()
    with RunProgress(10, console=Console(file=buf, force_terminal=True, color_system=None, width=200)) as p:
        assert p.mode == "bar"
        for row in rows(start=4, stop=10):  # a resumed run: the first row seen is round 4
            p(row)
        task = p._bar.tasks[0]
        assert task.completed == 10 and task.total == 10
    text = buf.getvalue()
    assert "10/10" in text and "acc 1.0000" in text and "uplink 40.00 Kib" in text and "rounds/s" in text


def test_cli_run_prints_lines_when_not_a_terminal(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--model", "mlp", "--clients", "3", "--samples-per-client", "60", "--rounds", "2", "--eval-every", "1",
              "--device", "cpu", "--engine", "sequential", "--out", str(tmp_path), "--name", "p", "--method", "topk-ef"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert [l.split()[1] for l in out.splitlines() if l.startswith("round")] == ["0/2", "1/2", "2/2"]
    assert "done:" in out
