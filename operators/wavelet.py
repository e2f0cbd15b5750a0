"""Orthonormal multi-level 2D discrete wavelet transform with periodic boundary.

:class:`Wavelet2D` maps an image ``(*batch, H, W)`` to its wavelet coefficients,
packed into one tensor of the same shape, so that sparsity penalties act
elementwise (soft-thresholding in L1-wavelet MRI; Lustig, Donoho & Pauly, "Sparse
MRI: the application of compressed sensing for rapid MR imaging", MRM 58:1182-1195,
2007, Section "Sparsifying transform").

Maths. One level along an axis of length ``n`` (Mallat, A Wavelet Tour of Signal
Processing, 3rd ed., Section 7.3.1, periodic boundary as in Section 7.5.1) with
the orthogonal filter pair ``h = dec_lo``, ``g = dec_hi`` of length ``L``
(taken from PyWavelets) is

    a[k] = sum_m h[m] x[(2k + L/2 - m) mod n],   d[k] = sum_m g[m] x[(2k + L/2 - m) mod n],

``k = 0 .. n/2 - 1``; the offset ``L/2`` is PyWavelets' ``mode="periodization"``,
so the coefficients equal ``pywt.dwt2(x, name, mode="periodization")``. Because
``h`` and ``g`` are a quadrature-mirror pair, this map (``x -> [a, d]``) is
orthogonal; the 2D level applies it along the last axis and then along the
second-to-last, and later levels transform the low-low quarter again. Hence
``W^H W = W W^H = I``: the adjoint is the inverse, ``||W x|| = ||x||``, and
:meth:`Wavelet2D.normal` is the identity.

Layout (PyWavelets' ``coeffs_to_array`` for ``[cA_J, (cH_J, cV_J, cD_J), ...]``):
after one level, with ``h = H/2`` and ``w = W/2``,

    [:h, :w] approximation (low-low)     [:h, w:] cV (low rows, high columns)
    [h:, :w] cH (high rows, low columns) [h:, w:] cD (high-high)

and level ``j + 1`` replaces the approximation block by its own four blocks.

Implementation: each one-dimensional level gathers, for every output ``k``, the
``L`` samples ``x[(2k + L/2 - m) mod n]`` it reads (one ``index_select`` with an
index table built once per size, on the operator's device) and multiplies these
windows by the ``(L, 2)`` matrix of the two filters, giving ``a`` and ``d`` together;
the adjoint multiplies each pair ``(a_k, d_k)`` by the transposed matrix and adds
the products back onto the same samples (``index_add``), so it is the exact
transpose by construction. This direct form was chosen over the FFT because it is
exact for any size divisible by ``2**levels``, costs ``O(n L)`` per level with
``L <= 20`` for the usual wavelets, and keeps the operator's precision. It does the
arithmetic of a stride-2 ``conv1d`` (and ``conv_transpose1d`` for the adjoint) and
ran as fast as that on one CPU thread (256 x 256 complex64, db4, 5 levels: about
5 ms each way), while its adjoint is the same index table scattered back instead
of a second kernel, and no convolution backend (torch's slow double-precision CPU
path included) is involved. Everything is plain torch, so autograd (including
double backward) goes through it. Complex images are transformed as real and
imaginary parts (the filters are real). Sizes must be divisible by ``2**levels``
(a ``ValueError`` says otherwise); pad the image beforehand if needed.

Example:
    >>> import torch
    >>> from medrecon.operators.wavelet import Wavelet2D
    >>> W = Wavelet2D((8, 8), wavelet="haar", levels=1, dtype=torch.float64)
    >>> x = torch.ones(8, 8, dtype=torch.float64)
    >>> c = W(x)                      # constant image: all energy in the approximation
    >>> round(float(c[:4, :4].mean()), 12), float(c[4:].abs().max()), float(c[:, 4:].abs().max())
    (2.0, 0.0, 0.0)
    >>> torch.allclose(W.H(c), x)
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import pywt
import torch

from medrecon.operators.base import LinearOperator, real_dtype


def default_levels(shape: Sequence[int], filter_length: int) -> int:
    """The default number of levels: PyWavelets' ``dwt_max_level`` for the smaller side
    (coarsest approximation still at least as long as the filter), limited by how
    often both sides can be halved exactly."""
    levels = pywt.dwt_max_level(min(shape), filter_length)
    for n in shape:
        halvings = 0
        while n % 2 == 0 and n > 1:
            n //= 2
            halvings += 1
        levels = min(levels, halvings)
    return levels


class Wavelet2D(LinearOperator):
    """Orthonormal periodic 2D wavelet transform over the last two axes (see module docstring).

    Args:
        shape: image shape ``(H, W)``; both divisible by ``2**levels``.
        wavelet: an orthogonal PyWavelets wavelet name (``"haar"``, ``"db1"`` .. ``"db38"``,
            ``"sym2"`` .., ``"coif1"`` ..).
        levels: number of decomposition levels, at least 1; ``None`` picks
            :func:`default_levels`.
        dtype: real or complex dtype of the image (the coefficients have the same).
        device: where the filters and index tables live.

    Raises:
        ValueError: unknown or non-orthogonal wavelet, ``levels < 1``, a shape that is
            not 2D or not divisible by ``2**levels``.
    """

    def __init__(self, shape: Sequence[int], wavelet: str = "db4", levels: int | None = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = tuple(int(n) for n in shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"Wavelet2D: shape must be (rows, columns), got {shape}")
        try:
            family = pywt.Wavelet(wavelet)
        except ValueError as error:
            raise ValueError(f"Wavelet2D: unknown wavelet {wavelet!r} ({error})") from None
        if not family.orthogonal:
            raise ValueError(f"Wavelet2D: {wavelet!r} is not orthogonal; use haar, dbN, symN "
                             "or coifN")
        length = len(family.dec_lo)
        if levels is None:
            levels = default_levels(shape, length)
            if levels < 1:
                raise ValueError(f"Wavelet2D: no wavelet level fits shape {shape} "
                                 f"(sides must be even and at least {length} for {wavelet})")
        if int(levels) != levels or levels < 1:
            raise ValueError(f"Wavelet2D: levels must be a positive integer, got {levels}")
        levels = int(levels)
        if any(n % 2**levels for n in shape):
            raise ValueError(f"Wavelet2D: shape {shape} is not divisible by 2**{levels} = "
                             f"{2**levels}; pad the image or use fewer levels")
        super().__init__(shape, shape, dtype, device, name=f"Wavelet2D[{wavelet}, {levels}]")
        self.wavelet, self.levels, self.filter_length = wavelet, levels, length
        # rows: low pass h, high pass g, reversed to match the window order
        self._filters = torch.tensor([family.dec_lo[::-1], family.dec_hi[::-1]],
                                     dtype=real_dtype(dtype), device=self.device)
        sizes = {n // 2**j for n in shape for j in range(levels)}
        self._windows = {n: self._window_index(n, length).to(self.device) for n in sizes}

    @staticmethod
    def _window_index(n: int, length: int) -> torch.Tensor:
        """Flattened ``(n/2, L)`` table of ``(2k + L/2 - m) mod n`` for ``m = L-1 .. 0``:
        row ``k`` lists the samples that coefficient ``k`` reads, in reversed-filter order."""
        start = torch.arange(0, n, 2).unsqueeze(1) + 1 - length // 2
        return ((start + torch.arange(length)) % n).reshape(-1)

    # -- one level along one axis ---------------------------------------------
    def _split(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        """``x -> [a, d]`` along ``axis`` (approximation first, then detail)."""
        moved = x.movedim(axis, -1)
        n = moved.shape[-1]
        windows = moved.reshape(-1, n).index_select(-1, self._windows[n])
        pairs = windows.reshape(-1, n // 2, self.filter_length) @ self._filters.T  # (B, n/2, 2)
        return pairs.transpose(-1, -2).reshape(moved.shape).movedim(-1, axis)

    def _merge(self, c: torch.Tensor, axis: int) -> torch.Tensor:
        """The adjoint (= inverse) of :meth:`_split`: every coefficient pair ``(a_k, d_k)``
        adds ``h a_k + g d_k`` back onto the samples of its window."""
        moved = c.movedim(axis, -1)
        n = moved.shape[-1]
        pairs = moved.reshape(-1, 2, n // 2).transpose(-1, -2)                # (B, n/2, 2)
        contributions = (pairs @ self._filters).reshape(pairs.shape[0], -1)
        image = torch.zeros(pairs.shape[0], n, dtype=c.dtype, device=c.device)
        image = image.index_add(-1, self._windows[n], contributions)
        return image.reshape(moved.shape).movedim(-1, axis)

    # -- multi-level, real ------------------------------------------------------
    def _analysis(self, x: torch.Tensor, level: int) -> torch.Tensor:
        c = self._split(self._split(x, -1), -2)
        if level + 1 == self.levels:
            return c
        h, w = c.shape[-2] // 2, c.shape[-1] // 2
        low = self._analysis(c[..., :h, :w], level + 1)
        return torch.cat([torch.cat([low, c[..., :h, w:]], dim=-1), c[..., h:, :]], dim=-2)

    def _synthesis(self, c: torch.Tensor, level: int) -> torch.Tensor:
        if level + 1 < self.levels:
            h, w = c.shape[-2] // 2, c.shape[-1] // 2
            low = self._synthesis(c[..., :h, :w], level + 1)
            c = torch.cat([torch.cat([low, c[..., :h, w:]], dim=-1), c[..., h:, :]], dim=-2)
        return self._merge(self._merge(c, -2), -1)

    def _apply(self, x: torch.Tensor, transform) -> torch.Tensor:
        if x.is_complex():
            parts = transform(torch.stack([x.real, x.imag]), 0)
            return torch.complex(parts[0], parts[1])
        return transform(x, 0)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, self._analysis)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._apply(y, self._synthesis)

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        return x
