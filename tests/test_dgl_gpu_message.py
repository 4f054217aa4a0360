"""What a run says when the installed DGL cannot put graphs on the GPU.

The DGL wheels on PyPI are CPU builds. Moving one of their graphs to
``cuda:0`` raises a ``DGLError`` of a dozen lines ending in a C++ stack
trace; a ``dgl-graph`` batch (:class:`matsciml_dgl.representation.GraphBatch`)
turns it into one line naming the DGL version, the device and the command
that installs the CUDA build. There is no GPU here: the error is provoked by
a monkeypatched ``DGLGraph.to`` (everywhere), and also for real where the
installed DGL is a CPU build (its runtime refuses a CUDA context before any
driver is touched).

Every test is marked ``dgl`` (the current-torch run deselects them), and this
module imports neither DGL nor the plugin at collection time.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from matsciml.testing import random_periodic_sample

# What DGL 2.1.0's CPU build raises, shortened: the message, then its C++ stack trace.
DGL_CPU_BUILD_ERROR = (
    "[09:34:56] /opt/dgl/src/runtime/c_runtime_api.cc:82: Check failed: allow_missing: Device API cuda is not "
    "enabled. Please install the cuda version of dgl.\nStack trace:\n"
    "  [bt] (0) libdgl.so(dmlc::LogMessageFatal::~LogMessageFatal()+0x67) [0x7fbf4c9621b7]\n"
    "  [bt] (1) libdgl.so(dgl::runtime::DeviceAPIManager::GetAPI(std::string, bool)+0x2a5) [0x7fbf4cdbae85]\n"
)


def _batch():
    from matsciml_dgl.representation import DGLGraphRepresentation

    representation = DGLGraphRepresentation(cutoff_radius=3.0)
    rng = np.random.default_rng(3)
    return representation.collate([representation(random_periodic_sample(rng, 5)) for _ in range(2)])


def _expected_line(device: str) -> str:
    import dgl
    import torch

    cuda = "cu" + (torch.version.cuda or "12.1").replace(".", "")
    torch_minor = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    return (f"the DGL installed here ({dgl.__version__}, CPU build) cannot put graphs on {device}; install the "
            f"CUDA build: pip install dgl=={dgl.__version__.split('+')[0]}+{cuda} "
            f"-f https://data.dgl.ai/wheels/torch-{torch_minor}/{cuda}/repo.html (see README 'GPU')")


def _dgl_has_cuda() -> bool:
    """Whether the installed DGL build can hold graphs on CUDA at all (a CPU build refuses at once)."""
    import dgl
    import torch

    graph = dgl.graph((torch.tensor([0]), torch.tensor([1])))
    try:
        graph.to("cuda:0")
    except dgl.DGLError as exc:
        return "is not enabled" not in str(exc)
    except Exception:  # noqa: BLE001 - a CUDA build on a machine without a GPU fails in torch instead
        return True
    return True


@pytest.mark.dgl
def test_cpu_build_error_is_one_line_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import dgl
    import torch

    from matsciml.cli import error_line
    from matsciml.errors import MatscimlError

    def refuse(self, device, **kwargs):
        raise dgl.DGLError(DGL_CPU_BUILD_ERROR)

    batch = _batch()
    monkeypatch.setattr(dgl.DGLGraph, "to", refuse)
    with pytest.raises(MatscimlError) as caught:
        batch.to(torch.device("cuda", 0))  # what Lightning passes
    message = str(caught.value)
    assert message == _expected_line("cuda:0")
    assert "\n" not in message and "Stack trace" not in message
    assert error_line(caught.value) == message  # what `matsciml train` prints after "matsciml: error: "
    assert isinstance(caught.value.__cause__, dgl.DGLError)  # DGL's own words stay reachable (--debug)


@pytest.mark.dgl
def test_other_failures_are_not_disguised(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only DGL's missing-device error is translated; anything else keeps the core's message and cause."""
    import dgl

    from matsciml.errors import MatscimlError

    def fail(self, device, **kwargs):
        raise dgl.DGLError("some other DGL failure")

    batch = _batch()
    monkeypatch.setattr(dgl.DGLGraph, "to", fail)
    with pytest.raises(MatscimlError) as caught:
        batch.to("cuda:0")
    assert "install the CUDA build" not in str(caught.value)
    assert "some other DGL failure" in str(caught.value)


@pytest.mark.dgl
def test_graph_batch_behaves_as_a_batch() -> None:
    """The batch type the plugin returns moves to the CPU, keeps its type there and across processes."""
    import torch

    from matsciml.batch import Batch
    from matsciml_dgl.representation import GraphBatch

    batch = _batch()
    assert isinstance(batch, GraphBatch) and isinstance(batch, Batch)
    moved = batch.to("cpu")
    assert isinstance(moved, GraphBatch)
    assert torch.equal(moved.pos, batch.pos) and moved.inputs.num_edges() == batch.inputs.num_edges()
    copied = pickle.loads(pickle.dumps(batch))  # how batches come back from DataLoader workers
    assert isinstance(copied, GraphBatch) and torch.equal(copied.pos, batch.pos)
    assert copied.inputs.num_edges() == batch.inputs.num_edges()


@pytest.mark.dgl
def test_real_cpu_build_refusal_is_translated() -> None:
    """With a CPU build of DGL installed (as from PyPI), a real move to cuda:0 gives the one line."""
    import torch

    from matsciml.errors import MatscimlError

    if _dgl_has_cuda():
        pytest.skip("the installed DGL is a CUDA build: it does not refuse cuda:0")
    with pytest.raises(MatscimlError) as caught:
        _batch().to(torch.device("cuda", 0))
    assert str(caught.value) == _expected_line("cuda:0")
