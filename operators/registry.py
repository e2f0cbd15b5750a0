"""Every operator medrecon ships, each with a small example instance.

One list of names and one factory (as in DeepInverse's physics tests): the
generic property test (``tests/test_operators.py``) runs every entry through the
same checks of adjointness, linearity, normal operator, autograd, batching and
boundary checks, for each dtype and device it supports, and, where the entry
knows its operator norm in closed form, checks :meth:`LinearOperator.norm`
against it. A new operator joins this list or does not merge.

The operator algebra (``c * A``, ``A @ B``, ``A + B``, ``A.H``) has entries of its
own with complex scalars (none real, none but one of modulus one), so that a dropped
conjugate or a ``c**2`` written for ``|c|**2`` fails the adjointness and normal checks.

Example:
    >>> import torch
    >>> from medrecon.operators.registry import OPERATORS, build
    >>> A = build("ct_parallel_linear", "cpu", torch.float32)
    >>> A.domain_shape, A.range_shape
    ((24, 20), (9, 35))
    >>> B = build("wavelet_complex_identity", "cpu", torch.complex128)
    >>> round(B.norm(), 6) == round(OPERATORS["wavelet_complex_identity"].norm(B), 6)
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from medrecon.operators.base import (
    Identity,
    LinearOperator,
    MatrixOperator,
    Multiply,
    real_dtype,
)
from medrecon.operators.ct import ConeBeam3D, CTProjector, ParallelBeam3D
from medrecon.operators.ct_geometry import CTGeometry
from medrecon.operators.finite_difference import FiniteDifference
from medrecon.operators.kspace_crop import KSpaceCrop
from medrecon.operators.map_sets import SetwiseCrop, SoftSENSE
from medrecon.operators.mri import CartesianMRI, FFT2c
from medrecon.operators.nufft import NonCartesianMRI, ToeplitzNormal
from medrecon.operators.sampling import radial_trajectory, random_mask
from medrecon.operators.wavelet import Wavelet2D

REAL = (torch.float32, torch.float64)
COMPLEX = (torch.complex64, torch.complex128)
ALL = REAL + COMPLEX

#: default bound on the normalised adjointness error by working precision (the real
#: dtype an operator computes in, :func:`precision`). Measured on the CPU, the entries
#: below reach at most about 6e-8 in single and 1e-16 in double precision; the CT
#: entries compute in float32 (ASTRA) whatever their dtype and reach about 6e-9.
ADJOINT_TOLERANCE: dict[torch.dtype, float] = {torch.float32: 1e-5, torch.float64: 1e-12}

#: default relative bound between two computations of one result (``normal`` against
#: ``adjoint(forward)``, autograd against the adjoint, batched against unbatched)
AGREEMENT_TOLERANCE: dict[torch.dtype, float] = {torch.float32: 1e-4, torch.float64: 1e-9}

#: relative bound on ``A.norm(n_iter=NORM_ITERATIONS, tol=0)`` against a closed form
#: (measured at most 2.4e-6 in single and 1e-15 in double precision)
NORM_TOLERANCE: dict[torch.dtype, float] = {torch.float32: 1e-5, torch.float64: 1e-10}
NORM_ITERATIONS = 300


def precision(A: LinearOperator) -> torch.dtype:
    """The real dtype ``A`` computes in: ``A.backend_precision`` where set (ASTRA computes
    in float32 whatever ``A.dtype`` is), otherwise the real dtype of ``A.dtype``."""
    return real_dtype(A.backend_precision or A.dtype)


@dataclass(frozen=True)
class OperatorSpec:
    """How to build an example of one operator, and where it applies.

    ``adjoint_tolerance`` bounds the normalised adjointness error
    ``|<Ax,y> - <x,A^H y>| / (||A|| ||x|| ||y||)``. By default it is
    :data:`ADJOINT_TOLERANCE` of the operator's working precision; ``adjoint_tolerance``
    overrides it per device type (``(("cuda", 5e-2),)``), and an override above the
    default must say why in ``note``. ``normal_tolerance`` likewise loosens
    :data:`AGREEMENT_TOLERANCE` for ``normal`` where it is by design not
    ``adjoint(forward)`` to rounding (a Toeplitz embedding), again with a ``note``.
    ``norm`` is ``||A||_2`` in closed form for the built example ``A``, where known.
    """

    factory: Callable[[torch.device, torch.dtype], LinearOperator]
    dtypes: tuple[torch.dtype, ...]
    devices: tuple[str, ...] = ("cpu", "cuda")
    adjoint_tolerance: tuple[tuple[str, float], ...] = ()
    normal_tolerance: float | None = None
    norm: Callable[[LinearOperator], float] | None = None
    note: str = ""

    def tolerance(self, A: LinearOperator) -> float:
        """The adjointness bound for the built example ``A`` (its device and precision)."""
        return dict(self.adjoint_tolerance).get(A.device.type, ADJOINT_TOLERANCE[precision(A)])

    def agreement(self, A: LinearOperator, normal: bool = False) -> float:
        """The relative bound between two computations of one result with ``A``;
        ``normal``: one of them is ``A.normal``."""
        default = AGREEMENT_TOLERANCE[precision(A)]
        if normal and self.normal_tolerance is not None:
            return max(default, self.normal_tolerance)
        return default


def _seeded(shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, dtype=dtype, generator=g).to(device)


def _matrix(device, dtype):
    return MatrixOperator(_seeded((7, 5), dtype, "cpu", 1), device=device)


def _multiply_coils(device, dtype):
    return Multiply((6, 5), _seeded((3, 6, 5), dtype, "cpu", 2), device=device)


def _composed(device, dtype):
    mask = Multiply((7,), _seeded((7,), dtype, "cpu", 3), device=device)
    return 0.5 * (mask @ _matrix(device, dtype)) + 2.0 * (mask @ _matrix(device, dtype))


#: complex scalars of the algebra entries: none real and, but for _UNIT, none of modulus
#: one, so a dropped conjugate or ``c**2`` for ``|c|**2`` changes every result
_C1, _C2, _C3 = 1.5 - 0.7j, 0.3 + 1.1j, -0.5 + 0.2j
_UNIT = 0.6 + 0.8j


def _scaled_matrix(device, dtype):
    return _C1 * _matrix(device, dtype)


def _composed_complex(device, dtype):
    """``c2 (D @ (c1 M)) - 2j (D @ M)`` for a complex diagonal ``D``: scalars inside and
    outside a composition, and a difference of such (equal to ``(c1 c2 - 2j) D M``)."""
    diagonal = Multiply((7,), _seeded((7,), dtype, "cpu", 3), device=device)
    return (_C2 * (diagonal @ _scaled_matrix(device, dtype))
            - 2j * (diagonal @ _matrix(device, dtype)))


def _wavelet_identity(device, dtype):
    """``W^H @ (c1 W) + c3 I`` for an orthonormal wavelet ``W``, that is ``(c1 + c3) I``:
    an adjoint and a scalar inside a composition inside a sum."""
    W = Wavelet2D((8, 8), "db2", levels=1, dtype=dtype, device=device)
    return W.H @ (_C1 * W) + _C3 * Identity((8, 8), dtype, device)


def _one(A) -> float:
    return 1.0


def _weights_norm(A) -> float:
    """``||Multiply(w)||``: the largest ``sqrt(sum over the leading dims of |w|^2)``."""
    gram = (A.weights.abs() ** 2).reshape(-1, *A.domain_shape).sum(dim=0)
    return math.sqrt(float(gram.max()))


def _matrix_norm(A) -> float:
    return float(torch.linalg.matrix_norm(A.matrix, ord=2))


def _composed_complex_norm(A) -> float:
    diagonal, matrix = _seeded((7,), A.dtype, "cpu", 3), _seeded((7, 5), A.dtype, "cpu", 1)
    dense = diagonal[:, None] * matrix
    return abs(_C1 * _C2 - 2j) * float(torch.linalg.matrix_norm(dense, ord=2))


def _finite_difference_norm(A) -> float:
    """Forward differences with a zero at the last index (Neumann): along an axis of
    length ``n``, ``D^T D`` has eigenvalues ``2 - 2 cos(pi k / n)``, ``k = 0 .. n - 1``,
    and the axes add (a Kronecker sum), so ``||D||^2 = sum (2 - 2 cos(pi (n - 1) / n))``."""
    return math.sqrt(sum(2 - 2 * math.cos(math.pi * (n - 1) / n) for n in A.domain_shape))


def _sense_no_mask_norm(A) -> float:
    """Unmasked SENSE ``F S`` with a unitary ``F``: ``||F S|| = ||S||``."""
    return _weights_norm(A.coils)


def _ct(geometry: CTGeometry, projector: str | None):
    def build(device, dtype):
        return CTProjector(geometry, device=device, dtype=dtype,
                           projector=None if torch.device(device).type == "cuda" else projector)
    return build


def _ct_scaled_composed(device, dtype):
    """``-0.5 (P @ D)``: a non-torch (ASTRA) operator inside the algebra."""
    diagonal = Multiply((24, 20), _seeded((24, 20), dtype, "cpu", 9), device=device)
    return -0.5 * (_ct(_PARALLEL, "strip")(device, dtype) @ diagonal)


def _cartesian(coils: int, mask: str):
    """Cartesian MRI on a 7 x 10 image (odd rows test the centring): a fastMRI column
    mask ("columns"), a random 2D mask ("2d") or none ("none")."""
    def build(device, dtype):
        masks = {"columns": random_mask(10, 2, 0.2, seed=0),
                 "2d": (_seeded((7, 10), torch.float32, "cpu", 5) > 0).float(), "none": None}
        maps = _seeded((coils, 7, 10), dtype, "cpu", 6) if coils else None
        return CartesianMRI((7, 10), masks[mask], maps, dtype=dtype, device=device)
    return build


def _nufft(coils: int, toeplitz: bool = False, weighted: bool = False):
    """NUFFT MRI on a 12 x 10 image: 10 golden-angle half-spokes of 12 samples."""
    def build(device, dtype):
        ktraj = radial_trajectory(10, 12, (12, 10))
        maps = _seeded((coils, 12, 10), dtype, "cpu", 7) if coils else None
        weights = torch.rand(120, generator=torch.Generator().manual_seed(8)) if weighted else None
        return NonCartesianMRI((12, 10), ktraj, maps, weights=weights, toeplitz=toeplitz,
                               dtype=dtype, device=device)
    return build


def _toeplitz(device, dtype):
    return ToeplitzNormal((2, 12, 10), radial_trajectory(10, 12, (12, 10)), dtype=dtype,
                          device=device)



def _kspace_crop(device, dtype):
    """A k-space crop from an odd, non-integer multiple 15 x 22 to 7 x 10 (odd rows test
    the centring of both grids)."""
    return KSpaceCrop((15, 22), (7, 10), dtype=dtype, device=device)


def _sense_kspace_crop(device, dtype):
    """SENSE on the coarse grid after the crop (the prior-resolution operator ``A C`` of
    :mod:`medrecon.studies.mri_resolution`)."""
    return _cartesian(3, "2d")(device, dtype) @ KSpaceCrop((14, 20), (7, 10), dtype=dtype,
                                                            device=device)

def _soft_sense(device, dtype):
    """Two map sets on a 7 x 10 image (stacked domain 14 x 10), a random 2D mask."""
    return SoftSENSE(_cartesian(3, "2d")(device, dtype), _seeded((3, 7, 10), dtype, "cpu", 9))


def _soft_sense_setwise_crop(device, dtype):
    """Two map sets after the crop of each set image from 14 x 20 (the operator of a
    diffusion method with both sets on the prior's grid, :mod:`medrecon.studies.mri_resolution`)."""
    return _soft_sense(device, dtype) @ SetwiseCrop(KSpaceCrop((14, 20), (7, 10), dtype=dtype,
                                                               device=device))


_TOEPLITZ_NOTE = ("normal by Toeplitz embedding differs from adjoint(forward) by up to about "
                  "1e-5 relative in either precision (the kernel's interpolation error, see "
                  "operators/nufft.py), so its normal checks use the 3e-5 of "
                  "tests/test_nufft.py; forward and adjoint are exact to rounding")

_PARALLEL = CTGeometry.parallel((24, 20), n_views=9, pixel_size=0.7)
_FAN = CTGeometry.fan((24, 20), n_views=11, source_to_isocenter=60.0,
                      isocenter_to_detector=40.0, pixel_size=1.3)
_CUDA_BP = ("ASTRA's CUDA back projection is matched, not the exact transpose of its forward "
            "projection (different ray sampling), so its adjoint error is about 1e-2")

OPERATORS: dict[str, OperatorSpec] = {
    "identity": OperatorSpec(lambda d, t: Identity((4, 3), t, d), ALL, norm=_one),
    "multiply": OperatorSpec(lambda d, t: Multiply((6, 5), _seeded((6, 5), t, "cpu", 4),
                                                   device=d), ALL, norm=_weights_norm),
    "multiply_coils": OperatorSpec(_multiply_coils, ALL, norm=_weights_norm),
    "matrix": OperatorSpec(_matrix, ALL, norm=_matrix_norm),
    "matrix_adjoint": OperatorSpec(lambda d, t: _matrix(d, t).H, ALL,
                                   norm=lambda A: _matrix_norm(A.op)),
    "composed_sum": OperatorSpec(_composed, ALL),
    "scaled_complex_matrix": OperatorSpec(_scaled_matrix, COMPLEX,
                                          norm=lambda A: abs(_C1) * _matrix_norm(A.op)),
    "scaled_complex_fft": OperatorSpec(lambda d, t: _UNIT * FFT2c((7, 10), t, d), COMPLEX,
                                       norm=_one),
    "scaled_complex_adjoint": OperatorSpec(lambda d, t: (_C2 * _matrix(d, t)).H, COMPLEX,
                                           norm=lambda A: abs(_C2) * _matrix_norm(A.op.op)),
    "composed_complex_sum": OperatorSpec(_composed_complex, COMPLEX,
                                         norm=_composed_complex_norm),
    "wavelet_complex_identity": OperatorSpec(_wavelet_identity, COMPLEX,
                                             norm=lambda A: abs(_C1 + _C3)),
    "finite_difference_2d": OperatorSpec(lambda d, t: FiniteDifference((6, 5), t, d), ALL,
                                         norm=_finite_difference_norm),
    "finite_difference_3d": OperatorSpec(lambda d, t: FiniteDifference((3, 4, 5), t, d), ALL,
                                         norm=_finite_difference_norm),
    "wavelet_db4": OperatorSpec(lambda d, t: Wavelet2D((16, 24), "db4", levels=2, dtype=t,
                                                       device=d), ALL, norm=_one),
    "wavelet_haar": OperatorSpec(lambda d, t: Wavelet2D((8, 12), "haar", dtype=t, device=d), ALL,
                                 norm=_one),
    "ct_parallel_linear": OperatorSpec(_ct(_PARALLEL, "linear"), REAL,
                                       adjoint_tolerance=(("cuda", 5e-2),), note=_CUDA_BP),
    "ct_parallel_strip": OperatorSpec(_ct(_PARALLEL, "strip"), REAL, devices=("cpu",)),
    "ct_parallel_line": OperatorSpec(_ct(_PARALLEL, "line"), REAL, devices=("cpu",)),
    "ct_fan_strip": OperatorSpec(_ct(_FAN, "strip_fanflat"), REAL,
                                 adjoint_tolerance=(("cuda", 5e-2),), note=_CUDA_BP),
    "ct_fan_line": OperatorSpec(_ct(_FAN, "line_fanflat"), REAL, devices=("cpu",)),
    "ct_scaled_composed": OperatorSpec(_ct_scaled_composed, REAL, devices=("cpu",)),
    "ct_parallel_3d": OperatorSpec(
        lambda d, t: ParallelBeam3D((4, 16, 16), torch.linspace(0, 3.1, 8).tolist(), 6, 24,
                                    device=d),
        (torch.float32,), devices=("cuda",), adjoint_tolerance=(("cuda", 5e-2),), note=_CUDA_BP),
    "ct_cone_3d": OperatorSpec(
        lambda d, t: ConeBeam3D((4, 16, 16), torch.linspace(0, 6.2, 8).tolist(), 8, 32,
                                source_to_isocenter=60.0, isocenter_to_detector=40.0, device=d),
        (torch.float32,), devices=("cuda",), adjoint_tolerance=(("cuda", 5e-2),), note=_CUDA_BP),
    "mri_cartesian_single_coil": OperatorSpec(_cartesian(0, "columns"), COMPLEX, norm=_one),
    "mri_cartesian_single_coil_full": OperatorSpec(_cartesian(0, "none"), COMPLEX, norm=_one),
    "mri_sense_2d_mask": OperatorSpec(_cartesian(3, "2d"), COMPLEX),
    "mri_sense_columns": OperatorSpec(_cartesian(3, "columns"), COMPLEX),
    "mri_sense_no_mask": OperatorSpec(_cartesian(3, "none"), COMPLEX, norm=_sense_no_mask_norm),
    "mri_sense_scaled_complex": OperatorSpec(
        lambda d, t: _C3 * _cartesian(3, "none")(d, t), COMPLEX,
        norm=lambda A: abs(_C3) * _sense_no_mask_norm(A.op)),
    "mri_nufft_single_coil": OperatorSpec(_nufft(0), COMPLEX),
    "mri_nufft_multicoil": OperatorSpec(_nufft(3), COMPLEX),
    "mri_nufft_multicoil_weighted": OperatorSpec(_nufft(3, weighted=True), COMPLEX),
    "mri_nufft_multicoil_toeplitz": OperatorSpec(_nufft(3, toeplitz=True, weighted=True),
                                                 COMPLEX, normal_tolerance=3e-5,
                                                 note=_TOEPLITZ_NOTE),
    "mri_toeplitz_normal": OperatorSpec(_toeplitz, COMPLEX),
    "mri_kspace_crop": OperatorSpec(_kspace_crop, COMPLEX, norm=lambda A: A.scale),
    "mri_sense_kspace_crop": OperatorSpec(_sense_kspace_crop, COMPLEX),
    "mri_soft_sense": OperatorSpec(_soft_sense, COMPLEX),
    "mri_soft_sense_setwise_crop": OperatorSpec(_soft_sense_setwise_crop, COMPLEX),
}


def build(name: str, device: torch.device | str, dtype: torch.dtype) -> LinearOperator:
    """The example instance of registered operator ``name``."""
    spec = OPERATORS[name]
    if dtype not in spec.dtypes:
        raise ValueError(f"{name} does not support {dtype}")
    return spec.factory(torch.device(device), dtype)
