"""``flarebench run``: one federated run; flags override the TOML config, which overrides defaults."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Optional

import typer


from ..config import FIELD_NAMES, LEGACY_PART_KEYS, RunConfig, default_name, parse_param_options
from ..divergence import POLICIES
from ..errors import ConfigError
from ..progress import RunProgress
from ..tblog import LOGS, require_tensorboard
from ..units import human_bits
from .app import app

D = RunConfig()  # defaults, quoted in the help texts

_DATA = "Data and model"
_FED = "Federation and local training"
_COMP = "Compression"
_OUT = "Output"


@app.command("run")
def run_command(
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config (keys = these options, dashes or underscores); flags override it.", rich_help_panel=_OUT),
    method: Optional[str] = typer.Option(None, help=f"A preset of parts: see `flarebench methods` (none, topk-ef, randk, flare, ef21, qsgd, stc, powersgd, ...). [default: {D.method}]", rich_help_panel=_COMP),
    sparsity: Optional[float] = typer.Option(None, help=f"Fraction of entries NOT sent per tensor, in (0,1), for the sparsifiers (topk, randk, dgc, stc, ...); 0.99999 is the paper's R=0.001%. [default: {D.sparsity}]", rich_help_panel=_COMP),
    regularizer: Optional[str] = typer.Option(None, help="Replace the method's local regularizer (none | flare | prox | ...). [default: the method's]", rich_help_panel=_COMP),
    compressor: Optional[str] = typer.Option(None, help="Replace the method's compressor (e.g. stc: FLARE's pull with STC's ternary payload; or an import reference MODULE:NAME | PATH.py:NAME). [default: the method's]", rich_help_panel=_COMP),
    memory: Optional[str] = typer.Option(None, help="Replace the method's memory (none | residual | ef21 | dgc | momentum ...); --memory none: no error feedback. [default: the method's]", rich_help_panel=_COMP),
    aggregator: Optional[str] = typer.Option(None, help="Replace the method's aggregator (weighted-mean | ef21 | majority-vote | ...). [default: the method's]", rich_help_panel=_COMP),
    param: Optional[list[str]] = typer.Option(None, "--param", "-p", metavar="KIND.NAME=VALUE", help="Set a part's parameter, repeatable: -p compressor.levels=4, -p regularizer.tau0=0.1, or NAME=VALUE when one part of the run declares NAME. `flarebench methods` lists every part's parameters, defaults and units. TOML: a table per part ([compressor] levels = 4).", rich_help_panel=_COMP),
    downlink: Optional[str] = typer.Option(None, help=f"dense: fp32 model to each participant (32*P bits each) | sparse: the encoded aggregated update, sent to every client. [default: {D.downlink}]", rich_help_panel=_COMP),
    dataset: Optional[str] = typer.Option(None, help=f"A dataset part (`flarebench parts dataset`: mnist-embedded shipped and offline, mnist, cifar10, shakespeare, ...) or an import reference MODULE:NAME | PATH.py:NAME; parameters: -p dataset.NAME=V. [default: {D.dataset}]", rich_help_panel=_DATA),
    data_root: Optional[str] = typer.Option(None, help=f"Where torchvision datasets live. [default: {D.data_root}]", rich_help_panel=_DATA),
    download: Optional[bool] = typer.Option(None, "--download/--no-download", help="Let torchvision download a missing dataset (needs a network). [default: no-download]", rich_help_panel=_DATA),
    model: Optional[str] = typer.Option(None, help=f"A model part (`flarebench parts model`: cnn, fc (paper), mlp (small), vgg11/16/19 (CIFAR), gru, gru-small (shakespeare), ...) or an import reference MODULE:NAME | PATH.py:NAME (an nn.Module or a factory); parameters: -p model.NAME=V. [default: {D.model}]", rich_help_panel=_DATA),
    fc_linear: Optional[bool] = typer.Option(None, "--fc-linear/--fc-relu", help="Reference quirk: the FC model without activations. [default: fc-relu]", rich_help_panel=_DATA),
    cnn_double_softmax: Optional[bool] = typer.Option(None, "--cnn-double-softmax/--cnn-softmax", help="Reference quirk: the CNN's loss is cross-entropy of softmax(softmax(logits)), as the authors' code (slower learning, smaller gradients). [default: cnn-softmax]", rich_help_panel=_DATA),
    vgg11_reference_relu: Optional[bool] = typer.Option(None, "--vgg11-reference-relu/--vgg11-relu", help="Reference quirk: VGG-11 without ReLU after the first conv of its 256/512 blocks. [default: vgg11-relu]", rich_help_panel=_DATA),
    partition: Optional[str] = typer.Option(None, help=f"A partition part (`flarebench parts partition`: contiguous (paper), iid, dirichlet, shards, natural) or an import reference; parameters: -p partition.NAME=V. [default: {D.partition}]", rich_help_panel=_DATA),
    dirichlet_alpha: Optional[float] = typer.Option(None, help="Dirichlet concentration; smaller = more skewed labels (same as -p partition.alpha=V). [default: 0.5]", rich_help_panel=_DATA),
    samples_per_client: Optional[int] = typer.Option(None, help="Samples per client. [default: training set / clients]", rich_help_panel=_DATA),
    clients: Optional[int] = typer.Option(None, help=f"Clients in the federation. [default: {D.clients} clients]", rich_help_panel=_FED),
    clients_per_round: Optional[int] = typer.Option(None, help="Clients drawn uniformly each round. [default: all clients]", rich_help_panel=_FED),
    rounds: Optional[int] = typer.Option(None, help=f"Communication rounds. [default: {D.rounds} rounds]", rich_help_panel=_FED),
    local_epochs: Optional[int] = typer.Option(None, help=f"Local epochs per round. [default: {D.local_epochs} epoch]", rich_help_panel=_FED),
    batch_size: Optional[int] = typer.Option(None, help=f"Local batch size. [default: {D.batch_size} samples]", rich_help_panel=_FED),
    lr: Optional[float] = typer.Option(None, help=f"Client SGD learning rate (per step). [default: {D.lr}]", rich_help_panel=_FED),
    momentum: Optional[float] = typer.Option(None, help=f"Client SGD momentum. [default: {D.momentum}]", rich_help_panel=_FED),
    weight_decay: Optional[float] = typer.Option(None, help=f"Client SGD weight decay (L2). [default: {D.weight_decay}]", rich_help_panel=_FED),
    keep_optimizer_state: Optional[bool] = typer.Option(None, "--keep-optimizer-state/--fresh-optimizer", help="Keep each client's momentum across rounds (reference: fresh each round). [default: fresh-optimizer]", rich_help_panel=_FED),
    server_lr: Optional[float] = typer.Option(None, help=f"Server step size on the aggregated update. [default: {D.server_lr}]", rich_help_panel=_FED),
    eval_every: Optional[int] = typer.Option(None, help=f"Evaluate on the test set every N rounds (and on the last). [default: {D.eval_every} rounds]", rich_help_panel=_FED),
    validation_fraction: Optional[float] = typer.Option(None, help="Hold out this fraction of each client's training rows (floor per client, seeded) as a validation set, evaluated like the test set (metrics val_loss, val_accuracy); in [0, 1). [default: 0, none]", rich_help_panel=_FED),
    seed: Optional[int] = typer.Option(None, help=f"Seed for init, partition, client sampling, shuffling, random-k. [default: {D.seed}]", rich_help_panel=_FED),
    device: Optional[str] = typer.Option(None, help=f"auto | cpu | cuda. [default: {D.device}]", rich_help_panel=_FED),
    engine: Optional[str] = typer.Option(None, help=f"Local training: sequential (one client at a time) | vectorized (all clients at once, torch.func.vmap) | auto (times both once per shape, cached). [default: {D.engine}]", rich_help_panel=_FED),
    client_chunk: Optional[int] = typer.Option(None, help="Vectorized engine: clients per vmapped batch. [default: all on CPU; from free memory on CUDA]", rich_help_panel=_FED),
    backend: Optional[str] = typer.Option(None, help=f"local (the in-process loop) | flower (Flower's simulation engine on this machine, one Flower node per client; needs flarebench[flower]). [default: {D.backend}]", rich_help_panel=_FED),
    out: Optional[str] = typer.Option(None, help=f"Results directory; the run goes to OUT/NAME. [default: {D.out}]", rich_help_panel=_OUT),
    name: Optional[str] = typer.Option(None, help="Run name. [default: method-sSPARSITY-dataset-model-time]", rich_help_panel=_OUT),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run of the same name.", rich_help_panel=_OUT),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the interrupted run in this directory from its last checkpoint; its config.json is the config (flags given must agree).", rich_help_panel=_OUT),
    log: str = typer.Option("none", "--log", metavar="none|tensorboard", help="tensorboard: also write every round's accuracy, losses and bits (and the config as hparams) to an event file in the run directory; `tensorboard --logdir OUT` compares runs. Needs: pip install -e \".[tensorboard]\"", rich_help_panel=_OUT),
    on_divergence: str = typer.Option("continue", "--on-divergence", metavar="continue|stop", help="When the run diverges (a loss or the weights' norm not finite or above 100x its first value; see docs/results.md): continue (default: the run is compared over the same rounds and bits as its peers) or stop after that round (saves time in sweeps). Either way a warning, and config.json records it.", rich_help_panel=_OUT),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", min=1, help="Save the run state for --resume every N rounds. [default: auto, at most ~2.4% of run time (1/41)]", rich_help_panel=_OUT),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and parameter count, then exit.", rich_help_panel=_OUT),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output.", rich_help_panel=_OUT),
) -> None:
    """Run one federated training job and write OUT/NAME/config.json and metrics.csv (one row per round)."""
    from ..config import make_config
    from ..launch import prepare, run

    given = locals()
    overrides = {k: given[k] for k in CONFIG_OPTIONS}
    overrides["params"] = parse_param_options(param) or None
    if on_divergence not in POLICIES:
        raise ConfigError(f"--on-divergence takes {' or '.join(POLICIES)}, got {on_divergence!r}")
    if log not in LOGS:
        raise ConfigError(f"--log takes {' or '.join(LOGS)}, got {log!r}")
    if log == "tensorboard":
        require_tensorboard()  # a missing extra: one line before anything is loaded
    cfg = _resume_config(resume, config, overrides) if resume else make_config(config, **overrides)
    if dry_run:  # no dataset files needed: the model is built from the dataset's known shape
        from ..world import num_params_for

        run_dir = Path(cfg.out) / (cfg.name or default_name(cfg, "YYYYMMDD-HHMMSS"))  # the stamp is the start time
        typer.echo(json.dumps({"config": cfg.to_dict(), "num_params": num_params_for(cfg), "run_dir": str(run_dir)}, indent=2))
        return
    cfg = prepare(cfg, overwrite, resume, checkpoint_every)  # before the data is loaded and the engines timed
    run_dir = resume or Path(cfg.out).expanduser() / cfg.name

    def show_engine(s) -> None:
        if quiet:
            return
        choice = s.federation.engine_choice
        typer.echo(f"engine: {choice.engine} (as the run started)" if resume else f"engine: {choice.describe()}")

    try:
        with RunProgress(cfg.rounds, quiet=quiet) as progress:
            result = run(cfg, on_round=progress, overwrite=overwrite, resume=resume, checkpoint_every=checkpoint_every,
                         on_setup=show_engine, checked=True, on_divergence=on_divergence, log=log)
    except KeyboardInterrupt:
        typer.echo(f"flarebench: interrupted; continue with: flarebench run --resume {run_dir}", err=True)
        raise typer.Exit(130) from None
    acc = result.final_accuracy
    shown = f"final test accuracy {acc:.4f}" if acc is not None else "no test evaluation"
    typer.echo(
        f"done: {result.path}  {shown}  total uplink {human_bits(result.total_uplink_bits)} "
        f"({result.total_uplink_bits} bits)  wall {result.wall_time_s:.1f}s"
    )
    if result.diverged:
        d = result.diverged
        stopped = "; stopped there" if d.policy == "stop" else ""
        typer.echo(f"warning: this run diverged at round {d.round}: {d.reason}{stopped}; `list` and `compare` mark it")


# the options that are config keys (RunConfig fields, and earlier versions' fields now part parameters)
CONFIG_OPTIONS = [n for n in inspect.signature(run_command).parameters if n in FIELD_NAMES or n in LEGACY_PART_KEYS]


def _resume_config(resume: Path, toml: Optional[Path], overrides: dict) -> RunConfig:
    """The interrupted run's own config; options given on the command line must agree with it."""
    from ..checkpoint import resume_config
    from ..errors import ConfigError

    if toml is not None:
        raise ConfigError("--resume takes the run's own config.json; drop --config")
    return resume_config(resume, **overrides)
