"""Cartesian MRI: centred orthonormal 2D FFTs and the single/multi-coil SENSE operator.

Centred FFT (the conventions of fastMRI's ``fastmri.fft2c`` / ``fastmri.ifft2c``,
fastmri/fftc.py, applied to complex tensors instead of a trailing real/imaginary axis):

    fft2c(x)  = fftshift(fft2(ifftshift(x), norm="ortho"))
    ifft2c(X) = fftshift(ifft2(ifftshift(X), norm="ortho"))

over the last two axes, with numpy's shift conventions (``ifftshift`` moves index
``N//2`` to 0, ``fftshift`` moves 0 to ``N//2``; they differ for odd ``N``). Written out,
for an image ``x`` of shape ``(..., H, W)`` and any ``H``, ``W``,

    X[k1, k2] = 1/sqrt(HW) sum_{n1, n2} x[n1, n2]
                exp(-2 pi i ((k1 - H//2)(n1 - H//2)/H + (k2 - W//2)(n2 - W//2)/W)):

the image origin and the DC sample both sit at index ``(H//2, W//2)``, so a delta at
the image centre has a flat, real k-space of value ``1/sqrt(HW)``. The transform is
unitary: ``ifft2c`` is both its inverse and its adjoint.

SENSE (Pruessmann et al., "SENSE: sensitivity encoding for fast MRI", MRM 42:952-962,
1999, Eq. 1) with Cartesian sampling: coil ``c`` measures

    y_c = M * fft2c(S_c x),        A = M F S,    A^H A = S^H F^H |M|^2 F S,

with coil sensitivity maps ``S`` of shape ``(coils, H, W)`` and a sampling mask ``M``
broadcast over k-space ``(coils, H, W)``: a fastMRI column mask of shape ``(W,)`` (phase
encoding along the last axis) or a 2D mask ``(H, W)``. Single-coil data (``S = None``)
are ``y = M * fft2c(x)`` of shape ``(H, W)``. As in SigPy (``sigpy.mri.linop.Sense``),
the operator is built from primitives: :class:`Sense` applies a k-space operator after
the coil maps, and :class:`CartesianMRI` chooses that operator (``FFT2c``, or
``Multiply(mask) @ FFT2c``).

Example:
    >>> import torch
    >>> from medrecon.operators.mri import CartesianMRI
    >>> maps = torch.ones(4, 8, 8, dtype=torch.complex64) / 2
    >>> mask = torch.tensor([0, 1, 0, 1, 1, 1, 0, 1.0])          # columns, fastMRI style
    >>> A = CartesianMRI((8, 8), mask=mask, maps=maps)
    >>> x = torch.randn(3, 8, 8, dtype=torch.complex64)        # a batch of 3 images
    >>> A(x).shape, A.H(A(x)).shape
    (torch.Size([3, 4, 8, 8]), torch.Size([3, 8, 8]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medrecon.errors import OperatorShapeError
from medrecon.operators.base import LinearOperator, Multiply, real_dtype

_AXES = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D FFT over the last two axes (fastMRI's ``fft2c``; see module)."""
    shifted = torch.fft.ifftshift(x, dim=_AXES)
    return torch.fft.fftshift(torch.fft.fft2(shifted, dim=_AXES, norm="ortho"), dim=_AXES)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse 2D FFT (fastMRI's ``ifft2c``); inverse and adjoint of
    :func:`fft2c`."""
    shifted = torch.fft.ifftshift(k, dim=_AXES)
    return torch.fft.fftshift(torch.fft.ifft2(shifted, dim=_AXES, norm="ortho"), dim=_AXES)


def require_complex(dtype: torch.dtype, who: str) -> None:
    """MRI operators act on complex images; reject real dtypes with a clear message."""
    if dtype not in (torch.complex64, torch.complex128):
        raise ValueError(f"{who}: dtype must be torch.complex64 or torch.complex128, got {dtype}")


def image_shape_2d(shape: Sequence[int], who: str) -> tuple[int, int]:
    """Validate a 2D image shape ``(H, W)`` of positive sizes."""
    out = tuple(int(n) for n in shape)
    if len(out) != 2 or min(out) < 1:
        raise OperatorShapeError(f"{who}: image shape must be (H, W) with H, W >= 1, got {out}")
    return out  # type: ignore[return-value]


def _checked_mask(mask: torch.Tensor, kspace_shape: tuple[int, ...]) -> torch.Tensor:
    """A mask must broadcast to k-space without enlarging it, and be real and finite."""
    try:
        fits = tuple(torch.broadcast_shapes(mask.shape, kspace_shape)) == kspace_shape
    except RuntimeError:
        fits = False
    if not fits:
        raise OperatorShapeError(f"CartesianMRI: mask of shape {tuple(mask.shape)} does not "
                                 f"broadcast to k-space {kspace_shape}")
    if mask.is_complex() or not bool(torch.isfinite(mask).all()):
        raise ValueError("CartesianMRI: mask must be real and finite")
    return mask


class FFT2c(LinearOperator):
    """The centred orthonormal 2D FFT over the last two axes of ``shape``; unitary, so
    ``normal`` is the identity (no FFT)."""

    def __init__(self, shape: Sequence[int], dtype: torch.dtype = torch.complex64,
                 device: torch.device | str = "cpu"):
        require_complex(dtype, "FFT2c")
        super().__init__(shape, shape, dtype, device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return fft2c(x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return ifft2c(y)

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Sense(LinearOperator):
    """SENSE encoding ``A x = F (S x)``: coil maps, then a k-space operator ``F``.

    ``A^H y = sum_c conj(S_c) (F^H y)_c`` and ``A^H A x = S^H (F^H F) S x``, where
    ``F^H F`` is ``F.normal`` (one FFT pair per coil for a masked Cartesian ``F``, a
    Toeplitz filter for a NUFFT). When ``fourier_isometric`` (``F^H F = I``, e.g. an
    unmasked Cartesian FFT) the normal is ``x * sum_c |S_c|^2``, without any transform.

    Args:
        fourier: ``F``, acting on ``(coils, H, W)`` (or ``(H, W)`` when ``maps`` is None).
        maps: coil sensitivities ``(coils, H, W)``, or None for single-coil data.
        fourier_isometric: whether ``F^H F`` is the identity.
        name: used in error messages.
    """

    def __init__(self, fourier: LinearOperator, maps: torch.Tensor | None, *,
                 fourier_isometric: bool = False, name: str | None = None):
        who = name or "Sense"
        image_shape = fourier.domain_shape[-2:]
        if maps is not None and (maps.ndim != 3 or tuple(maps.shape[-2:]) != image_shape):
            raise OperatorShapeError(f"{who}: coil maps must have shape (coils, "
                                     f"{image_shape[0]}, {image_shape[1]}), got "
                                     f"{tuple(maps.shape)}")
        expected = image_shape if maps is None else (int(maps.shape[0]), *image_shape)
        if fourier.domain_shape != expected:
            raise OperatorShapeError(f"{who}: k-space operator domain {fourier.domain_shape} "
                                     f"does not match {tuple(expected)}")
        super().__init__(image_shape, fourier.range_shape, fourier.dtype, fourier.device,
                         range_dtype=fourier.range_dtype, name=who)
        self.fourier = fourier
        self.fourier_isometric = fourier_isometric
        self.coils: Multiply | None = None
        if maps is not None:
            self.coils = Multiply(image_shape, maps.to(fourier.dtype), device=fourier.device)

    @property
    def maps(self) -> torch.Tensor | None:
        """The coil maps on the operator's device (None for single coil)."""
        return None if self.coils is None else self.coils.weights

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fourier.forward(x if self.coils is None else self.coils.forward(x))

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        image = self.fourier.adjoint(y)
        return image if self.coils is None else self.coils.adjoint(image)

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        if self.coils is None:
            return self.fourier.normal(x)
        if self.fourier_isometric:
            return self.coils.normal(x)
        return self.coils.adjoint(self.fourier.normal(self.coils.forward(x)))


class CartesianMRI(Sense):
    """Cartesian single-coil or multi-coil SENSE MRI, ``y = M * fft2c(S x)`` (see module).

    Args:
        image_shape: ``(H, W)``.
        mask: sampling mask broadcastable to k-space ``(coils, H, W)`` / ``(H, W)``: a
            fastMRI column mask ``(W,)``, a 2D mask ``(H, W)``, or None (fully sampled).
            Real weights; 0/1 for a sampling pattern. A mask of all ones counts as None.
        maps: coil sensitivity maps ``(coils, H, W)``, or None for single coil.
        dtype: ``torch.complex64`` or ``torch.complex128``.
        device: where the mask and maps live (moved once, here).

    The range is ``(coils, H, W)`` (``(H, W)`` for a single coil). ``normal`` costs no FFT
    without a mask (``x sum_c |S_c|^2``; the identity for one coil) and one FFT pair per
    coil with a mask (``S^H F^H |M|^2 F S x``).
    """

    def __init__(self, image_shape: Sequence[int], mask: torch.Tensor | None = None,
                 maps: torch.Tensor | None = None, *, dtype: torch.dtype = torch.complex64,
                 device: torch.device | str = "cpu"):
        require_complex(dtype, "CartesianMRI")
        image_shape = image_shape_2d(image_shape, "CartesianMRI")
        coils = () if maps is None or maps.ndim == 0 else (int(maps.shape[0]),)
        kspace_shape = (*coils, *image_shape)
        fourier: LinearOperator = FFT2c(kspace_shape, dtype, device)
        if mask is not None:
            mask = _checked_mask(mask, kspace_shape).to(device=device, dtype=real_dtype(dtype))
            if bool(torch.all(mask == 1)):
                mask = None
        if mask is not None:
            fourier = Multiply(kspace_shape, mask, dtype=dtype, device=device) @ fourier
        super().__init__(fourier, maps, fourier_isometric=mask is None, name="CartesianMRI")
        self.mask = mask
