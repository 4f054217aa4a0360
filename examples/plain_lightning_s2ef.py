"""Train a backbone on the shipped S2EF devset in plain PyTorch Lightning, as a script.

The matsciml paper's usage (its Appendix B): build a data module, a backbone
from the registry and a task, hand them to ``pl.Trainer``, fit, evaluate.
No config files and no ``matsciml train``: the task fits its normalisation
statistics from the data module when fitting starts, and the data module's
split travels in Lightning's checkpoints.

    python examples/plain_lightning_s2ef.py                    # E(n)-GNN, about 30 s on 2 CPU cores
    python examples/plain_lightning_s2ef.py --epochs 30 --hidden-dim 64 --num-layers 3
    python examples/plain_lightning_s2ef.py --model toy-mlp    # any installed backbone

It prints the validation metrics beside the two baselines every matsciml run
reports: the training mean (per atom, times the atoms) and a per-element
linear fit of the energy on composition, both with zero forces.
"""
from __future__ import annotations

import argparse

import pytorch_lightning as pl

from matsciml.registry import get_registry
from matsciml.tasks import S2EFTask
from matsciml.training.datamodule import MatSciDataModule


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train, validate and print; returns the validation metrics."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="egnn", help="an installed model (`matsciml models`)")
    parser.add_argument("--dataset", default="slab-emt-s2ef", help="a registered dataset or LMDB path")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--cutoff", type=float, default=4.5, help="Å, model and neighbour graph alike")
    parser.add_argument("--hidden-dim", type=int, default=32)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--max-batches", type=int, default=None, help="training batches per epoch (all by default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    pl.seed_everything(args.seed, verbose=False)
    registry = get_registry()

    # A backbone from the registry, and the representation it declares it consumes, with the
    # hyper-parameters it ties to that representation (its cutoff radius) set to its own values.
    model_spec = registry.model(args.model)
    asked = {"hidden_dim": args.hidden_dim, "num_layers": args.num_layers, "cutoff_radius": args.cutoff}
    params = model_spec.resolve_params({key: value for key, value in asked.items() if key in model_spec.defaults})
    backbone = model_spec.build(**params)
    representation = registry.representation(model_spec.representation).build(
        **{representation_key: params[model_key] for model_key, representation_key in model_spec.tied_params.items()})

    datamodule = MatSciDataModule(args.dataset, representation, batch_size=args.batch_size,
                                  split=(0.8, 0.1, 0.1), seed=args.seed)
    task = S2EFTask(backbone, energy_weight=1.0, force_weight=3.0,
                    optimizer={"name": "adamw", "lr": args.lr}, scheduler={"name": "cosine"})

    # inference_mode=False: S2EF differentiates the energy with respect to positions in validation too.
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", inference_mode=False, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_train_batches=args.max_batches)
    trainer.fit(task, datamodule=datamodule)
    (results,) = trainer.validate(task, datamodule=datamodule, verbose=False)
    metrics = {key.split("/", 1)[1]: float(value) for key, value in results.items() if key != "val/loss"}
    baselines = task.baseline_from(datamodule, "val")  # {"mean": {...}, "composition": {...}}

    print(f"{args.model} on {args.dataset}, {args.epochs} epochs: validation metrics beside the baselines")
    print(f"{'metric':<22}{'model':>12}{'mean':>12}{'composition':>12}")
    for name, value in metrics.items():
        mean, composition = (baselines[b].get(name, float("nan")) for b in ("mean", "composition"))
        print(f"{name:<22}{value:>12.5g}{mean:>12.5g}{composition:>12.5g}")
    return metrics


if __name__ == "__main__":
    main()
