"""The hook specifications: the public contract between matsciml and its plugins.

A plugin is a module named by an entry point in the group ``matsciml``::

    [project.entry-points.matsciml]
    my-backbone = "my_backbone.plugin"

That module implements any of the hooks below with the ``hookimpl`` marker::

    from matsciml.hookspecs import hookimpl
    from matsciml.specs import ModelSpec

    @hookimpl
    def matsciml_models():
        return [ModelSpec(name="my-backbone", summary="...",
                          factory="my_backbone.model:MyBackbone",
                          representation="dgl-graph",
                          representation_distribution="matsciml-dgl")]

Rules every implementation follows:

* the hook takes no arguments and returns a list (or any iterable) of spec
  objects of the matching class from :mod:`matsciml.specs`;
* it is cheap: it must not build models or open datasets, only describe them
  (give heavy factories as ``"module:attribute"`` strings);
* it leaves ``distribution`` unset: the registry fills in the distribution
  the entry point belongs to.

The core's own datasets and tasks come through these same hooks, from the
entry point ``matsciml-builtins`` of the ``matsciml`` distribution.

Versioning: :data:`HOOKSPEC_VERSION` increases when a hook or a spec field is
added; a hook or field is removed or changes meaning only with a new major
version of matsciml.
"""
from __future__ import annotations

from collections.abc import Iterable

import pluggy

from matsciml.specs import DatasetSpec, ModelSpec, RepresentationSpec, TaskSpec

PROJECT_NAME = "matsciml"
"""The pluggy project name, and the entry-point group plugins declare."""

HOOKSPEC_VERSION = 4
"""Version of this contract (hooks and spec fields): 2 added ``param_ranges`` and
``param_choices``; 3 added ``ModelSpec.tied_params`` and ``TaskSpec.targets_param``
and ``TaskSpec.complete_params``, and backbones return
:class:`matsciml.interfaces.BackboneOutput`; 4 added ``presets`` (``model.preset=NAME``)."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

# Hook name for each component kind; the registry calls them by this table.
HOOK_FOR_KIND: dict[str, str] = {
    "dataset": "matsciml_datasets",
    "representation": "matsciml_representations",
    "model": "matsciml_models",
    "task": "matsciml_tasks",
}


@hookspec
def matsciml_datasets() -> Iterable[DatasetSpec]:
    """Return the datasets this plugin provides.

    Called once per process, the first time the registry is used. Each
    :class:`~matsciml.specs.DatasetSpec` factory, called with the spec's
    ``defaults`` updated by user options, returns a map-style
    ``torch.utils.data.Dataset`` whose items are samples following the data
    contract of :mod:`matsciml.data.schema`.
    """


@hookspec
def matsciml_representations() -> Iterable[RepresentationSpec]:
    """Return the representations this plugin provides.

    Called once per process, the first time the registry is used. Each
    :class:`~matsciml.specs.RepresentationSpec` factory returns an object
    following :class:`matsciml.interfaces.Representation`: it turns one
    sample into model input and collates a list of them into a batch.
    """


@hookspec
def matsciml_models() -> Iterable[ModelSpec]:
    """Return the backbones this plugin provides.

    Called once per process, the first time the registry is used. Each
    :class:`~matsciml.specs.ModelSpec` names the representation its batches
    come from (and, in ``tied_params``, its hyper-parameters that must equal
    one of that representation's, such as a cutoff radius); its factory
    returns a ``torch.nn.Module`` following :class:`matsciml.interfaces.Backbone`:
    attributes ``representation`` (the spec's) and ``embedding_dim`` (and
    ``structure_embedding_dim`` when it has per-structure features), and
    ``forward(batch: matsciml.batch.Batch) -> matsciml.interfaces.BackboneOutput``.
    The pipeline checks this on one batch of the run's data when a run is
    built, and stops there naming the model when it does not hold.
    """


@hookspec
def matsciml_tasks() -> Iterable[TaskSpec]:
    """Return the tasks this plugin provides.

    Called once per process, the first time the registry is used. Each
    :class:`~matsciml.specs.TaskSpec` factory takes a backbone (and the
    task's hyper-parameters, and the keywords ``optimizer`` and ``scheduler``)
    and returns a ``LightningModule`` that owns heads, losses, target
    normalisation and metrics. The spec says which sample keys the task needs
    (``required_targets``, and ``targets_param`` for targets the user
    chooses).
    """
