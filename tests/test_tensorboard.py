"""``--log tensorboard``: the event file read back equals metrics.csv, round by round; the config is the hparams."""

import csv
import math

import pytest

from conftest import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_event_file_holds_every_rounds_metrics_and_the_config(tmp_path, capsys):
    pytest.importorskip("tensorboard", reason='needs the tensorboard extra: pip install -e ".[tensorboard]"')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from flarebench.tblog import SCALARS

    code, out, err = cli(capsys, "run", "--method", "topk-ef", "--clients", "3", "--samples-per-client", "60", "--rounds", "3",
                         "--eval-every", "2", "--validation-fraction", "0.2", "--engine", "sequential", "--device", "cpu",
                         "--out", tmp_path, "--name", "tb", "--log", "tensorboard", "--quiet")
    assert code == 0, err
    run_dir = tmp_path / "tb"
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert set(events.Tags()["scalars"]) == set(SCALARS)
    for tag, column in SCALARS.items():
        logged = {e.step: e.value for e in events.Scalars(tag)}
        expected = {int(r["round"]): float(r[column]) for r in rows if r[column] != ""}
        assert sorted(logged) == sorted(expected) and expected, tag
        for step, value in expected.items():  # TensorBoard keeps float32
            assert math.isclose(logged[step], value, rel_tol=1e-6, abs_tol=1e-9), (tag, step)
    assert sorted({e.step for e in events.Scalars("test/accuracy")}) == [0, 2, 3]  # the evaluated rounds only
    assert sorted(e.step for e in events.Scalars("bits/cumulative_uplink")) == [0, 1, 2, 3]
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = data.session_start_info.hparams
    assert hp["method"].string_value == "topk-ef" and hp["clients"].number_value == 3
    assert hp["params.compressor.position_codec"].string_value == "auto"


def test_without_the_extra_it_is_one_line_naming_the_pip_command(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    code, out, err = cli(capsys, "run", "--rounds", "1", "--out", tmp_path, "--log", "tensorboard")
    assert code == 2 and err.strip().splitlines() == [
        'flarebench: error: --log tensorboard needs the tensorboard extra: pip install -e ".[tensorboard]"']
    assert not any(tmp_path.iterdir())
