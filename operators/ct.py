"""CT projection operators through the ASTRA toolbox.

:class:`CTProjector` is the 2D parallel- or fan-beam X-ray transform of a
:class:`~medrecon.operators.ct_geometry.CTGeometry`: images ``(*batch, rows, cols)``
in 1/mm to sinograms ``(*batch, views, detectors)`` of line integrals (mm times
1/mm). ASTRA works in pixel units; the operator scales by ``pixel_size`` so that
geometry and values are physical.

Backends:

- CPU tensors use ASTRA's CPU projectors (parallel: ``linear`` (Joseph, default),
  ``line``, ``strip``; fan: ``strip_fanflat`` (default), ``line_fanflat``) through
  ``astra.experimental.direct_FP2D/BP2D`` on the tensors' memory (DLPack, no
  copies). The CPU back projection is the exact transpose of the projection.
- CUDA tensors use ASTRA's CUDA projectors on GPU memory linked by DLPack
  (``astra.data3d.link`` + ``direct_FP3D/BP3D``), without host round trips: the
  2D scan is the one-row case of ASTRA's 3D parallel / cone vector geometry,
  and a parallel-beam batch runs as a stack of slices in one call. ASTRA's CUDA
  back projection is a matched but not exact transpose (it samples the ray
  bilinearly and its fan/cone weighting differs slightly from the forward
  projector); see the README for the measured adjointness error.
:class:`ConeBeam3D` and :class:`ParallelBeam3D` give 3D scans on CUDA only.

ASTRA's CUDA code fails silently or kills the process without a GPU, so every
CUDA path first checks ``astra.use_cuda()`` and raises
:class:`~medrecon.errors.DeviceUnavailableError`.

Example:
    >>> import torch
    >>> from medrecon.operators.ct import CTProjector
    >>> from medrecon.operators.ct_geometry import CTGeometry
    >>> A = CTProjector(CTGeometry.parallel((64, 64), n_views=30))
    >>> A(torch.ones(2, 64, 64)).shape
    torch.Size([2, 30, 94])
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import astra
import astra.experimental
import numpy as np
import torch
import torch.nn.functional as F

from medrecon.errors import DeviceUnavailableError, OperatorShapeError
from medrecon.operators.base import LinearOperator
from medrecon.operators.ct_geometry import CTGeometry, fan_angles, short_scan_span

FBP_FILTERS: tuple[str, ...] = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
CPU_PROJECTORS = {"parallel": ("linear", "line", "strip"), "fan": ("strip_fanflat", "line_fanflat")}


def cuda_available() -> bool:
    """True when both torch and ASTRA can use a CUDA GPU."""
    return torch.cuda.is_available() and bool(astra.use_cuda())


def require_cuda(what: str) -> None:
    """Raise a clear error instead of entering ASTRA's CUDA code without a GPU."""
    if not cuda_available():
        raise DeviceUnavailableError(f"{what} needs a CUDA GPU usable by torch and ASTRA; "
                                     "none was found (use --device cpu)")


def _astra_2d_geometries(g: CTGeometry) -> tuple[dict, dict]:
    """ASTRA 2D volume and projection geometries in pixel units."""
    rows, cols = g.image_shape
    vol = astra.create_vol_geom(rows, cols)
    spacing = g.detector_spacing / g.pixel_size
    if g.beam == "parallel":
        proj = astra.create_proj_geom("parallel", spacing, g.n_detectors, g.angles_array)
    else:
        proj = astra.create_proj_geom("fanflat", spacing, g.n_detectors, g.angles_array,
                                      g.source_to_isocenter / g.pixel_size,
                                      g.isocenter_to_detector / g.pixel_size)
    return vol, proj


def _astra_3d_geometries(g: CTGeometry, n_slices: int) -> tuple[dict, dict]:
    """ASTRA 3D vector geometries (pixel units) whose central detector row is the 2D scan."""
    rows, cols = g.image_shape
    vol = astra.create_vol_geom(rows, cols, n_slices)
    theta = g.angles_array
    spacing = g.detector_spacing / g.pixel_size
    u = np.stack([np.cos(theta), np.sin(theta), np.zeros_like(theta)], 1) * spacing
    v = np.tile([0.0, 0.0, 1.0], (len(theta), 1))
    ray = np.stack([np.sin(theta), -np.cos(theta), np.zeros_like(theta)], 1)
    if g.beam == "parallel":
        vectors = np.concatenate([ray, np.zeros_like(ray), u, v], 1)
        proj = astra.create_proj_geom("parallel3d_vec", n_slices, g.n_detectors, vectors)
    else:
        source = ray * (g.source_to_isocenter / g.pixel_size)
        detector = -ray * (g.isocenter_to_detector / g.pixel_size)
        vectors = np.concatenate([source, detector, u, v], 1)
        proj = astra.create_proj_geom("cone_vec", n_slices, g.n_detectors, vectors)
    return vol, proj


class _CpuBackend:
    """ASTRA CPU projector over float32 CPU tensors, one slice at a time."""

    def __init__(self, geometry: CTGeometry, projector: str):
        vol, proj = _astra_2d_geometries(geometry)
        self.projector_id = astra.create_projector(projector, proj, vol)
        self._finalizer = weakref.finalize(self, astra.projector.delete, self.projector_id)

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> None:
        for xi, oi in zip(x, out):
            astra.experimental.direct_FP2D(self.projector_id, xi, oi)

    def adjoint(self, y: torch.Tensor, out: torch.Tensor) -> None:
        for yi, oi in zip(y, out):
            astra.experimental.direct_BP2D(self.projector_id, oi, yi)


class _CudaBackend:
    """ASTRA CUDA projector on linked GPU memory (3D geometry, one detector row per slice)."""

    def __init__(self, geometry: CTGeometry):
        require_cuda("CT projection on CUDA")
        self.geometry = geometry
        self._projectors: dict[int, int] = {}

    def _projector(self, n_slices: int) -> tuple[int, dict, dict]:
        vol, proj = _astra_3d_geometries(self.geometry, n_slices)
        if n_slices not in self._projectors:
            pid = astra.create_projector("cuda3d", proj, vol)
            weakref.finalize(self, astra.projector3d.delete, pid)
            self._projectors[n_slices] = pid
        return self._projectors[n_slices], vol, proj

    def _run(self, images: torch.Tensor, sinos: torch.Tensor, forward: bool) -> None:
        # Parallel-beam slices are independent: the whole batch is one stack.
        # Cone geometry couples slices, so fan beam runs one slice at a time.
        stack = self.geometry.beam == "parallel"
        chunks = [(images, sinos)] if stack else [(i[None], s[None]) for i, s in zip(images, sinos)]
        for img, sino in chunks:
            pid, vol, proj = self._projector(img.shape[0])
            sino_buf = sino.transpose(0, 1).contiguous()  # ASTRA's (rows, views, detectors)
            vol_id = astra.data3d.link("-vol", vol, img)
            sino_id = astra.data3d.link("-sino", proj, sino_buf)
            try:
                if forward:
                    astra.experimental.direct_FP3D(pid, vol_id, sino_id)
                    sino.copy_(sino_buf.transpose(0, 1))
                else:
                    astra.experimental.direct_BP3D(pid, vol_id, sino_id)
            finally:
                astra.data3d.delete([vol_id, sino_id])

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> None:
        self._run(x, out, forward=True)

    def adjoint(self, y: torch.Tensor, out: torch.Tensor) -> None:
        self._run(out, y, forward=False)


class CTProjector(LinearOperator):
    """2D X-ray transform (parallel or flat fan beam) of a :class:`CTGeometry`.

    ``A x`` gives line integrals in mm of an attenuation image ``x`` (1/mm);
    ``A^H`` is the back projection. See the module docstring for backends.

    Args:
        geometry: the scan.
        device: ``"cpu"`` or a CUDA device; the backend follows it.
        dtype: ``torch.float32`` or ``torch.float64`` (ASTRA computes in float32).
        projector: CPU projector name (see ``CPU_PROJECTORS``); ignored on CUDA.
    """

    torch_native = False
    backend_precision = torch.float32

    def __init__(self, geometry: CTGeometry, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, projector: str | None = None):
        if dtype not in (torch.float32, torch.float64):
            raise OperatorShapeError(f"CTProjector: dtype must be float32 or float64, got {dtype}")
        super().__init__(geometry.image_shape, geometry.sinogram_shape, dtype, device,
                         name=f"CTProjector[{geometry.beam}]")
        self.geometry = geometry
        if self.device.type == "cuda":
            self._backend: _CpuBackend | _CudaBackend = _CudaBackend(geometry)
            self.projector = "cuda3d"
        else:
            choices = CPU_PROJECTORS[geometry.beam]
            self.projector = projector or choices[0]
            if self.projector not in choices:
                raise OperatorShapeError(f"CTProjector: projector {self.projector!r} is not "
                                         f"one of {choices} for {geometry.beam} beam")
            self._backend = _CpuBackend(geometry, self.projector)

    def _apply(self, t: torch.Tensor, in_shape, out_shape, backend_call) -> torch.Tensor:
        batch = t.shape[: t.ndim - 2]
        flat = t.detach().reshape(-1, *in_shape).to(torch.float32).contiguous()
        out = torch.zeros((flat.shape[0], *out_shape), dtype=torch.float32, device=self.device)
        backend_call(flat, out)
        out = out.reshape(*batch, *out_shape)
        return (out * self.geometry.pixel_size).to(self.dtype)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, self.domain_shape, self.range_shape, self._backend.forward)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._apply(y, self.range_shape, self.domain_shape, self._backend.adjoint)

    def fbp(self, sinogram: torch.Tensor, filter: str = "ram-lak") -> torch.Tensor:
        """Filtered back projection (ASTRA's FBP), a pseudo-inverse of this operator.

        Parallel beam uses ASTRA's ``FBP`` (CPU) or ``FBP_CUDA``; a full-turn fan beam
        uses ``FBP_CUDA`` natively on CUDA, and on CPU (where ASTRA has no fan-beam FBP)
        or for a short scan
        rebins the fan data to parallel beam (:func:`rebin_fan_to_parallel`: a full
        turn, or a Parker-weighted short scan) and applies the parallel FBP. A scan that
        fan-beam FBP cannot reconstruct (:func:`fan_fbp_support`) raises
        :class:`UnsupportedScanError` (a ``ValueError``) before any work.
        """
        if filter not in FBP_FILTERS:
            raise ValueError(f"FBP filter must be one of {FBP_FILTERS}, got {filter!r}")
        self._check(sinogram, self.range_shape, self.dtype, "sinogram")
        g = self.geometry
        why = fan_fbp_support(g)
        if why is not None:
            raise UnsupportedScanError(why)
        sino = sinogram.detach().to(torch.float32)
        if g.beam == "fan" and (self.device.type == "cpu" or not full_turn(g)):
            # CPU fan beam, and short scans on CUDA too: Parker-weighted rebinning
            sino, g = rebin_fan_to_parallel(sino, g)
        batch = sino.shape[:-2]
        flat = sino.reshape(-1, *sino.shape[-2:]).cpu().numpy()
        images = np.stack([_astra_fbp(s / g.pixel_size, g, filter, self.device.type == "cuda")
                           for s in flat])
        return torch.from_numpy(images).reshape(*batch, *g.image_shape).to(self.device, self.dtype)


def _astra_fbp(sino: np.ndarray, g: CTGeometry, filter: str, cuda: bool) -> np.ndarray:
    vol, proj = _astra_2d_geometries(g)
    sino_id = astra.data2d.create("-sino", proj, np.ascontiguousarray(sino, dtype=np.float32))
    rec_id = astra.data2d.create("-vol", vol, 0.0)
    projector_id = None
    try:
        cfg = astra.astra_dict("FBP_CUDA" if cuda else "FBP")
        if not cuda:
            projector_id = astra.create_projector(CPU_PROJECTORS[g.beam][0], proj, vol)
            cfg["ProjectorId"] = projector_id
        cfg["ProjectionDataId"] = sino_id
        cfg["ReconstructionDataId"] = rec_id
        cfg["FilterType"] = filter
        alg_id = astra.algorithm.create(cfg)
        try:
            astra.algorithm.run(alg_id)
        finally:
            astra.algorithm.delete(alg_id)
        return astra.data2d.get(rec_id)
    finally:
        astra.data2d.delete([sino_id, rec_id])
        if projector_id is not None:
            astra.projector.delete(projector_id)


class UnsupportedScanError(ValueError):
    """Filtered back-projection cannot reconstruct this scan (:func:`fan_fbp_support`
    says why); raised before any projection work."""


def full_turn(g: CTGeometry) -> bool:
    """Whether the views are equally spaced over exactly one turn (``n`` views ``2 pi / n``
    apart), to a millionth of a view step."""
    angles = g.angles_array
    if g.n_views < 2:
        return False
    step = float(angles[1] - angles[0])
    return step > 0 and abs(g.n_views * step - 2 * math.pi) <= 1e-6 * step and \
        bool(np.allclose(np.diff(angles), step, atol=1e-6 * step, rtol=0))


def fan_fbp_support(g: CTGeometry) -> str | None:
    """Why fan-beam FBP cannot reconstruct this scan, or ``None`` when it can: it needs
    equally spaced increasing views over a full turn, or over a short scan of at least
    ``180 deg + fan angle`` (:func:`short_scan_span`), Parker-weighted."""
    if g.beam != "fan":
        return None
    angles = g.angles_array
    if g.n_views < 2:
        return "fan-beam FBP needs at least 2 views"
    step = float(angles[1] - angles[0])
    if not step > 0 or not np.allclose(np.diff(angles), step, atol=1e-6 * step, rtol=0):
        return ("fan-beam FBP needs equally spaced increasing views; use cgls, sirt or tv "
                "for this scan")
    covered = (g.n_views - 1) * step  # from the first view to the last
    if full_turn(g):
        return None
    if covered >= 2 * math.pi - 1e-6 * step:
        return (f"fan-beam FBP takes at most one turn; the views cover "
                f"{math.degrees(covered):.1f} deg from the first to the last")
    need = short_scan_span(g)
    if covered < need - 1e-6:
        return (f"fan-beam FBP needs a full turn or a short scan of at least 180 deg + the "
                f"fan angle ({math.degrees(need):.1f} deg between the first and last view); "
                f"this scan covers {math.degrees(covered):.1f} deg: use cgls, sirt or tv")
    return None


def parker_weights(g: CTGeometry) -> np.ndarray:
    """Parker's short-scan weights ``w(beta, gamma)`` ``(views, detectors)``.

    Parker (1982), "Optimal short scan convolution reconstruction for fan beam CT",
    Med. Phys. 9(2):254-257, eq. (12), with ``beta`` the source angle from the first
    view, ``gamma`` the ray's fan angle (:func:`fan_angles`) and ``delta`` half the
    over-scan, ``(beta_last - pi) / 2`` (at least the half fan angle)::

        w = sin^2(pi/4 beta / (delta + gamma))              0 <= beta <= 2 delta + 2 gamma
        w = 1                                2 delta + 2 gamma <= beta <= pi + 2 gamma
        w = sin^2(pi/4 (pi + 2 delta - beta) / (delta - gamma))  pi + 2 gamma <= beta

    Parker's ``gamma`` has the opposite sign of this geometry's (here a parallel ray at
    ``theta`` is the fan ray ``beta = theta + gamma``), so his ``-gamma`` appears as
    ``+gamma``. Conjugate rays ``(beta, gamma)`` and ``(beta + pi - 2 gamma, -gamma)``
    have weights summing to 1, and the weights are smooth, which avoids streaks.
    """
    gamma, _ = fan_angles(g)
    angles = g.angles_array
    beta = (angles - angles[0])[:, None]
    delta = max((float(beta[-1, 0]) - math.pi) / 2, 1e-12)
    gamma = np.clip(gamma, -delta + 1e-12, delta - 1e-12)[None, :]
    rise = np.sin(np.pi / 4 * np.clip(beta / (delta + gamma), 0, 2)) ** 2
    fall = np.sin(np.pi / 4 * np.clip((np.pi + 2 * delta - beta) / (delta - gamma), 0, 2)) ** 2
    w = np.ones(np.broadcast_shapes(beta.shape, gamma.shape))
    w = np.where(beta < 2 * delta + 2 * gamma, rise, w)
    w = np.where(beta > np.pi + 2 * gamma, fall, w)
    return w


def rebin_fan_to_parallel(sinogram: torch.Tensor, g: CTGeometry,
                          n_angles: int | None = None) -> tuple[torch.Tensor, CTGeometry]:
    """Resample a flat-detector fan-beam sinogram (a full turn or a short scan) to
    parallel beam over a half turn.

    A parallel ray at angle ``theta`` and offset ``s`` is the fan ray from source
    angle ``beta = theta + gamma`` at fan angle ``gamma = asin(s / R)``, which hits
    the flat detector at ``u = (R + D) tan(gamma)``, and again the conjugate fan ray
    ``(beta + pi - 2 gamma, -gamma)``. The fan data are weighted (a full turn: 1/2 per
    ray; a short scan: Parker's weights, :func:`parker_weights`), interpolated
    bilinearly at both rays (periodic in ``beta`` for a full turn, zero outside a short
    scan) and summed. Returns the parallel sinogram and its geometry (detector pitch =
    fan pitch / magnification). Raises :class:`UnsupportedScanError` for a scan it
    cannot rebin (:func:`fan_fbp_support`).
    """
    if g.beam != "fan":
        raise ValueError("rebinning needs a fan-beam geometry")
    why = fan_fbp_support(g)
    if why is not None:
        raise UnsupportedScanError(why)
    angles = g.angles_array
    step = float(angles[1] - angles[0])
    full = full_turn(g)
    n_angles = n_angles or g.n_views
    R, D = g.source_to_isocenter, g.isocenter_to_detector
    spacing = g.detector_spacing / g.magnification
    parallel = CTGeometry.parallel(g.image_shape, n_angles, n_detectors=g.n_detectors,
                                   pixel_size=g.pixel_size, detector_spacing=spacing)
    weights = np.full(g.sinogram_shape, 0.5) if full else parker_weights(g)
    weighted = sinogram * torch.as_tensor(weights, dtype=sinogram.dtype,
                                          device=sinogram.device)
    theta = torch.as_tensor(parallel.angles_array, dtype=torch.float64)
    s = (torch.arange(g.n_detectors, dtype=torch.float64) - (g.n_detectors - 1) / 2) * spacing
    gamma = torch.asin((s / R).clamp(-1, 1))
    batch = sinogram.shape[:-2]
    flat = weighted.reshape(-1, 1, *sinogram.shape[-2:])
    # one more view after the last: the first again (a full turn), or nothing (short scan)
    after = flat[..., :1, :] if full else torch.zeros_like(flat[..., :1, :])
    padded = torch.cat([flat, after], dim=-2)
    out = 0
    for sign, turn in ((1.0, 0.0), (-1.0, math.pi)):  # the ray and its conjugate
        g_ray = sign * gamma
        beta = (theta[:, None] + turn + g_ray[None, :] - angles[0]) % (2 * math.pi)
        u = (R + D) * torch.tan(g_ray)[None, :].expand_as(beta)
        # fractional indices: detector cell centres at (k - (n-1)/2) * pitch
        det_index = u / g.detector_spacing + (g.n_detectors - 1) / 2
        view_index = beta / step
        grid_x = 2 * det_index / (g.n_detectors - 1) - 1 if g.n_detectors > 1 else 0 * u
        grid_y = 2 * view_index / g.n_views - 1
        grid = torch.stack([grid_x, grid_y], -1).to(sinogram.device, sinogram.dtype)
        out = out + F.grid_sample(padded, grid[None].expand(flat.shape[0], -1, -1, -1),
                                  mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(*batch, *parallel.sinogram_shape), parallel


class _Linked3D(LinearOperator):
    """A 3D ASTRA CUDA projector on volumes ``(*batch, slices, rows, cols)``."""

    torch_native = False
    backend_precision = torch.float32

    def __init__(self, vol: dict, proj: dict, voxel_size: float, *,
                 device: torch.device | str, name: str):
        require_cuda(name)
        shape_vol = (vol["GridSliceCount"], vol["GridRowCount"], vol["GridColCount"])
        rows, views, cols = astra.geom_size(proj)
        super().__init__(shape_vol, (rows, views, cols), torch.float32, device, name=name)
        self.vol, self.proj, self.voxel_size = vol, proj, voxel_size
        self.projector_id = astra.create_projector("cuda3d", proj, vol)
        weakref.finalize(self, astra.projector3d.delete, self.projector_id)

    def _run(self, t: torch.Tensor, forward: bool) -> torch.Tensor:
        in_shape, out_shape = ((self.domain_shape, self.range_shape) if forward
                               else (self.range_shape, self.domain_shape))
        batch = t.shape[: t.ndim - 3]
        flat = t.detach().reshape(-1, *in_shape).contiguous()
        out = torch.zeros((flat.shape[0], *out_shape), dtype=torch.float32, device=self.device)
        for src, dst in zip(flat, out):
            vol_t, sino_t = (src, dst) if forward else (dst, src)
            vol_id = astra.data3d.link("-vol", self.vol, vol_t)
            sino_id = astra.data3d.link("-sino", self.proj, sino_t)
            try:
                call = astra.experimental.direct_FP3D if forward else astra.experimental.direct_BP3D
                call(self.projector_id, vol_id, sino_id)
            finally:
                astra.data3d.delete([vol_id, sino_id])
        return out.reshape(*batch, *out_shape) * self.voxel_size

    def _forward(self, x):
        return self._run(x, True)

    def _adjoint(self, y):
        return self._run(y, False)


class ParallelBeam3D(_Linked3D):
    """3D parallel beam (CUDA only): volume ``(slices, rows, cols)`` of ``voxel_size`` mm
    to projections ``(det_rows, views, det_cols)`` in ASTRA's layout."""

    def __init__(self, volume_shape: Sequence[int], angles: Sequence[float] | np.ndarray,
                 det_rows: int, det_cols: int, *, voxel_size: float = 1.0,
                 detector_spacing: float = 1.0, device: torch.device | str = "cuda"):
        s, r, c = volume_shape
        vol = astra.create_vol_geom(r, c, s)
        sp = detector_spacing / voxel_size
        proj = astra.create_proj_geom("parallel3d", sp, sp, det_rows, det_cols,
                                      np.asarray(angles, dtype=np.float64))
        super().__init__(vol, proj, voxel_size, device=device, name="ParallelBeam3D")


class ConeBeam3D(_Linked3D):
    """Circular cone beam (CUDA only) with a flat detector; distances in mm."""

    def __init__(self, volume_shape: Sequence[int], angles: Sequence[float] | np.ndarray,
                 det_rows: int, det_cols: int, *, source_to_isocenter: float,
                 isocenter_to_detector: float, voxel_size: float = 1.0,
                 detector_spacing: float = 1.0, device: torch.device | str = "cuda"):
        s, r, c = volume_shape
        vol = astra.create_vol_geom(r, c, s)
        sp = detector_spacing / voxel_size
        proj = astra.create_proj_geom("cone", sp, sp, det_rows, det_cols,
                                      np.asarray(angles, dtype=np.float64),
                                      source_to_isocenter / voxel_size,
                                      isocenter_to_detector / voxel_size)
        super().__init__(vol, proj, voxel_size, device=device, name="ConeBeam3D")
