"""Receive coils: sensitivity maps (ESPIRiT), root-sum-of-squares, coil compression
and noise prewhitening.

In the multi-coil MR model the coil ``c`` sees the image ``x`` weighted by its
sensitivity ``S_c``: ``y_c = F(S_c x) + n_c``, with ``F`` the (centred,
orthonormal) Fourier transform and coil noise ``n`` correlated across coils with
covariance ``Psi = E[n n^H]``.

- :func:`espirit_maps` estimates ``S`` from a fully sampled calibration region of
  Cartesian k-space with ESPIRiT (Uecker et al., "ESPIRiT - an eigenvalue approach
  to autocalibrating parallel MRI: where SENSE meets GRAPPA", MRM 71:990-1001,
  2014): the maps are the eigenvectors, with eigenvalue close to 1, of the
  image-space operator built from the null space of the calibration matrix.
  SigPy's implementation (``sigpy.mri.app.EspiritCalib``) does the work; the maps
  are normalised to ``sum_c |S_c|^2 = 1`` inside the object, phase relative to coil
  0, and zero where the largest eigenvalue is below ``crop``. The kernel width is
  chosen from the calibration data (:func:`espirit_kernel_width`): the largest up to
  6 x 6 whose calibration matrix over-determines its signal subspace, so that a small
  calibration region (12 x 12 of a 64 x 64 scan) still gives eigenvalues of 1 over an
  object that fills the field of view.
  :func:`espirit_maps_noncartesian` first grids the central samples of
  non-Cartesian data onto a Cartesian calibration grid.
  :func:`espirit_second_set` gives the second map set (soft SENSE) for pixels whose
  coil images one map set cannot explain (the edges of an object that fills the field
  of view). :func:`lowres_maps` is the fall-back for a calibration region too narrow
  for ESPIRiT: low-resolution coil images divided by their root sum of squares.
- :func:`rss` combines coil images as ``sqrt(sum_c |x_c|^2)``.
- :func:`coil_compress` projects the coils onto their ``n_virtual`` principal
  components (Buehrer et al., "Array compression for MRI with large coil arrays",
  MRM 57:1131-1139, 2007; Huang et al., "A software channel compression technique
  for faster reconstruction with many channels", MRI 26:133-141, 2008).
- :func:`noise_covariance` and :func:`prewhiten` decorrelate the coils: with the
  Cholesky factor ``Psi = L L^H`` the whitened data ``L^{-1} y`` have noise
  covariance ``L^{-1} Psi L^{-H} = I`` (Pruessmann et al., "Advances in sensitivity
  encoding with arbitrary k-space trajectories", MRM 46:638-651, 2001).

The coil dimension comes first (``(coils, H, W)``) unless a ``coil_dim`` says
otherwise. ESPIRiT runs once per calibration on the CPU (SigPy with NumPy); its
result is returned on the device of the input. The other functions are plain
torch and stay on the input's device.

Example:
    >>> import torch
    >>> from medrecon.operators.coils import coil_compress, rss
    >>> g = torch.Generator().manual_seed(0)
    >>> k = torch.randn(8, 32, 32, dtype=torch.complex64, generator=g)
    >>> compressed = coil_compress(k, 4)
    >>> compressed.kspace.shape, compressed.matrix.shape, 0 < compressed.energy < 1
    (torch.Size([4, 32, 32]), torch.Size([4, 8]), True)
    >>> rss(k).shape
    torch.Size([32, 32])
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import sigpy as sp
import sigpy.mri
import torch

logger = logging.getLogger(__name__)

#: extra calibration-grid cells on each side when gridding non-Cartesian samples,
#: so that the edge of the gridded region (and its wrap-around) is cropped away
GRID_MARGIN = 4


@dataclass(frozen=True, eq=False)
class CoilCompression:
    """The result of :func:`coil_compress`.

    Attributes:
        kspace: the compressed data, ``n_virtual`` coils in place of the originals.
        matrix: ``(n_virtual, coils)`` compression matrix ``A`` with orthonormal rows:
            ``compressed = A @ data`` along the coil dimension, ``A^H compressed`` the
            projection of the data onto the kept subspace.
        energy: fraction of the total energy ``sum |data|^2`` that the virtual
            coils keep (1.0 when ``n_virtual == coils``).
    """

    kspace: torch.Tensor
    matrix: torch.Tensor
    energy: float


def rss(coil_images: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Root-sum-of-squares ``sqrt(sum_c |x_c|^2)`` over the coil dimension ``dim``.

    >>> rss(torch.tensor([[3.0], [4.0j]])).tolist()
    [5.0]
    """
    return torch.sqrt(torch.sum(coil_images.abs() ** 2, dim=dim))


def _check_kspace(kspace: torch.Tensor, what: str = "kspace") -> None:
    if not isinstance(kspace, torch.Tensor) or kspace.ndim != 3:
        shape = tuple(kspace.shape) if isinstance(kspace, torch.Tensor) else type(kspace)
        raise ValueError(f"{what} must be a (coils, H, W) tensor, got {shape}")
    if not kspace.is_complex():
        raise ValueError(f"{what} must be complex, got {kspace.dtype}")


def _check_calibration(calib_width: int, kernel_width: int | None,
                       shape: Sequence[int]) -> None:
    if kernel_width is None:  # chosen from the data, below calib_width
        kernel_width = min(MIN_KERNEL_WIDTH, calib_width - 1)
    if kernel_width < 1 or calib_width <= kernel_width:
        raise ValueError(f"calib_width ({calib_width}) must exceed kernel_width "
                         f"({kernel_width}), which must be positive")
    if calib_width > min(shape):
        raise ValueError(f"calib_width ({calib_width}) is larger than the k-space matrix "
                         f"{tuple(shape)}")


#: the largest and the smallest kernel width :func:`espirit_kernel_width` picks (6 is
#: SigPy's and BART's default, Uecker et al. 2014's setting)
MAX_KERNEL_WIDTH, MIN_KERNEL_WIDTH = 6, 3
#: calibration patches needed per singular vector above the threshold
PATCHES_PER_KERNEL = 1.5


def _calibration_matrix(calib: np.ndarray, kernel_width: int) -> np.ndarray:
    """Uecker et al.'s calibration matrix of ``calib (coils, c, c)``: one row per
    ``kernel_width x kernel_width`` patch (all coils), as SigPy builds it."""
    coils = calib.shape[0]
    blocks = sp.array_to_blocks(calib, [kernel_width] * 2, [1] * 2)
    blocks = blocks.reshape(coils, -1, kernel_width**2).transpose(1, 0, 2)
    return blocks.reshape(-1, coils * kernel_width**2)


def espirit_kernel_width(kspace: np.ndarray, calib_width: int, threshold: float = 0.02
                         ) -> int:
    """The ESPIRiT kernel width for the central ``calib_width`` block of ``kspace``
    ``(coils, H, W)``: the largest ``k`` from :data:`MAX_KERNEL_WIDTH` down to
    :data:`MIN_KERNEL_WIDTH` (and below ``calib_width``) for which the calibration
    matrix (``(calib_width - k + 1)^2`` patches by ``coils k^2``) has at least
    :data:`PATCHES_PER_KERNEL` patches per singular value above ``threshold`` times the
    largest, else the smallest.

    ESPIRiT (Uecker et al., MRM 71:990-1001, 2014) takes the singular vectors above the
    threshold as the signal subspace and the rest as the null space that every coil
    image's patches are orthogonal to; a map has eigenvalue 1 where the coil
    sensitivities lie in that subspace. The subspace is only learnt from the data when
    there are more patches than its dimension: with too few patches every singular
    value passes the threshold (the rank is the number of patches), the signal subspace
    is truncated, and the eigenvalue drops below the ``crop`` threshold inside the
    object. That is what a 6 x 6 kernel does on a 12 x 12 calibration region (49
    patches, 49 singular values kept): on an object filling a 64 x 64 field of view the
    maps were cut to half of it, zero-filling fell from 26 to 15 dB. Uecker et al.'s
    setting (24 x 24 region, 6 x 6 kernel: 361 patches for 31 to 52 kept values on
    8-coil brain and body slices) passes with room; the rule changes nothing there.
    """
    calib = sp.resize(kspace, (kspace.shape[0], calib_width, calib_width))
    largest = min(MAX_KERNEL_WIDTH, calib_width - 1)
    for width in range(largest, MIN_KERNEL_WIDTH - 1, -1):
        matrix = _calibration_matrix(calib, width)
        values = np.linalg.svd(matrix, compute_uv=False)
        rank = int(np.count_nonzero(values > threshold * values.max())) if values.size else 0
        if PATCHES_PER_KERNEL * rank <= matrix.shape[0]:
            return width
    return max(1, min(MIN_KERNEL_WIDTH, largest))


def _run_espirit(kspace: np.ndarray, calib_width: int, threshold: float,
                 kernel_width: int | None, crop: float, max_iter: int) -> np.ndarray:
    if kernel_width is None:
        kernel_width = espirit_kernel_width(kspace, calib_width, threshold)
        logger.info("ESPIRiT: %dx%d kernel on the %dx%d calibration region", kernel_width,
                    kernel_width, calib_width, calib_width)
    app = sigpy.mri.app.EspiritCalib(kspace, calib_width=calib_width, thresh=threshold,
                                     kernel_width=kernel_width, crop=crop, max_iter=max_iter,
                                     show_pbar=False)
    return np.ascontiguousarray(app.run())


def espirit_maps(kspace: torch.Tensor, calib_width: int, *, threshold: float = 0.02,
                 kernel_width: int | None = None, crop: float = 0.95, max_iter: int = 100
                 ) -> torch.Tensor:
    """ESPIRiT sensitivity maps from Cartesian multi-coil k-space ``(coils, H, W)``.

    The central ``calib_width x calib_width`` block of ``kspace`` (centred at
    ``(H // 2, W // 2)``, fastMRI's centred FFT convention) must be fully sampled.
    Calibration kernels are the right singular vectors of the calibration matrix
    (``kernel_width x kernel_width`` patches) whose singular values exceed
    ``threshold`` times the largest; the maps are the leading eigenvectors of the
    resulting pointwise ``coils x coils`` operator (``max_iter`` power iterations),
    set to zero where its eigenvalue is at most ``crop`` (outside the object). The
    defaults are SigPy's, but for ``kernel_width``: ``None`` chooses it from the data
    (:func:`espirit_kernel_width`; 6 with an adequate calibration region).

    Returns maps ``(coils, H, W)`` with ``kspace``'s dtype, on ``kspace``'s device.
    Raises ``ValueError`` for a tensor that is not complex ``(coils, H, W)``, a
    calibration width not between ``kernel_width`` and the matrix size, or a
    calibration region with an empty (unsampled) line.

    >>> maps = espirit_maps(kspace, calib_width=24)  # doctest: +SKIP
    >>> combined = torch.sum(maps.conj() * coil_images, dim=0)  # doctest: +SKIP
    """
    _check_kspace(kspace)
    _check_calibration(calib_width, kernel_width, kspace.shape[-2:])
    data = kspace.detach().cpu().numpy()
    center = sp.resize(data, (data.shape[0], calib_width, calib_width))
    empty_rows = np.flatnonzero(~np.any(center != 0, axis=(0, 2)))
    empty_cols = np.flatnonzero(~np.any(center != 0, axis=(0, 1)))
    if empty_rows.size or empty_cols.size:
        raise ValueError(f"the central {calib_width}x{calib_width} calibration region is not "
                         f"fully sampled ({empty_rows.size} empty rows, {empty_cols.size} empty "
                         "columns); give a smaller calib_width")
    maps = _run_espirit(data, calib_width, threshold, kernel_width, crop, max_iter)
    return torch.from_numpy(maps).to(device=kspace.device, dtype=kspace.dtype)


def lowres_images(kspace: torch.Tensor, calib_width: int) -> torch.Tensor:
    """Low-resolution coil images ``(coils, H, W)`` (complex128) of Cartesian ``kspace``
    ``(coils, H, W)``: its central ``calib_width`` columns (all ``H`` rows) under a Hann
    window along both axes, zero-padded and transformed back (centred orthonormal FFT).
    Raises ``ValueError`` as :func:`lowres_maps` does."""
    _check_kspace(kspace)
    coils, height, width = kspace.shape
    if not 2 <= calib_width <= width:
        raise ValueError(f"calib_width ({calib_width}) must lie between 2 and the k-space "
                         f"width {width}")
    start = width // 2 - calib_width // 2
    centre = kspace[..., start:start + calib_width].to(torch.complex128)
    if bool((centre == 0).all(dim=(0, 1)).any()) or bool((centre == 0).all(dim=(0, 2)).any()):
        raise ValueError(f"the central {calib_width} columns are not fully sampled along "
                         "the readout; give a smaller calibration width")
    window = (torch.hann_window(height + 2, periodic=False, dtype=torch.float64)[1:-1, None]
              * torch.hann_window(calib_width + 2, periodic=False, dtype=torch.float64)[1:-1])
    padded = torch.zeros((coils, height, width), dtype=torch.complex128, device=kspace.device)
    padded[..., start:start + calib_width] = centre * window.to(kspace.device)
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(padded, dim=(-2, -1)),
                                              norm="ortho"), dim=(-2, -1))


def lowres_maps(kspace: torch.Tensor, calib_width: int, *, threshold: float = 0.05
                ) -> torch.Tensor:
    """Sensitivity maps from low-resolution coil images, for a calibration region too
    small for ESPIRiT (the fall-back of :mod:`medrecon.studies.mri`).

    The central ``calib_width`` columns of Cartesian ``kspace`` ``(coils, H, W)`` (all
    ``H`` rows, fully sampled along the readout as fastMRI's column masks give), under a
    Hann window along both axes, zero-padded and transformed back, are low-resolution
    coil images ``z_c`` (:func:`lowres_images`); the maps are ``z_c / sqrt(sum_c
    |z_c|^2)`` (the root sum of squares: ``sum_c |S_c|^2 = 1``), phase relative to coil 0,
    and zero where that root sum of squares is below ``threshold`` times its maximum
    (outside the object). This is the self-calibrated estimate of McKenzie et al.
    ("Self-calibrating parallel imaging with automatic coil sensitivity extraction", MRM
    47:529-538, 2002) and of SENSE's
    reference scans (Pruessmann et al., MRM 42:952-962, 1999), with the accelerated
    scan's own centre lines as the reference.

    Raises ``ValueError`` for a tensor that is not complex ``(coils, H, W)``, a width
    below 2 or beyond ``W``, or a central column or row without data.

    >>> g = torch.Generator().manual_seed(0)
    >>> k = torch.randn(4, 32, 32, dtype=torch.complex64, generator=g)
    >>> maps = lowres_maps(k, 4)
    >>> maps.shape, bool(torch.allclose(maps.abs().pow(2).sum(0)[maps[0] != 0], torch.tensor(1.0)))
    (torch.Size([4, 32, 32]), True)
    """
    images = lowres_images(kspace, calib_width)
    combined = images.abs().pow(2).sum(0).sqrt()
    inside = combined > threshold * float(combined.max())
    phase = images[0] / images[0].abs().clamp_min(1e-30)
    maps = torch.where(inside, images / combined.clamp_min(1e-30) * phase.conj(),
                       torch.zeros_like(images))
    logger.info("low-resolution coil maps from the central %d columns", calib_width)
    return maps.to(kspace.dtype)


#: eigenvalue above which the second ESPIRiT map set is kept (:func:`espirit_second_set`)
SECOND_SET_CROP = 0.9


def _espirit_gram(kernels: np.ndarray, shape: tuple[int, int], stride: int) -> np.ndarray:
    """SigPy's pointwise ESPIRiT operator ``(H / stride, W / stride, coils, coils)`` from
    the calibration kernels ``(K, coils, k, k)``, at every ``stride``-th pixel."""
    coils, width = kernels.shape[1], kernels.shape[-1]
    rows, cols = -(-shape[0] // stride), -(-shape[1] // stride)
    gram = np.zeros((rows, cols, coils, coils), dtype=np.complex128)
    for kernel in kernels:
        image = sp.ifft(sp.resize(kernel, (coils, *shape)), axes=(-2, -1))
        image = np.moveaxis(image[:, ::stride, ::stride], 0, -1)
        gram += image[..., :, None] * image[..., None, :].conj()
    return gram * (shape[0] * shape[1] / width**2)


def espirit_second_set(kspace: torch.Tensor, calib_width: int, first: torch.Tensor, *,
                       threshold: float = 0.02, kernel_width: int | None = None,
                       crop: float = SECOND_SET_CROP) -> torch.Tensor:
    """The second set of ESPIRiT maps ``(coils, H, W)`` of Cartesian ``kspace`` ``(coils,
    H, W)`` whose first set is ``first`` (:func:`espirit_maps`, same calibration): where
    the second largest eigenvalue of the pointwise ESPIRiT operator exceeds ``crop``, the
    unit vector of the span of the two leading eigenvectors that is orthogonal to the
    first set's map (so that the two sets are orthonormal per pixel), phase relative to
    coil 0; zero elsewhere. All zero (and computed on every 4th pixel only) where no
    second eigenvalue exceeds ``crop``.

    Uecker et al. (MRM 71:990-1001, 2014, "Relationship to SENSE" and the soft-SENSE
    reconstruction) show that where a pixel's coil images are not those of one
    sensitivity vector times one value, as where the object is folded in from outside
    the field of view, more than one eigenvalue is close to 1, and a SENSE model with
    one map set cannot explain the data there: they reconstruct with every map set of
    eigenvalue near 1 (``y_c = F(sum_s S_{s,c} x_s)``) and combine the set images by
    root sum of squares. An object that fills the field of view does this at the edges
    (the Fourier transform is periodic, the coils are not: across the edge the coil
    images jump), with a second eigenvalue of 0.98 on pydicom's MR_small.dcm and on
    held-out brain slices zoomed to fill it; with one set CG-SENSE fell 5 to 8 dB
    below zero-filling on the latter (64 x 64, R = 4 and 8, noise 1e-3), with both it
    gains 6 to 12 dB on it. Where two
    eigenvalues are that close, SigPy's power iteration returns some unit vector of
    their span as the first set; hence the second is taken orthogonal to it. ``crop``
    (0.9) was chosen on those generated slices (0.95 gained 4 dB less).
    """
    _check_kspace(kspace)
    _check_calibration(calib_width, kernel_width, kspace.shape[-2:])
    data = kspace.detach().cpu().numpy().astype(np.complex128)
    coils, height, width = data.shape
    if kernel_width is None:
        kernel_width = espirit_kernel_width(data, calib_width, threshold)
    matrix = _calibration_matrix(sp.resize(data, (coils, calib_width, calib_width)),
                                 kernel_width)
    _, values, vh = np.linalg.svd(matrix, full_matrices=False)
    kernels = vh[values > threshold * values.max()].reshape(-1, coils, kernel_width,
                                                            kernel_width)
    empty = torch.zeros_like(kspace)
    if not np.any(np.linalg.eigvalsh(_espirit_gram(kernels, (height, width), 4))[..., -2]
                  > crop):
        return empty
    eigenvalues, vectors = np.linalg.eigh(_espirit_gram(kernels, (height, width), 1))
    span = vectors[..., -2:]                                     # (H, W, coils, 2)
    m1 = np.moveaxis(first.detach().cpu().numpy().astype(np.complex128), 0, -1)
    c = np.einsum("hwcs,hwc->hws", span.conj(), m1)              # m1 in the span
    q = np.einsum("hwcs,hws->hwc", span, np.stack([-c[..., 1].conj(), c[..., 0].conj()], -1))
    q /= np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-30)
    phase = q[..., :1] / np.maximum(np.abs(q[..., :1]), 1e-30)
    keep = (eigenvalues[..., -2] > crop) & (np.linalg.norm(m1, axis=-1) > 0)
    maps = np.moveaxis(q * phase.conj() * keep[..., None], -1, 0)
    return torch.from_numpy(np.ascontiguousarray(maps)).to(device=kspace.device,
                                                          dtype=kspace.dtype)


def espirit_maps_noncartesian(kdata: torch.Tensor, traj: torch.Tensor,
                              image_shape: Sequence[int], calib_width: int, *,
                              dcf: torch.Tensor | None = None, grid_iter: int = 30,
                              threshold: float = 0.02, kernel_width: int | None = None,
                              crop: float = 0.95, max_iter: int = 100) -> torch.Tensor:
    """ESPIRiT maps ``(coils, *image_shape)`` from non-Cartesian 2D k-space.

    ``kdata`` is ``(coils, samples)``; ``traj`` is ``(2, samples)`` in radians per
    pixel, in ``[-pi, pi]`` (torchkbnufft's convention: row 0 pairs with image axis
    0, ``H``; ``k = pi`` is the Nyquist edge), so a sample lies at grid position
    ``traj * n / (2 pi)`` of an ``n``-point axis.

    The samples within the square of half-width ``calib_width / 2 + GRID_MARGIN``
    grid cells are brought onto a Cartesian grid of ``g = calib_width +
    2 GRID_MARGIN`` cells (same field of view, coarser pixels): the coil images
    ``z`` on that grid solve ``min_z ||N z - y||^2`` by ``grid_iter`` conjugate
    gradient iterations, ``N`` SigPy's Kaiser-Bessel NUFFT (iterative gridding:
    no density compensation needed, exact on the grid points when the
    calibration region is sampled densely), or, when ``dcf`` (one weight per
    sample) is given, ``z = N^H (dcf * y)`` in one density-compensated gridding
    step. The FFT of ``z``, cropped to the central ``calib_width`` cells and
    zero-padded to ``image_shape``, is the Cartesian calibration data for
    :func:`espirit_maps` (same parameters). The trajectory must sample the
    calibration region densely (for radial, at least ``pi / 2 * calib_width``
    spokes).

    >>> maps = espirit_maps_noncartesian(kdata, traj, (256, 256), 24)  # doctest: +SKIP
    """
    if not isinstance(kdata, torch.Tensor) or kdata.ndim != 2 or not kdata.is_complex():
        raise ValueError("kdata must be a complex (coils, samples) tensor, got "
                         f"{getattr(kdata, 'shape', type(kdata))}")
    if not isinstance(traj, torch.Tensor) or tuple(traj.shape) != (2, kdata.shape[1]):
        raise ValueError(f"traj must be a (2, {kdata.shape[1]}) tensor, got "
                         f"{getattr(traj, 'shape', type(traj))}")
    if traj.is_complex() or not bool(torch.all(traj.abs() <= math.pi * (1 + 1e-6))):
        raise ValueError("traj must be real, in radians within [-pi, pi]")
    image_shape = tuple(int(n) for n in image_shape)
    if len(image_shape) != 2:
        raise ValueError(f"image_shape must be (H, W), got {image_shape}")
    _check_calibration(calib_width, kernel_width, image_shape)
    if dcf is not None and tuple(dcf.shape) != (kdata.shape[1],):
        raise ValueError(f"dcf must have shape ({kdata.shape[1]},), got {tuple(dcf.shape)}")

    scale = np.array(image_shape, dtype=np.float64) / (2 * math.pi)
    coord = traj.detach().cpu().double().numpy().T * scale
    keep = np.all(np.abs(coord) <= calib_width / 2 + GRID_MARGIN, axis=1)
    if keep.sum() < calib_width**2:
        raise ValueError(f"only {int(keep.sum())} samples lie in the calibration region; "
                         f"need at least calib_width^2 = {calib_width**2}")
    coord = coord[keep].astype(np.float32)
    data = kdata.detach().cpu().numpy()[:, keep].astype(np.complex64)
    coils, grid = data.shape[0], calib_width + 2 * GRID_MARGIN
    if dcf is None:
        nufft = sp.linop.NUFFT((coils, grid, grid), coord)
        image = sp.app.LinearLeastSquares(nufft, data, max_iter=grid_iter,
                                          show_pbar=False).run()
    else:
        weights = dcf.detach().cpu().numpy()[keep].astype(np.float32)
        image = sp.nufft_adjoint(data * weights, coord, oshape=(coils, grid, grid))
    calib = sp.resize(sp.fft(image, axes=(-2, -1)), (coils, calib_width, calib_width))
    cartesian = sp.resize(calib, (coils, *image_shape)).astype(np.complex64)
    maps = _run_espirit(cartesian, calib_width, threshold, kernel_width, crop, max_iter)
    return torch.from_numpy(maps).to(device=kdata.device, dtype=kdata.dtype)


def _coils_first(data: torch.Tensor, coil_dim: int, what: str) -> torch.Tensor:
    """``data`` as a ``(coils, rest)`` matrix."""
    if not isinstance(data, torch.Tensor) or data.ndim < 2:
        raise ValueError(f"{what} must be a tensor with a coil dimension and at least one "
                         f"more, got {getattr(data, 'shape', type(data))}")
    if not -data.ndim <= coil_dim < data.ndim:
        raise ValueError(f"coil_dim {coil_dim} out of range for {what} of rank {data.ndim}")
    return data.movedim(coil_dim, 0).reshape(data.shape[coil_dim], -1)


def _coils_back(matrix: torch.Tensor, like: torch.Tensor, coil_dim: int) -> torch.Tensor:
    """Undo :func:`_coils_first` for a matrix with possibly fewer coil rows."""
    rest = like.movedim(coil_dim, 0).shape[1:]
    return matrix.reshape(matrix.shape[0], *rest).movedim(0, coil_dim)


def coil_compress(kspace: torch.Tensor, n_virtual: int, *, coil_dim: int = 0
                  ) -> CoilCompression:
    """Compress the coils of ``kspace`` to ``n_virtual`` virtual coils by SVD.

    With the data as a ``coils x samples`` matrix ``X = U Sigma V^H``, the
    compression matrix is ``A = U[:, :n_virtual]^H`` (principal directions, in
    order of decreasing energy) and the virtual coils are ``A X``; the energy kept
    is ``sum_{i < n_virtual} sigma_i^2 / sum_i sigma_i^2``. ``U`` and ``sigma`` are
    computed in double precision from the ``coils x coils`` Gram matrix ``X X^H``.
    Because ``A`` acts on the coil dimension only it commutes with the Fourier
    transform: compressing k-space or coil images gives the same result.

    Raises ``ValueError`` when ``n_virtual`` is not between 1 and the number of coils.

    >>> kspace = torch.randn(2, 12, 16, 16, dtype=torch.complex64)  # (slices, coils, H, W)
    >>> compressed = coil_compress(kspace, 4, coil_dim=1)
    >>> compressed.kspace.shape, compressed.matrix.shape
    (torch.Size([2, 4, 16, 16]), torch.Size([4, 12]))
    """
    matrix = _coils_first(kspace, coil_dim, "kspace")
    coils = matrix.shape[0]
    if not 1 <= n_virtual <= coils:
        raise ValueError(f"n_virtual must be between 1 and the number of coils ({coils}), "
                         f"got {n_virtual}")
    x = matrix.to(torch.complex128)
    eigenvalues, vectors = torch.linalg.eigh(x @ x.mH)
    order = torch.argsort(eigenvalues, descending=True)
    eigenvalues, vectors = eigenvalues[order].clamp(min=0), vectors[:, order]
    total = float(eigenvalues.sum())
    energy = float(eigenvalues[:n_virtual].sum()) / total if total > 0 else 1.0
    compression = vectors[:, :n_virtual].mH
    out_dtype = kspace.dtype if kspace.is_complex() else torch.complex64
    compressed = (compression @ x).to(out_dtype)
    logger.info("coil compression %d -> %d virtual coils keeps %.4f of the energy",
                coils, n_virtual, energy)
    return CoilCompression(kspace=_coils_back(compressed, kspace, coil_dim),
                           matrix=compression.to(out_dtype), energy=energy)


def noise_covariance(noise_samples: torch.Tensor, *, coil_dim: int = 0) -> torch.Tensor:
    """Coil noise covariance ``Psi = X X^H / N`` from noise-only samples.

    ``X`` is the ``coils x N`` matrix of the samples (a noise pre-scan, or an
    object-free corner of k-space); noise has zero mean, so none is subtracted.
    Needs at least as many samples as coils. Returns ``(coils, coils)`` Hermitian,
    in the samples' (complex) dtype, on their device.

    >>> noise = torch.randn(4, 2000, dtype=torch.complex128)   # 4 coils, unit variance
    >>> psi = noise_covariance(noise)
    >>> psi.shape, bool(torch.allclose(psi, torch.eye(4, dtype=psi.dtype), atol=0.15))
    (torch.Size([4, 4]), True)
    """
    x = _coils_first(noise_samples, coil_dim, "noise_samples")
    if x.shape[1] < x.shape[0]:
        raise ValueError(f"need at least as many noise samples as coils ({x.shape[0]}), "
                         f"got {x.shape[1]}")
    x = x.to(torch.complex128)
    covariance = (x @ x.mH) / x.shape[1]
    out_dtype = noise_samples.dtype if noise_samples.is_complex() else torch.complex64
    return covariance.to(out_dtype)


def prewhiten(kspace: torch.Tensor, covariance: torch.Tensor, *, coil_dim: int = 0
              ) -> torch.Tensor:
    """Decorrelate the coils: ``L^{-1} y`` with ``covariance = L L^H`` (Cholesky).

    Noise with covariance ``covariance`` becomes white with unit variance per
    coil. Apply the same whitening to data and (for SENSE) nothing else: the
    whitened coil images are ``L^{-1} S x``, so sensitivity maps estimated from the
    whitened data already include it. Raises ``ValueError`` when ``covariance`` is
    not a Hermitian positive-definite ``(coils, coils)`` matrix.

    >>> noise = torch.randn(4, 2000, dtype=torch.complex128) * torch.tensor([[1.0], [2.0],
    ...                                                                      [0.5], [3.0]])
    >>> white = prewhiten(noise, noise_covariance(noise))
    >>> bool(torch.allclose(noise_covariance(white), torch.eye(4, dtype=white.dtype)))
    True
    """
    x = _coils_first(kspace, coil_dim, "kspace")
    coils = x.shape[0]
    if not isinstance(covariance, torch.Tensor) or tuple(covariance.shape) != (coils, coils):
        raise ValueError(f"covariance must be ({coils}, {coils}) for {coils} coils, got "
                         f"{getattr(covariance, 'shape', type(covariance))}")
    psi = covariance.to(device=x.device, dtype=torch.complex128)
    if not torch.allclose(psi, psi.mH, rtol=0, atol=1e-6 * float(psi.abs().max())):
        raise ValueError("covariance is not Hermitian")
    factor, info = torch.linalg.cholesky_ex(psi)
    if int(info) != 0:
        raise ValueError("covariance is not positive definite")
    white = torch.linalg.solve_triangular(factor, x.to(torch.complex128), upper=False)
    out_dtype = kspace.dtype if kspace.is_complex() else torch.complex64
    return _coils_back(white.to(out_dtype), kspace, coil_dim)
