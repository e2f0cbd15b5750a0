"""Non-Cartesian MRI: the NUFFT (torchkbnufft), its Toeplitz normal operator, and
density compensation.

Model. For an image ``x`` of shape ``(H, W)`` and a trajectory ``ktraj = omega`` of
shape ``(2, K)`` in radians per pixel (row 0 along ``H``, row 1 along ``W``, all in
``[-pi, pi]``; see :mod:`medrecon.operators.sampling` for SigPy's cycles), the
:class:`NUFFT` is

    (F x)_k = sqrt(w_k) / sqrt(HW) sum_n x[n] exp(-i omega_k . (n - c)),   c = (H//2, W//2),

with optional density weights ``w`` (default 1). It is computed by torchkbnufft's
Kaiser-Bessel NUFFT (Fessler & Sutton, "Nonuniform fast Fourier transforms using
min-max interpolation", IEEE TSP 51:560-574, 2003; Muckley et al., "TorchKbNufft",
ISMRM 2020), with ``numpoints`` neighbours per axis on a grid ``oversampling`` times the
image; with the defaults (6, 2) it matches the exact sum above to about 1e-3 relative.
``adjoint`` is the exact adjoint of ``forward``. The operator is not ``torch_native``:
torchkbnufft's CPU adjoint accumulates in threads forked with ``torch.jit.fork``
(in-place ``index_add_``), and recording an autograd graph through them (a double
backward, ``create_graph=True``) is racy: identical Hessian-vector products differed
from ``A^H A w`` by 1.6e-7 or 1.5e-3 relative from call to call, and PyTorch once
stopped on an internal assert. So torchkbnufft always runs without a graph and
gradients flow through the base class's adjoint rule (the same maths, exactly).

Scaling conventions. torchkbnufft with ``norm=None`` computes the bare sum (no factor);
its ``norm="ortho"`` divides by ``sqrt(prod(grid_size))`` (the oversampled grid, ``4 HW``
by default), not by ``sqrt(HW)``. SigPy's ``sigpy.nufft(x, coord)`` divides by
``sqrt(HW)``, with ``coord`` in cycles per FOV. medrecon uses ``norm=None`` times
``1 / sqrt(HW)``: SigPy's scaling (tests/test_nufft.py checks agreement), and on the
Cartesian grid ``omega = 2 pi (k - N//2) / N`` exactly :func:`~medrecon.operators.mri.fft2c`.

Multi-coil SENSE: :class:`NonCartesianMRI` is ``F S`` (:class:`~medrecon.operators.mri.Sense`
around a NUFFT over ``(coils, H, W)``), range ``(coils, K)`` (``(K,)`` for one coil).

Toeplitz normal (Fessler et al., "Toeplitz-based iterative image reconstruction for MRI
with correction for magnetic field inhomogeneity", IEEE TSP 53:3393-3402, 2005;
Feichtinger et al., Numer. Math. 69:423-440, 1995): ``F^H W F`` is a Toeplitz matrix,
the convolution with the point spread function ``p[d] = 1/(HW) sum_k w_k exp(i omega_k
. d)``, ``|d_i| < N_i``. Embedded in a circulant of size ``2H x 2W`` it is

    F^H W F x = crop( ifft2( D * fft2(zero_pad(x)) ) ),    D = fft2(p) (real: p is Hermitian),

two FFTs of the doubled grid per coil and no interpolation. ``D`` comes from
``torchkbnufft.calc_toeplitz_kernel`` (computed once, with ``w``), so it carries that
function's interpolation error: the Toeplitz normal differs from ``adjoint(forward)``
by at most about 1e-5 relative (measured 2e-6 .. 1e-5 on random images, uniform random
and radial trajectories, with and without weights, 16^2 .. 256^2, in complex64 and
complex128; tests/test_nufft.py bounds it by 3e-5). ``toeplitz=True`` (the default)
makes ``normal`` use it; ``toeplitz=False`` keeps ``normal == adjoint(forward)`` to
rounding.

Density compensation: :func:`pipe_menon_density` (torchkbnufft's iteration of Pipe &
Menon, MRM 41:179-186, 1999) and :func:`radial_ramp_density` (``|omega|``), both scaled
as ``1 / (sampling density in samples per cycle^2)``, the weights for which
``F^H W F`` is the identity on fully sampled Cartesian data; so ``F^H(w * F x)``
approximates ``x`` band-limited to the sampled disc. In a weighted :class:`NUFFT` the
data must carry ``sqrt(w)`` too (SigPy's convention in ``SenseRecon``).

Example:
    >>> import torch
    >>> from medrecon.operators.nufft import NonCartesianMRI
    >>> from medrecon.operators.sampling import radial_trajectory
    >>> ktraj = radial_trajectory(n_spokes=32, n_readout=16, image_shape=(16, 16))
    >>> maps = torch.ones(2, 16, 16, dtype=torch.complex64) / 2 ** 0.5
    >>> A = NonCartesianMRI((16, 16), ktraj, maps)
    >>> x = torch.randn(3, 16, 16, dtype=torch.complex64)
    >>> A(x).shape, A.normal(x).shape
    (torch.Size([3, 2, 512]), torch.Size([3, 16, 16]))
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch

with warnings.catch_warnings():  # torchkbnufft scripts its kernels with torch.jit at import,
    warnings.simplefilter("ignore", DeprecationWarning)  # which torch 2.13 deprecates
    import torchkbnufft as tkbn

from medrecon.errors import OperatorShapeError
from medrecon.operators.base import LinearOperator, real_dtype
from medrecon.operators.mri import Sense, image_shape_2d, require_complex


def check_trajectory(ktraj: torch.Tensor) -> torch.Tensor:
    """Validate a trajectory: a real tensor ``(2, K)``, finite, in ``[-pi, pi]`` radians
    (up to rounding of its dtype). Raises ``ValueError`` otherwise."""
    if not isinstance(ktraj, torch.Tensor) or not ktraj.is_floating_point():
        raise ValueError(f"ktraj must be a real floating-point torch.Tensor, got "
                         f"{getattr(ktraj, 'dtype', type(ktraj))}")
    if ktraj.ndim != 2 or ktraj.shape[0] != 2 or ktraj.shape[1] < 1:
        raise ValueError(f"ktraj must have shape (2, K), got {tuple(ktraj.shape)}")
    if not bool(torch.isfinite(ktraj).all()):
        raise ValueError("ktraj contains NaN or infinite values")
    peak = float(ktraj.abs().max())
    if peak > math.pi + 4 * torch.finfo(ktraj.dtype).eps:
        raise ValueError(f"ktraj must lie in [-pi, pi] radians per pixel, max |omega| is "
                         f"{peak:.6g}; SigPy coordinates (cycles) convert with "
                         "medrecon.operators.sampling.sigpy_to_radians")
    return ktraj


def _check_weights(weights: torch.Tensor | None, n_samples: int) -> torch.Tensor | None:
    if weights is None:
        return None
    if weights.shape != (n_samples,) or weights.is_complex():
        raise ValueError(f"density weights must be real with shape ({n_samples},), got "
                         f"{weights.dtype} {tuple(weights.shape)}")
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError("density weights must be finite and non-negative")
    return weights


def _grid_size(image_shape: tuple[int, int], numpoints: int,
               oversampling: float) -> tuple[int, int]:
    if not 1.0 <= oversampling <= 8.0:
        raise ValueError(f"oversampling must lie in [1, 8], got {oversampling}")
    grid = tuple(math.ceil(oversampling * n) for n in image_shape)
    integer = not isinstance(numpoints, bool) and int(numpoints) == numpoints
    if not integer or not 1 <= numpoints <= min(grid):
        raise ValueError(f"numpoints must be an integer in [1, {min(grid)}], got {numpoints}")
    return grid  # type: ignore[return-value]


def _leading_and_image(shape: Sequence[int], who: str) -> tuple[tuple[int, ...], tuple[int, int]]:
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2:
        raise OperatorShapeError(f"{who}: shape must end with (H, W), got {shape}")
    return shape[:-2], image_shape_2d(shape[-2:], who)


class ToeplitzNormal(LinearOperator):
    """``F^H W F`` of a :class:`NUFFT` by Toeplitz embedding (see module docstring).

    Acts on ``(..., H, W)`` with the leading dimensions of ``shape`` (coils) passing
    through; self-adjoint (its kernel ``D`` is real). Arguments as for :class:`NUFFT`.
    """

    def __init__(self, shape: Sequence[int], ktraj: torch.Tensor, *,
                 weights: torch.Tensor | None = None, numpoints: int = 6,
                 oversampling: float = 2.0, dtype: torch.dtype = torch.complex64,
                 device: torch.device | str = "cpu"):
        require_complex(dtype, "ToeplitzNormal")
        _, image_shape = _leading_and_image(shape, "ToeplitzNormal")
        ktraj = check_trajectory(ktraj)
        weights = _check_weights(weights, ktraj.shape[1])
        grid = _grid_size(image_shape, numpoints, oversampling)
        super().__init__(shape, shape, dtype, device)
        omega = ktraj.to(device=self.device, dtype=real_dtype(dtype))
        kernel = tkbn.calc_toeplitz_kernel(
            omega, list(image_shape), norm=None, grid_size=list(grid), numpoints=numpoints,
            weights=None if weights is None else weights.to(omega)[None])
        # torchkbnufft's kernel is for an unnormalised inverse FFT (factor 1/prod(2N)
        # folded in) and the unscaled NUFFT; torch's ifft2 divides by prod(2N), and
        # F carries 1/sqrt(HW): D = kernel * prod(2N) / (HW) = 4 kernel.
        self.kernel = (kernel.real * 4.0).contiguous()
        self.image_shape = image_shape

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.image_shape
        spectrum = torch.fft.fft2(x, s=(2 * height, 2 * width))
        return torch.fft.ifft2(spectrum * self.kernel)[..., :height, :width]

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._forward(y)


class NUFFT(LinearOperator):
    """The 2D NUFFT ``F`` of the module docstring over the last two axes of ``shape``.

    Args:
        shape: ``(..., H, W)``; leading dimensions (coils) map to ``(..., K)``.
        ktraj: trajectory ``(2, K)`` in radians per pixel, in ``[-pi, pi]``.
        weights: density weights ``w`` ``(K,)``; the forward multiplies by ``sqrt(w)``.
        toeplitz: use the Toeplitz embedding (:class:`ToeplitzNormal`) for ``normal``.
        numpoints: Kaiser-Bessel neighbours per axis (torchkbnufft's ``numpoints``).
        oversampling: grid size over image size (torchkbnufft's ``grid_size``).
        dtype: ``torch.complex64`` or ``torch.complex128`` (torchkbnufft's tables and
            the trajectory follow in the matching precision).
        device: where the trajectory, tables, weights and Toeplitz kernel live.
    """

    torch_native = False  # see the module docstring: no graph through torchkbnufft

    def __init__(self, shape: Sequence[int], ktraj: torch.Tensor, *,
                 weights: torch.Tensor | None = None, toeplitz: bool = True,
                 numpoints: int = 6, oversampling: float = 2.0,
                 dtype: torch.dtype = torch.complex64, device: torch.device | str = "cpu"):
        require_complex(dtype, "NUFFT")
        leading, image_shape = _leading_and_image(shape, "NUFFT")
        ktraj = check_trajectory(ktraj)
        weights = _check_weights(weights, ktraj.shape[1])
        grid = _grid_size(image_shape, numpoints, oversampling)
        super().__init__((*leading, *image_shape), (*leading, ktraj.shape[1]), dtype, device)
        rdtype = real_dtype(dtype)
        self.image_shape = image_shape
        self.ktraj = ktraj.to(device=self.device, dtype=rdtype)
        self.weights = None if weights is None else weights.to(device=self.device, dtype=rdtype)
        self._sqrt_weights = None if weights is None else self.weights.sqrt()
        self._scale = 1.0 / math.sqrt(image_shape[0] * image_shape[1])
        options = {"im_size": image_shape, "grid_size": grid, "numpoints": numpoints,
                   "dtype": dtype, "device": self.device}
        self._interp = tkbn.KbNufft(**options)
        self._interp_adjoint = tkbn.KbNufftAdjoint(**options)
        self.toeplitz: ToeplitzNormal | None = None
        if toeplitz:
            self.toeplitz = ToeplitzNormal(self.domain_shape, ktraj, weights=weights,
                                           numpoints=numpoints, oversampling=oversampling,
                                           dtype=dtype, device=self.device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-2]
        k = self._interp(x.reshape(1, -1, *self.image_shape), self.ktraj)
        k = k.reshape(*lead, -1) * self._scale
        return k if self._sqrt_weights is None else k * self._sqrt_weights

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if self._sqrt_weights is not None:
            y = y * self._sqrt_weights
        image = self._interp_adjoint(y.reshape(1, -1, y.shape[-1]), self.ktraj)
        return image.reshape(*y.shape[:-1], *self.image_shape) * self._scale

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        if self.toeplitz is not None:
            return self.toeplitz.forward(x)
        return self._adjoint(self._forward(x))


class NonCartesianMRI(Sense):
    """Non-Cartesian single-coil or multi-coil SENSE MRI, ``y_c = F (S_c x)``.

    Args:
        image_shape: ``(H, W)``.
        ktraj: trajectory ``(2, K)`` in radians per pixel.
        maps: coil sensitivity maps ``(coils, H, W)``, or None for single coil.
        weights, toeplitz, numpoints, oversampling, dtype, device: as for :class:`NUFFT`.

    The range is ``(coils, K)`` (``(K,)`` for one coil); ``normal`` is
    ``sum_c conj(S_c) T (S_c x)`` with the Toeplitz filter ``T`` when ``toeplitz``.
    """

    def __init__(self, image_shape: Sequence[int], ktraj: torch.Tensor,
                 maps: torch.Tensor | None = None, *, weights: torch.Tensor | None = None,
                 toeplitz: bool = True, numpoints: int = 6, oversampling: float = 2.0,
                 dtype: torch.dtype = torch.complex64, device: torch.device | str = "cpu"):
        image_shape = image_shape_2d(image_shape, "NonCartesianMRI")
        coils = () if maps is None or maps.ndim == 0 else (int(maps.shape[0]),)
        fourier = NUFFT((*coils, *image_shape), ktraj, weights=weights, toeplitz=toeplitz,
                        numpoints=numpoints, oversampling=oversampling, dtype=dtype,
                        device=device)
        super().__init__(fourier, maps, name="NonCartesianMRI")

    @property
    def ktraj(self) -> torch.Tensor:
        """The trajectory on the operator's device, in its real dtype."""
        return self.fourier.ktraj


def _cartesian_reference_weight(image_shape: tuple[int, int], numpoints: int,
                                oversampling: float, dtype: torch.dtype,
                                device: torch.device) -> float:
    """Pipe-Menon's weight on the fully sampled Cartesian grid of ``image_shape``, where
    the right weight is 1 (``F^H F = I``). The grid is uniform and periodic, so every
    sample gets the same value and one iteration reaches the fixed point. (The value
    depends on the image size through the phase of torchkbnufft's interpolation table.)"""
    axes = [2 * math.pi * (torch.arange(n, dtype=dtype, device=device) - n // 2) / n
            for n in image_shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij")).reshape(2, -1)
    w = tkbn.calc_density_compensation_function(
        grid, image_shape, num_iterations=1, numpoints=numpoints,
        grid_size=_grid_size(image_shape, numpoints, oversampling))
    return float(w.real.mean())


def pipe_menon_density(ktraj: torch.Tensor, image_shape: Sequence[int], *, n_iter: int = 10,
                       numpoints: int = 6, oversampling: float = 2.0) -> torch.Tensor:
    """Density compensation weights ``(K,)`` by Pipe & Menon's iteration ``w <- w / |G G^H
    w|`` (``G``: Kaiser-Bessel gridding; ``torchkbnufft.calc_density_compensation_function``),
    in ``ktraj``'s dtype and device.

    The iteration's fixed point is ``1 / (c rho)`` with ``rho`` the sampling density and
    ``c`` a constant of the kernel; it is divided by its value on a fully sampled
    Cartesian grid (``rho = 1``), so the weights are ``1 / rho`` in samples per cycle^2.
    """
    image_shape = image_shape_2d(image_shape, "pipe_menon_density")
    ktraj = check_trajectory(ktraj)
    if isinstance(n_iter, bool) or int(n_iter) != n_iter or n_iter < 1:
        raise ValueError(f"n_iter must be a positive integer, got {n_iter}")
    w = tkbn.calc_density_compensation_function(
        ktraj, image_shape, num_iterations=n_iter, numpoints=numpoints,
        grid_size=_grid_size(image_shape, numpoints, oversampling))
    reference = _cartesian_reference_weight(image_shape, numpoints, oversampling, ktraj.dtype,
                                            ktraj.device)
    return (w.real.reshape(-1) / reference).to(ktraj.dtype)


def radial_ramp_density(ktraj: torch.Tensor, image_shape: Sequence[int]) -> torch.Tensor:
    """The radial ramp ``w_k ~ |omega_k|`` for a radial trajectory of centre-out spokes
    with equal radial spacing ``delta`` (as :func:`~medrecon.operators.sampling.radial_trajectory`),
    in ``ktraj``'s dtype and device.

    Each sample owns the area of its ring segment, ``2 pi |k| delta_c / n_spokes``
    (cycles^2, ``delta_c`` the spacing in cycles), proportional to ``|omega|``; a sample
    at the centre owns ``pi (delta_c/2)^2 / n_spokes``, which in the same units is a
    radius of ``delta / 8``. ``delta`` is the smallest non-zero radius. The weights are
    then scaled so that they add up to the area of the covered disc, ``pi (rho +
    delta/2)^2 H W / (2 pi)^2`` cycles^2 (``rho``: the largest radius), which makes them
    ``1 / density``, the scale of :func:`pipe_menon_density`.
    """
    height, width = image_shape_2d(image_shape, "radial_ramp_density")
    radius = torch.linalg.vector_norm(check_trajectory(ktraj), dim=0)
    nonzero = radius[radius > 0]
    if nonzero.numel() == 0:
        raise ValueError("radial_ramp_density: every sample is at the k-space centre")
    delta = nonzero.min()
    w = torch.where(radius > 0, radius, delta / 8)
    covered = math.pi * float(radius.max() + delta / 2) ** 2 * height * width / (2 * math.pi) ** 2
    return w * (covered / float(w.sum()))
