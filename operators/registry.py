"""Every operator medrecon ships, each with a small example instance.

One list of names and one factory (as in DeepInverse's physics tests): the
generic property test (``tests/test_operators.py``) runs every entry through the
same checks of adjointness, linearity, normal operator, autograd, batching and
boundary checks, for each dtype and device it supports. A new operator joins
this list or does not merge.

Example:
    >>> import torch
    >>> from medrecon.operators.registry import OPERATORS, build
    >>> A = build("ct_parallel_linear", "cpu", torch.float32)
    >>> A.domain_shape, A.range_shape
    ((24, 20), (9, 35))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from medrecon.operators.base import Identity, LinearOperator, MatrixOperator, Multiply
from medrecon.operators.ct import ConeBeam3D, CTProjector, ParallelBeam3D
from medrecon.operators.ct_geometry import CTGeometry
from medrecon.operators.finite_difference import FiniteDifference
from medrecon.operators.mri import CartesianMRI
from medrecon.operators.nufft import NonCartesianMRI, ToeplitzNormal
from medrecon.operators.sampling import radial_trajectory, random_mask
from medrecon.operators.wavelet import Wavelet2D

REAL = (torch.float32, torch.float64)
COMPLEX = (torch.complex64, torch.complex128)
ALL = REAL + COMPLEX


@dataclass(frozen=True)
class OperatorSpec:
    """How to build an example of one operator, and where it applies.

    ``adjoint_tolerance`` is the bound on the normalised adjointness error
    ``|<Ax,y> - <x,A^H y>| / (||A|| ||x|| ||y||)`` per device type; an entry above
    1e-5 must say why in ``note``.
    """

    factory: Callable[[torch.device, torch.dtype], LinearOperator]
    dtypes: tuple[torch.dtype, ...]
    devices: tuple[str, ...] = ("cpu", "cuda")
    adjoint_tolerance: tuple[tuple[str, float], ...] = (("cpu", 1e-5), ("cuda", 1e-5))
    note: str = ""

    def tolerance(self, device: torch.device | str) -> float:
        return dict(self.adjoint_tolerance)[torch.device(device).type]


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


def _ct(geometry: CTGeometry, projector: str | None):
    def build(device, dtype):
        return CTProjector(geometry, device=device, dtype=dtype,
                           projector=None if torch.device(device).type == "cuda" else projector)
    return build


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


_TOEPLITZ_NOTE = ("normal by Toeplitz embedding differs from adjoint(forward) by about 1e-5 "
                  "relative (the kernel's interpolation error): inside complex64's check, "
                  "not complex128's, so only complex64 is listed")

_PARALLEL = CTGeometry.parallel((24, 20), n_views=9, pixel_size=0.7)
_FAN = CTGeometry.fan((24, 20), n_views=11, source_to_isocenter=60.0,
                      isocenter_to_detector=40.0, pixel_size=1.3)
_CUDA_BP = ("ASTRA's CUDA back projection is matched, not the exact transpose of its forward "
            "projection (different ray sampling), so its adjoint error is about 1e-2")

OPERATORS: dict[str, OperatorSpec] = {
    "identity": OperatorSpec(lambda d, t: Identity((4, 3), t, d), ALL),
    "multiply": OperatorSpec(lambda d, t: Multiply((6, 5), _seeded((6, 5), t, "cpu", 4),
                                                   device=d), ALL),
    "multiply_coils": OperatorSpec(_multiply_coils, ALL),
    "matrix": OperatorSpec(_matrix, ALL),
    "matrix_adjoint": OperatorSpec(lambda d, t: _matrix(d, t).H, ALL),
    "composed_sum": OperatorSpec(_composed, ALL),
    "finite_difference_2d": OperatorSpec(lambda d, t: FiniteDifference((6, 5), t, d), ALL),
    "finite_difference_3d": OperatorSpec(lambda d, t: FiniteDifference((3, 4, 5), t, d), ALL),
    "wavelet_db4": OperatorSpec(lambda d, t: Wavelet2D((16, 24), "db4", levels=2, dtype=t,
                                                       device=d), ALL),
    "wavelet_haar": OperatorSpec(lambda d, t: Wavelet2D((8, 12), "haar", dtype=t, device=d), ALL),
    "ct_parallel_linear": OperatorSpec(_ct(_PARALLEL, "linear"), REAL,
                                       adjoint_tolerance=(("cpu", 1e-5), ("cuda", 5e-2)),
                                       note=_CUDA_BP),
    "ct_parallel_strip": OperatorSpec(_ct(_PARALLEL, "strip"), REAL, devices=("cpu",)),
    "ct_parallel_line": OperatorSpec(_ct(_PARALLEL, "line"), REAL, devices=("cpu",)),
    "ct_fan_strip": OperatorSpec(_ct(_FAN, "strip_fanflat"), REAL,
                                 adjoint_tolerance=(("cpu", 1e-5), ("cuda", 5e-2)),
                                 note=_CUDA_BP),
    "ct_fan_line": OperatorSpec(_ct(_FAN, "line_fanflat"), REAL, devices=("cpu",)),
    "ct_parallel_3d": OperatorSpec(
        lambda d, t: ParallelBeam3D((4, 16, 16), torch.linspace(0, 3.1, 8).tolist(), 6, 24,
                                    device=d),
        (torch.float32,), devices=("cuda",), adjoint_tolerance=(("cuda", 5e-2),), note=_CUDA_BP),
    "ct_cone_3d": OperatorSpec(
        lambda d, t: ConeBeam3D((4, 16, 16), torch.linspace(0, 6.2, 8).tolist(), 8, 32,
                                source_to_isocenter=60.0, isocenter_to_detector=40.0, device=d),
        (torch.float32,), devices=("cuda",), adjoint_tolerance=(("cuda", 5e-2),), note=_CUDA_BP),
    "mri_cartesian_single_coil": OperatorSpec(_cartesian(0, "columns"), COMPLEX),
    "mri_cartesian_single_coil_full": OperatorSpec(_cartesian(0, "none"), COMPLEX),
    "mri_sense_2d_mask": OperatorSpec(_cartesian(3, "2d"), COMPLEX),
    "mri_sense_columns": OperatorSpec(_cartesian(3, "columns"), COMPLEX),
    "mri_sense_no_mask": OperatorSpec(_cartesian(3, "none"), COMPLEX),
    "mri_nufft_single_coil": OperatorSpec(_nufft(0), COMPLEX),
    "mri_nufft_multicoil": OperatorSpec(_nufft(3), COMPLEX),
    "mri_nufft_multicoil_weighted": OperatorSpec(_nufft(3, weighted=True), COMPLEX),
    "mri_nufft_multicoil_toeplitz": OperatorSpec(_nufft(3, toeplitz=True, weighted=True),
                                                 (torch.complex64,), note=_TOEPLITZ_NOTE),
    "mri_toeplitz_normal": OperatorSpec(_toeplitz, COMPLEX),
}


def build(name: str, device: torch.device | str, dtype: torch.dtype) -> LinearOperator:
    """The example instance of registered operator ``name``."""
    spec = OPERATORS[name]
    if dtype not in spec.dtypes:
        raise ValueError(f"{name} does not support {dtype}")
    return spec.factory(torch.device(device), dtype)
