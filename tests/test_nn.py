"""matsciml.nn: the DGL-free building blocks every model shares.

No ``dgl`` marker: these run in the current-torch environment too. Each
block is checked against what it means physically or against an
independent reference written the slow way:

- radial basis: values are the Gaussians of the formula, centred where asked;
- envelopes: 1 at d = 0, value and slope 0 at the cutoff (autograd), smooth
  and decreasing inside, 0 beyond;
- edge vectors: a hand-made periodic example, the brute-force neighbour
  search's lengths, and gradients with respect to positions;
- per-structure sums, means and padding: a Python loop over atoms;
- activations: every name of the table, and a clear error for others.
"""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from matsciml.data.schema import MAX_ATOMIC_NUMBER
from matsciml.nn import (
    ACTIVATIONS,
    CosineCutoff,
    ElementEmbedding,
    GaussianRadialBasis,
    PolynomialEnvelope,
    ShiftedSoftplus,
    edge_vectors,
    make_activation,
    mean_per_structure,
    pad_per_structure,
    sum_per_structure,
    unpad_per_structure,
)
from matsciml.testing import brute_force_neighbors, random_periodic_sample

CUTOFF = 5.0  # Å


def random_batch_layout(rng: np.random.Generator, sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(structure_index [N], num_atoms [B])`` of structures of the given sizes, atoms contiguous."""
    num_atoms = torch.tensor(sizes, dtype=torch.int64)
    return torch.repeat_interleave(torch.arange(len(sizes)), num_atoms), num_atoms


# ------------------------------------------------------------ radial basis
def test_gaussian_basis_values_and_shape() -> None:
    basis = GaussianRadialBasis(num_basis=5, start=0.0, stop=4.0, width=0.5)
    distances = torch.tensor([0.0, 1.0, 1.25, 3.9], dtype=torch.float64)
    features = basis(distances)
    assert features.shape == (4, 5) and features.dtype == torch.float64
    np.testing.assert_allclose(basis.centers.numpy(), [0.0, 1.0, 2.0, 3.0, 4.0])
    for row, distance in enumerate(distances.tolist()):
        for k, center in enumerate([0.0, 1.0, 2.0, 3.0, 4.0]):
            assert features[row, k].item() == pytest.approx(math.exp(-((distance - center) / 0.5) ** 2), rel=1e-12)
    # on a centre the Gaussian is 1; one width away it is 1/e
    assert features[1, 1].item() == pytest.approx(1.0)
    assert basis(torch.tensor([2.5]))[0, 2].item() == pytest.approx(math.exp(-1.0), rel=1e-6)


def test_gaussian_basis_with_megnet_numbers() -> None:
    """MEGNet: centres evenly over [0, r_c + 1] Å, exp(-(d - mu)^2 / 0.5^2)."""
    basis = GaussianRadialBasis(num_basis=100, start=0.0, stop=CUTOFF + 1.0, width=0.5)
    assert basis.num_basis == 100 and basis.centers[-1].item() == pytest.approx(CUTOFF + 1.0)
    distances = torch.linspace(0.5, CUTOFF, 7)
    features = basis(distances)
    assert features.shape == (7, 100)
    assert torch.all((features >= 0) & (features <= 1))
    # the closest centre responds most, at least exp(-(half a spacing / width)^2)
    nearest = torch.argmin((distances[:, None] - basis.centers).abs(), dim=1)
    assert torch.equal(features.argmax(dim=1), nearest)
    spacing = (CUTOFF + 1.0) / 99
    assert features.max(dim=1).values.min().item() >= math.exp(-((spacing / 2) / 0.5) ** 2) - 1e-6


def test_gaussian_basis_follows_the_input_dtype_and_is_saved_with_the_model() -> None:
    basis = GaussianRadialBasis(num_basis=3, start=0.0, stop=2.0, width=1.0)
    assert basis(torch.ones(2, dtype=torch.float32)).dtype == torch.float32
    assert "centers" in basis.state_dict()
    assert sum(p.numel() for p in basis.parameters()) == 0  # nothing trained


@pytest.mark.parametrize("arguments, word", [
    ({"num_basis": 0, "start": 0.0, "stop": 1.0, "width": 0.5}, "num_basis"),
    ({"num_basis": 4, "start": 2.0, "stop": 1.0, "width": 0.5}, "stop"),
    ({"num_basis": 4, "start": 0.0, "stop": 1.0, "width": 0.0}, "width"),
])
def test_gaussian_basis_rejects_bad_arguments_by_name(arguments: dict, word: str) -> None:
    with pytest.raises(ValueError, match=f"GaussianRadialBasis: .*{word}"):
        GaussianRadialBasis(**arguments)


# --------------------------------------------------------------- envelopes
ENVELOPES = {
    "cosine": lambda: CosineCutoff(CUTOFF),
    "polynomial-6": lambda: PolynomialEnvelope(CUTOFF, exponent=6),
    "polynomial-3": lambda: PolynomialEnvelope(CUTOFF, exponent=3),
}


def value_and_slope(envelope: torch.nn.Module, distances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    distances = distances.clone().requires_grad_(True)
    values = envelope(distances)
    (slope,) = torch.autograd.grad(values.sum(), distances)
    return values.detach(), slope


@pytest.mark.parametrize("name", sorted(ENVELOPES))
def test_envelope_is_one_at_zero_and_zero_with_zero_slope_at_the_cutoff(name: str) -> None:
    envelope = ENVELOPES[name]()
    distances = torch.tensor([0.0, CUTOFF - 1e-7, CUTOFF, CUTOFF + 1e-7, 2 * CUTOFF], dtype=torch.float64)
    values, slope = value_and_slope(envelope, distances)
    assert values[0].item() == pytest.approx(1.0, abs=1e-15)
    assert abs(values[1].item()) < 1e-12  # approaching r_c from inside
    assert values[2:].abs().max().item() == 0.0  # at and beyond r_c
    assert slope[1:].abs().max().item() < 1e-6  # zero slope at r_c, from both sides
    assert slope[0].abs().item() < 1e-12  # flat at d = 0 too: no kink for coincident images


@pytest.mark.parametrize("name", sorted(ENVELOPES))
def test_envelope_is_smooth_and_decreasing_inside(name: str) -> None:
    envelope = ENVELOPES[name]()
    distances = torch.linspace(0.01, CUTOFF - 0.01, 400, dtype=torch.float64)
    values, slope = value_and_slope(envelope, distances)
    assert torch.all((values > 0) & (values < 1))
    assert torch.all(values[1:] < values[:-1])
    # the autograd slope is the derivative of the values (central differences)
    step = 1e-5
    numerical = (envelope(distances + step) - envelope(distances - step)) / (2 * step)
    np.testing.assert_allclose(slope.numpy(), numerical.numpy(), atol=1e-8)


def test_cosine_cutoff_is_half_at_half_the_cutoff() -> None:
    assert CosineCutoff(CUTOFF)(torch.tensor([CUTOFF / 2])).item() == pytest.approx(0.5)


def test_polynomial_envelope_of_exponent_one_is_a_cube_and_has_zero_curvature_at_the_cutoff() -> None:
    distances = torch.linspace(0.0, CUTOFF, 50, dtype=torch.float64)
    np.testing.assert_allclose(PolynomialEnvelope(CUTOFF, exponent=1)(distances).numpy(),
                               ((1 - distances / CUTOFF) ** 3).numpy(), atol=1e-14)
    # f'' vanishes at r_c as well (forces continuous with continuous derivatives)
    envelope = PolynomialEnvelope(CUTOFF, exponent=6)
    inside = torch.tensor([CUTOFF * (1 - 1e-9)], dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(envelope(inside).sum(), inside, create_graph=True)
    (curvature,) = torch.autograd.grad(slope.sum(), inside)
    assert abs(curvature.item()) < 1e-6


@pytest.mark.parametrize("make", [lambda: CosineCutoff(0.0), lambda: PolynomialEnvelope(-1.0),
                                  lambda: PolynomialEnvelope(CUTOFF, exponent=0)])
def test_envelopes_reject_bad_arguments(make) -> None:
    with pytest.raises(ValueError, match="(cutoff_radius|exponent) must be a positive"):
        make()


# ------------------------------------------------------------ edge vectors
def test_edge_vectors_by_hand_with_a_periodic_shift() -> None:
    """Two atoms 2 Å apart in a 3 Å cubic cell: through the boundary they are 1 Å apart."""
    cell = torch.eye(3, dtype=torch.float64) * 3.0
    pos = torch.tensor([[0.5, 0.0, 0.0], [2.5, 0.0, 0.0]], dtype=torch.float64)
    senders = torch.tensor([1, 0, 1])
    receivers = torch.tensor([0, 1, 0])
    images = torch.tensor([[-1, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float64)
    vectors = edge_vectors(pos, senders, receivers, images @ cell)
    expected = torch.tensor([[-1.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]], dtype=torch.float64)
    assert torch.equal(vectors, expected)  # pos[sender] + shift - pos[receiver]
    assert torch.equal(edge_vectors(pos, senders[2:], receivers[2:]), expected[2:])  # no shifts: molecules


def test_edge_vectors_are_differentiable_with_respect_to_positions() -> None:
    pos = torch.tensor([[0.1, 0.2, 0.3], [1.0, 1.5, -0.5], [2.0, 0.0, 1.0]], dtype=torch.float64,
                       requires_grad=True)
    senders, receivers = torch.tensor([1, 2, 0]), torch.tensor([0, 0, 2])
    shifts = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, -3.0, 0.0]], dtype=torch.float32)
    vectors = edge_vectors(pos, senders, receivers, shifts)
    assert vectors.dtype == torch.float64  # shifts follow the positions' dtype
    vectors.norm(dim=1).sum().backward()
    # d|r_ij|/dpos_j = r_ij/|r_ij| and d|r_ij|/dpos_i = -r_ij/|r_ij|, summed over edges
    unit = (vectors / vectors.norm(dim=1, keepdim=True)).detach()
    expected = torch.zeros_like(pos).index_add(0, senders, unit).index_add(0, receivers, -unit)
    torch.testing.assert_close(pos.grad, expected)


def test_edge_vector_lengths_equal_the_brute_force_search() -> None:
    rng = np.random.default_rng(3)
    sample = random_periodic_sample(rng, num_atoms=6, cell_length=4.0)
    senders, receivers, images, lengths = brute_force_neighbors(sample["pos"], sample["cell"], sample["pbc"], CUTOFF)
    vectors = edge_vectors(torch.from_numpy(sample["pos"]), torch.from_numpy(senders), torch.from_numpy(receivers),
                           torch.from_numpy(images @ sample["cell"]))
    assert len(lengths) > 6 * 6  # periodic images are in play
    np.testing.assert_allclose(vectors.norm(dim=1).numpy(), lengths, rtol=1e-12)


def test_edge_vectors_reject_mismatched_shapes() -> None:
    pos = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="receivers"):
        edge_vectors(pos, torch.tensor([0, 1]), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"shifts has shape \(3, 3\) but there are 2 edges"):
        edge_vectors(pos, torch.tensor([0, 1]), torch.tensor([1, 0]), torch.zeros(3, 3))


# --------------------------------------------------- per-structure reductions
@pytest.mark.parametrize("trailing", [(), (3,), (2, 4)])
def test_sum_and_mean_per_structure_equal_a_loop(trailing: tuple[int, ...]) -> None:
    rng = np.random.default_rng(5)
    structure_index = torch.from_numpy(rng.integers(0, 4, size=30))  # any order
    num_atoms = torch.bincount(structure_index, minlength=4)
    values = torch.from_numpy(rng.normal(size=(30, *trailing)))
    sums = sum_per_structure(values, structure_index, 4)
    means = mean_per_structure(values, structure_index, num_atoms)
    assert sums.shape == means.shape == (4, *trailing)
    for structure in range(4):
        total = torch.zeros(trailing, dtype=values.dtype)
        for atom in range(30):
            if structure_index[atom] == structure:
                total = total + values[atom]
        torch.testing.assert_close(sums[structure], total)
        torch.testing.assert_close(means[structure], total / num_atoms[structure])


def test_sum_per_structure_gives_zeros_to_structures_without_atoms_and_checks_rows() -> None:
    sums = sum_per_structure(torch.ones(3), torch.tensor([0, 0, 2]), 3)
    assert sums.tolist() == [2.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="values has 3 rows but structure_index names 2 atoms"):
        sum_per_structure(torch.ones(3), torch.tensor([0, 1]), 2)


# ------------------------------------------------------------------ padding
@pytest.mark.parametrize("trailing", [(), (3,)])
def test_pad_and_unpad_round_trip_with_masks(trailing: tuple[int, ...]) -> None:
    rng = np.random.default_rng(7)
    sizes = [3, 1, 5, 2]
    structure_index, num_atoms = random_batch_layout(rng, sizes)
    values = torch.from_numpy(rng.normal(size=(sum(sizes), *trailing))).requires_grad_(True)
    padded, mask = pad_per_structure(values, structure_index, num_atoms, fill_value=-7.0)
    assert padded.shape == (4, 5, *trailing) and mask.shape == (4, 5) and mask.dtype == torch.bool
    assert mask.sum(dim=1).tolist() == sizes
    atom = 0
    for structure, size in enumerate(sizes):
        for slot in range(5):
            if slot < size:
                assert mask[structure, slot]
                assert torch.equal(padded[structure, slot], values[atom])
                atom += 1
            else:
                assert not mask[structure, slot]
                assert torch.all(padded[structure, slot] == -7.0)
    assert torch.equal(unpad_per_structure(padded, mask), values)
    # gradients reach every atom once, and nothing flows from the padding
    (padded * 2.0).sum().backward()
    assert torch.equal(values.grad, torch.full_like(values, 2.0))


def test_pad_and_unpad_reject_mismatched_inputs() -> None:
    structure_index, num_atoms = random_batch_layout(np.random.default_rng(0), [2, 3])
    with pytest.raises(ValueError, match="values has 4 rows but structure_index names 5 atoms"):
        pad_per_structure(torch.zeros(4, 3), structure_index, num_atoms)
    padded, mask = pad_per_structure(torch.zeros(5, 3), structure_index, num_atoms)
    with pytest.raises(ValueError, match="pass the mask pad_per_structure returned"):
        unpad_per_structure(padded, mask[:, :2])


# -------------------------------------------------------------- activations
REFERENCES = {
    "silu": lambda x: x * torch.sigmoid(x),
    "relu": lambda x: torch.clamp(x, min=0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0))),
    "tanh": torch.tanh,
    "softplus2": lambda x: torch.log1p(torch.exp(x)) - math.log(2.0),
}


def test_every_activation_of_the_table_has_a_reference() -> None:
    assert set(ACTIVATIONS) == set(REFERENCES)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_activation_by_name(name: str) -> None:
    x = torch.linspace(-4.0, 4.0, 41, dtype=torch.float64)
    activation = make_activation(name)
    assert isinstance(activation, ACTIVATIONS[name])
    torch.testing.assert_close(activation(x), REFERENCES[name](x))
    assert isinstance(make_activation(name.upper()), ACTIVATIONS[name])  # case does not matter


def test_softplus2_passes_through_the_origin_smoothly() -> None:
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    y = make_activation("softplus2")(x)
    (slope,) = torch.autograd.grad(y.sum(), x)
    assert y.item() == 0.0  # softplus(0) = log 2
    assert slope.item() == pytest.approx(0.5)  # sigmoid(0)
    assert isinstance(make_activation("softplus2"), ShiftedSoftplus)


@pytest.mark.parametrize("name", ["swish", "", None])
def test_unknown_activation_names_the_choices(name: object) -> None:
    with pytest.raises(ValueError, match=r"unknown activation .*; choose one of silu, relu, gelu, tanh, softplus2"):
        make_activation(name)  # type: ignore[arg-type]


def test_task_heads_use_the_one_table() -> None:
    from matsciml.tasks import heads

    assert heads.ACTIVATIONS is ACTIVATIONS and heads.make_activation is make_activation
    assert heads.sum_per_structure is sum_per_structure and heads.mean_per_structure is mean_per_structure


# -------------------------------------------------------- element embedding
def test_element_embedding_has_one_row_per_element() -> None:
    torch.manual_seed(0)
    embedding = ElementEmbedding(8)
    assert embedding.table.weight.shape == (MAX_ATOMIC_NUMBER, 8)
    features = embedding(torch.tensor([1, 8, 1, MAX_ATOMIC_NUMBER]))
    assert features.shape == (4, 8)
    assert torch.equal(features[0], features[2]) and torch.equal(features[0], embedding.table.weight[0])
    assert torch.equal(features[3], embedding.table.weight[-1])
    with pytest.raises(ValueError, match="embedding_dim"):
        ElementEmbedding(0)


# ----------------------------------------------------------------- platform
def test_matsciml_nn_imports_no_dgl() -> None:
    code = "import sys, matsciml.nn; print('dgl' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
