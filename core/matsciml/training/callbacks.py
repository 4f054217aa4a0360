"""Training callbacks chosen in the config, beyond checkpoints and early stopping.

``ema`` (an exponential moving average of the weights) is Lightning's own
:class:`pytorch_lightning.callbacks.EMAWeightAveraging` (Lightning >= 2.6),
which keeps a ``torch.optim.swa_utils.AveragedModel`` beside the task, swaps
the averaged weights in for each validation, writes them as a checkpoint's
``state_dict`` (the trained weights go to ``current_model_state``, so a
resumed run goes on from them) and restores both on resume. It is used
through :class:`EMAWeights`, a small subclass that fixes what a matsciml
task needs and Lightning's class leaves open:

* **buffers are the task's own, never averaged** (``use_buffers=False``).
  A task's buffers are fitted statistics (``statistics_fitted``, reference
  energies, shifts and scales), set before training and constant during
  it. Averaging them would blend them with the stale copy taken when the
  average was created (and turn an integer buffer into truncated floats),
  so they are copied from the task into the average before each
  validation, checkpoint and the end of training. Lightning's class copies
  them only at its first update, so a validation or checkpoint before that
  (the sanity check, or a task that fits its statistics in ``on_fit_start``,
  after Lightning made its copy in ``setup``) would see stale ones.
* **the average lives where the task lives.** Lightning builds it in
  ``setup``, before the strategy moves the task to its device and converts
  its precision, so on a GPU the average would stay on the CPU (a copy
  across the bus for every tensor at every update) and under
  ``precision=64-true`` it would stay float32. It is moved to the task's
  device and dtype when fitting starts.
* **until its first update the average follows the weights.** Lightning's
  average is, until then, the copy taken at ``setup``: the untrained
  weights, which every validation and checkpoint before
  ``update_starting_at_step`` would evaluate and keep. It is set to the
  weights after each earlier step instead, so averaging starts late, not
  the training.

Everything else (the update rule ``decay * average + (1 - decay) * weights``,
first update a plain copy; the swap for validation; checkpoint layout;
resume) is Lightning's. Validation with forces works unchanged: the swap
copies values into the task's own parameters, so autograd through positions
runs through the same modules.

Lightning is imported only when a callback is built, so importing this
module (and the training driver) stays cheap.
"""
from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from typing import Any

from matsciml.errors import MatscimlError

#: what each ``ema`` key means when it is left out (the config's defaults)
EMA_DEFAULTS: dict[str, Any] = {"update_every_n_steps": 1, "update_starting_at_step": 0}


def training_callbacks(config: Mapping[str, Any]) -> list[Any]:
    """The Lightning callbacks a resolved config asks for, beyond checkpoints and early stopping.

    Today that is the weight average of the ``ema`` section when
    ``ema.decay`` is set (``ema=null``, ``ema=false`` or ``ema.decay=null``:
    none). A config written before the section existed has none.
    """
    callbacks: list[Any] = []
    ema = config.get("ema")
    if isinstance(ema, Mapping) and ema.get("decay") is not None:
        callbacks.append(ema_callback(ema))
    return callbacks


def ema_callback(section: Mapping[str, Any]) -> Any:
    """An :class:`EMAWeights` callback from an ``ema`` config section (already checked by ``check_config``).

    Raises:
        MatscimlError: the installed Lightning predates its weight averaging
            (2.6), naming the installed version and the fix.
    """
    options = {**EMA_DEFAULTS, **{key: value for key, value in section.items() if value is not None}}
    return _ema_class()(decay=float(options["decay"]), update_every_n_steps=int(options["update_every_n_steps"]),
                        update_starting_at_step=int(options["update_starting_at_step"]))


@functools.lru_cache(maxsize=None)
def _ema_class() -> type:
    """Build :class:`EMAWeights` on first use: its base class needs Lightning >= 2.6."""
    try:
        from pytorch_lightning.callbacks import EMAWeightAveraging
    except ImportError:
        import pytorch_lightning

        raise MatscimlError(f"ema.decay is set, but the installed pytorch-lightning {pytorch_lightning.__version__} "
                            f"has no weight averaging (EMAWeightAveraging, added in 2.6); upgrade it with "
                            f"pip install 'pytorch-lightning>=2.6', or train without it: ema.decay=null") from None

    class EMAWeights(EMAWeightAveraging):
        """Lightning's EMA of the parameters, with the task's own buffers, kept on the task's device and dtype.

        Args:
            decay: weight of the running average at each update (the new
                weights get ``1 - decay``); the average spans about
                ``1 / (1 - decay)`` updates.
            update_every_n_steps: update after every N-th optimiser step.
            update_starting_at_step: the first optimiser step (0-based) that
                may update the average (its first update copies the weights);
                until the first update, the average follows the weights.
        """

        def __init__(self, decay: float = 0.999, update_every_n_steps: int = 1,
                     update_starting_at_step: int = 0) -> None:
            super().__init__(use_buffers=False, decay=decay, update_every_n_steps=update_every_n_steps,
                             update_starting_at_step=update_starting_at_step)
            self.decay = decay

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            """Move the average to the device and dtype the strategy gave the task (after Lightning's ``setup``)."""
            super().on_fit_start(trainer, pl_module)
            if self._average_model is None:
                return
            for average, current in zip(_tensors(self._average_model.module), _tensors(pl_module)):
                if average.device != current.device or average.dtype != current.dtype:
                    average.data = average.data.to(device=current.device, dtype=current.dtype)

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                               batch_idx: int) -> None:
            """Lightning's update when this step is due; until the first one, set the average to the weights."""
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            if self._average_model is not None and int(self._average_model.n_averaged) == 0:
                for average, current in zip(self._average_model.module.parameters(), pl_module.parameters()):
                    average.detach().copy_(current.detach())

        def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self._copy_buffers(pl_module)
            super().on_validation_epoch_start(trainer, pl_module)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self._copy_buffers(pl_module)
            super().on_train_end(trainer, pl_module)

        def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
            self._copy_buffers(pl_module)
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

        def _copy_buffers(self, pl_module: Any) -> None:
            """The task's buffers (fitted statistics) into the average, which averages parameters only."""
            if self._average_model is None:
                return
            for average, current in zip(self._average_model.module.buffers(), pl_module.buffers()):
                average.detach().copy_(current.detach())

    EMAWeights.__module__ = __name__
    EMAWeights.__qualname__ = "EMAWeights"
    return EMAWeights


def _tensors(module: Any) -> Any:
    return itertools.chain(module.parameters(), module.buffers())


def __getattr__(name: str) -> Any:
    """``from matsciml.training.callbacks import EMAWeights`` builds the class (Lightning) only when asked."""
    if name == "EMAWeights":
        return _ema_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
