"""``matsciml train`` and ``matsciml evaluate``."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from matsciml.cli.output import print_json, print_table


def add_commands(commands: Any) -> None:
    train = commands.add_parser(
        "train", help="train a model on a dataset and task (YAML config plus key=value overrides)",
        description="Train through PyTorch Lightning. The config has sections model, dataset, task, "
                    "representation, data, optimizer, scheduler, trainer, early_stopping, ema, run; any key can "
                    "be overridden as section.key=value (values are YAML). A model must be chosen (--model NAME; "
                    "`matsciml models` lists them); the representation is the one the model needs. The run "
                    "directory keeps the resolved config, split, checkpoints and metrics.")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="overrides such as trainer.max_epochs=5 model.hidden_dim=32")
    train.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                       help="YAML config file (repeatable; later files override earlier ones)")
    train.add_argument("--model", help="shortcut for model.name=NAME (required unless the config names one)")
    train.add_argument("--dataset", action="append", metavar="NAME_OR_PATH",
                       help="shortcut for dataset.name=NAME_OR_PATH; given twice or more, several datasets in one "
                            "run, each with its own statistics (task regression)")
    train.add_argument("--task", help="shortcut for task.name=NAME")
    train.add_argument("--print-config", action="store_true",
                       help="print the resolved config (every default filled in) as YAML (JSON with --json) "
                            "and exit")
    train.add_argument("--json", action="store_true",
                       help="print the final metrics as JSON; progress and logs go to standard error")
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue the run in RUN_DIR from its newest intact checkpoint (weights, optimiser, "
                            "scheduler, epoch, random states, data order) with its own config; only "
                            "trainer.max_epochs, where it runs (trainer.accelerator/devices/num_nodes/strategy) "
                            "and data.num_workers may be changed")
    train.set_defaults(handler=run_train)

    evaluate = commands.add_parser("evaluate", help="metrics of a trained checkpoint on a dataset split")
    evaluate.add_argument("checkpoint", help="a checkpoint written by `matsciml train` (e.g. RUN/checkpoints/best-*.ckpt)")
    evaluate.add_argument("--dataset", action="append", metavar="NAME_OR_PATH",
                          help="evaluate on this dataset (name or path) instead of the training one; a model trained "
                               "on several datasets takes as many, in the same order")
    evaluate.add_argument("--split", default="val", choices=["train", "val", "test", "all"],
                          help="which part of the recorded split (default val; with --dataset, 'all' is usual)")
    evaluate.add_argument("--batch-size", type=_positive_int, metavar="N", help="override the batch size")
    evaluate.add_argument("--plot", nargs="?", const="", metavar="FILE.png",
                          help="also draw parity plots (predicted against reference for each target, the MAE in "
                               "the legend) to FILE.png (default: RUN_DIR/parity-SPLIT.png); needs matplotlib")
    evaluate.add_argument("--accelerator", default="auto", metavar="NAME",
                          help="where to evaluate: auto (default: a GPU when one is visible, else the CPU), cpu, "
                               "gpu, ...; independent of where the run trained, so a GPU run evaluates on a laptop")
    evaluate.add_argument("--json", action="store_true", help="print JSON; progress and logs go to standard error")
    evaluate.set_defaults(handler=run_evaluate)


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a usage error, exit 2, otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; give a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1; give a whole number >= 1")
    return value


def _one_or_list(values: list[str] | None) -> str | list[str] | None:
    """``--dataset`` given once (a name) or several times (a list of names)."""
    if not values:
        return None
    return values[0] if len(values) == 1 else list(values)


def _gather_config(args: argparse.Namespace) -> dict[str, Any]:
    from matsciml.training.config import build_config

    overrides = list(args.overrides)
    for section, value in (("model", args.model), ("dataset", _one_or_list(args.dataset)), ("task", args.task)):
        if value:
            # several datasets: a JSON list (valid YAML), so paths need no quoting
            overrides.insert(0, f"{section}.name={json.dumps(value) if isinstance(value, list) else value}")
    return build_config(args.config, overrides)


def _resumed_config(args: argparse.Namespace) -> dict[str, Any]:
    """The config of the run ``--resume`` continues, with the overrides a resumed run may take."""
    from matsciml.errors import MatscimlError
    from matsciml.training.config import build_config
    from matsciml.training.resume import run_config_path
    from matsciml.training.run import RESUME_OVERRIDABLE

    given = [flag for flag, value in (("--config", args.config), ("--model", args.model),
                                      ("--dataset", args.dataset), ("--task", args.task)) if value]
    if given:
        raise MatscimlError(f"--resume continues a run with its own config; remove {', '.join(given)} (a resumed "
                            f"run may change only {', '.join(RESUME_OVERRIDABLE)})")
    for override in args.overrides:
        key = override.partition("=")[0]
        if key not in RESUME_OVERRIDABLE:
            raise MatscimlError(f"--resume: {key} cannot change in a resumed run (it would not continue the same "
                                f"training); remove {override!r}, or start a new run; allowed: "
                                f"{', '.join(RESUME_OVERRIDABLE)}")
    return build_config([run_config_path(args.resume)], args.overrides)


def run_train(args: argparse.Namespace) -> int:
    from matsciml.registry import get_registry
    from matsciml.training.config import dump_config
    from matsciml.training.run import check_trainer_options, resolve_config, train

    registry = get_registry()
    gathered = _resumed_config(args) if args.resume else _gather_config(args)
    config = resolve_config(gathered, registry)
    check_trainer_options(config["trainer"])  # a misspelt Trainer argument is refused before printing, too
    if args.print_config:
        if args.json:  # JSON is YAML too: `--config` reads this back
            print_json(config)
        else:
            print(dump_config(config), end="")
        return 0
    result = train(config, registry, resume=args.resume)
    if not result.rank_zero:  # another process of a distributed run: rank 0 reports
        return 0
    skipped = result.skipped_invalid
    if args.json:
        print_json({"run_dir": str(result.run_dir), "best_checkpoint": str(result.best_checkpoint),
                    "epochs": result.epochs, "metrics": result.metrics, "baselines": result.baselines,
                    "skipped_invalid": skipped, "reference_energies": result.reference_energies})
        return 0
    print(f"\nrun directory: {result.run_dir}")
    print(f"best checkpoint: {result.best_checkpoint}")
    if skipped["count"]:
        # each reason names its sample and file already
        print(f"skipped {skipped['count']} invalid sample(s) (data.skip_invalid), listed in "
              f"{result.run_dir / 'metrics.json'}; the first: {skipped['samples'][0]['reason']}")
    print("validation metrics of the best checkpoint, beside the baselines on the same split:")
    print_comparison(result.metrics, result.baselines, result.higher_is_better)
    print_references(result.reference_energies)
    return 0


def print_references(references: dict[str, float]) -> None:
    """One line with the per-element reference energies a run fitted, when it has any."""
    if references:
        shown = "  ".join(f"{symbol} {value:.4f}" for symbol, value in references.items())
        print(f"per-element reference energies (eV/atom, least squares on the training split): {shown}")


def print_comparison(metrics: dict[str, float], baselines: dict[str, dict[str, float]],
                     higher_is_better: tuple[str, ...] = ()) -> None:
    """The model's metrics beside each baseline's, and the model's error as a share of the best baseline's."""
    from matsciml.tasks.baselines import DESCRIPTIONS

    names = list(baselines)
    rows = []
    for metric, value in metrics.items():
        if metric == "loss":
            continue
        references = [baselines[name].get(metric) for name in names]
        known = [r for r in references if r is not None and math.isfinite(r)]
        ratio = ""
        if metric not in higher_is_better and known and min(known) > 0:
            ratio = f"{value / min(known):.3f}"
        rows.append([metric, f"{value:.5g}", *(f"{r:.5g}" if r is not None else "" for r in references), ratio])
    print_table(["METRIC", "MODEL", *(name.upper() for name in names), "MODEL/BEST BASELINE"], rows)
    for name in names:
        print(f"  {name}: {DESCRIPTIONS.get(name, name)}")
    if higher_is_better:
        shown = [m for m in metrics if m in higher_is_better]
        if shown:
            print(f"  higher is better for {', '.join(shown)}; lower for the others (see README 'Metrics')")


def _parity_plot(args: argparse.Namespace, loaded: Any, datamodule: Any) -> Path:
    """Draw the parity plot of ``evaluate --plot``; its path."""
    from matsciml.training.curves import load_pyplot
    from matsciml.training.parity import collect_predictions, write_parity_plot

    load_pyplot()  # fail before predicting when matplotlib is missing
    checkpoint = Path(args.checkpoint)
    output = Path(args.plot) if args.plot else checkpoint.resolve().parent.parent / f"parity-{args.split}.png"
    values = collect_predictions(loaded.task, datamodule, args.split)
    title = f"{checkpoint.name} on {' + '.join(Path(name).name for name in datamodule.dataset_names)}, {args.split} split"
    return write_parity_plot(values, output, title)


def run_evaluate(args: argparse.Namespace) -> int:
    from matsciml.registry import get_registry
    from matsciml.training.run import evaluate_task, fitted_reference_energies, load_checkpoint

    registry = get_registry()
    loaded = load_checkpoint(args.checkpoint, dataset=_one_or_list(args.dataset), registry=registry)
    datamodule = loaded.run.datamodule
    if not loaded.same_dataset:
        print(f"matsciml: note: {datamodule.dataset_name} is not the dataset this run trained on; its train/val/test "
              f"parts come from a new split (dataset.seed={loaded.config['dataset']['seed']}); --split all "
              f"evaluates on all of it", file=sys.stderr)
    if args.batch_size is not None:
        datamodule.batch_size = args.batch_size
    # where it evaluates is this machine's choice, not the training run's (trainer.accelerator=gpu would fail on a
    # laptop); the precision stays the run's
    metrics = evaluate_task(loaded.task, datamodule, args.split,
                            {**loaded.config["trainer"], "accelerator": args.accelerator},
                            fix="give --accelerator auto (what this machine has), cpu or gpu")
    baselines = loaded.task.baseline_from(datamodule, args.split)
    dataset = datamodule.dataset_name
    plot = _parity_plot(args, loaded, datamodule) if args.plot is not None else None
    if args.json:
        references = fitted_reference_energies(loaded.task)
        print_json({"checkpoint": args.checkpoint, "dataset": dataset, "split": args.split, "metrics": metrics,
                    "baselines": baselines, **({"plot": str(plot)} if plot else {}),
                    "reference_energies": references})
        return 0
    if plot:
        print(f"parity plot written to {plot}")
    print(f"{args.checkpoint} on {dataset} ({args.split} split), beside the baselines fitted on the training "
          f"split:")
    print_comparison(metrics, baselines, tuple(loaded.task.higher_is_better))
    print_references(fitted_reference_energies(loaded.task))
    if args.split in ("train", "all"):
        print("  note: the baselines (and the model) were fitted on training samples that this split includes")
    return 0


__all__ = ["add_commands"]
