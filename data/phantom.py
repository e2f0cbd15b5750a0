"""Deterministic procedural CT slices (abdomen and thorax) in Hounsfield units.

The generator draws a patient from a seed and paints an axial slice of it in
millimetres, so that the same seed gives the same anatomy at any matrix size.
It is the bundled reconstruction sample, the test image, and a source of varied
training slices for a diffusion prior.

API
---
- :func:`ct_phantom` returns a frozen :class:`Phantom` (``image`` in HU, float32
  ``(size, size)``; ``pixel_size`` in mm; ``region``; ``seed``).
- :func:`ct_slice` returns the image alone.
- :func:`default_pixel_size` is the pixel size used when none is given:
  ``DEFAULT_FOV_MM / size`` (a 400 mm field of view, which holds the 300-380 mm
  wide bodies with a margin).
- :func:`hu_to_mu` / :func:`mu_to_hu` convert HU to linear attenuation (1/mm) and
  back: ``mu = MU_WATER * (1 + HU / 1000)``, clamped at 0, with
  ``MU_WATER = 0.0192 /mm``, water at about 70 keV effective energy (NIST XCOM /
  Hubbell-Seltzer tables: 0.206 cm^2/g at 60 keV, 0.184 at 80 keV), the constant of
  :mod:`medrecon.data.sinogram`.

Image conventions: radiological display, row 0 anterior (top), column 0 at the
patient's right (image left), so the liver is on the image left and the heart
points to the image right. Pixel centres are at ``(index - (size - 1) / 2) *
pixel_size`` mm from the isocentre.

Model
-----
Every structure is an implicit shape in mm: star-shaped "blobs" with a polar
radius ``r(theta)`` (a superellipse with separate anterior/posterior halves,
times ``1 +`` a few random Fourier harmonics and von Mises bumps, minus an
angle-dependent inset for nested layers such as skin, fat, muscle), unions,
intersections and differences of them, and tubes along polylines with tapering
radii (vessels, bronchi, ribs, fascia, table). Edges are anti-aliased with an
approximate signed distance normalised by its gradient (one-pixel ramp, partial
volume for structures thinner than a pixel). Tissues are painted back to front,
each with a per-seed HU value plus correlated Gaussian texture (white noise
smoothed at 0.7-6 mm, scipy.ndimage) of a few HU.

Anatomy drawn:

- both regions: air, a curved carbon-fibre table with a foam core, skin,
  subcutaneous fat (thickness varies with the patient and around the body, with
  a superficial fascia line), muscle wall with fascial planes, vertebra
  (cancellous body with cortical shell, pedicles and laminae, facets, transverse
  and spinous processes, canal with epidural fat, thecal sac and cord), paraspinal
  muscles, rib sections and costal cartilages;
- abdomen (a per-seed level between T12 and L2 changes which organs show and
  their sizes): liver with portal/hepatic vessel branches and a left lobe,
  gallbladder, spleen, stomach with rugae and air-fluid level, pancreas with the
  splenic vein, kidneys (cortex, medullary pyramids, sinus fat, pelvis, renal
  veins), adrenals, aorta (optional wall calcification), IVC, SMA and SMV,
  diaphragmatic crura, psoas and quadratus lumborum, duodenum, colon with gas and
  stool, small-bowel loops (fluid, oral contrast, gas, collapsed), mesenteric
  vessels and nodes, lung bases at the highest levels;
- thorax (heart level): lungs with a dependent density gradient, branching
  vessel trees (in-plane segments and cross-sections), bronchi with walls beside
  their arteries, fissures, pulmonary veins into the left atrium, heart with
  four chambers, septum, papillary muscles, epicardial fat, pericardium and
  coronary arteries (optional calcium), descending aorta, esophagus, azygos,
  mediastinal fat, sternum, pectoral muscles, scapulae, optional breasts with
  fibroglandular tissue and an optional liver dome.

Per-seed variation: body width (300-380 mm) and aspect, fat, muscle bulk,
organ sizes, positions, shapes and textures, vessel trees, bowel contents, bone
density, calcifications, and the contrast phase (unenhanced 25 %, arterial 20 %,
portal venous 55 %).

Typical HU values used (ranges drawn per seed; unenhanced / arterial / portal
venous), after textbook tables (e.g. M. Hofer, *CT Teaching Manual*; W. Brant and
C. Helms, *Fundamentals of Diagnostic Radiology*; the "Hounsfield scale" table on
Wikipedia) and contrast enhancement levels as reviewed by K. T. Bae, *Radiology*
256 (2010) 32-61:

====================  =======================================
air, bowel gas        -1000
lung                  -880 to -820 (+30 to +100 dependent)
fat                   -110 to -85
water, bile, urine    0 to 20; CSF 5 to 15
muscle                40 to 60 (enhanced +5 to +15)
liver                 52-66 / 65-80 / 95-120
spleen                42-52 / 90-130 (heterogeneous) / 105-130
pancreas              35-50 / 100-130 / 80-105
kidney cortex         28-38 / 150-220 / 140-190 (medulla lower in arterial)
aorta, left heart     38-50 / 250-400 / 140-190
IVC, right heart      38-50 / 60-300 / 110-160
portal vein, SMV      38-50 / 90-140 / 150-200
myocardium            40-55 / 100-140 / 90-120
oral contrast         180-350 (some seeds)
cancellous bone       120-300
cortical bone         900-1250
costal cartilage      90-140 (calcified rim in some seeds)
table shell           150-300 (foam core about -950)
====================  =======================================

Determinism: all anatomy comes from ``numpy.random.default_rng(seed)`` in mm,
with the draw sequence independent of the matrix size, and the texture noise
from a generator seeded from it; the same arguments give a bit-identical image
(on one platform and library version).

Example::

    >>> from medrecon.data.phantom import ct_phantom, hu_to_mu
    >>> ph = ct_phantom(256, seed=3, region="thorax")
    >>> ph.image.shape, ph.image.dtype, ph.pixel_size
    ((256, 256), dtype('float32'), 1.5625)
    >>> mu = hu_to_mu(ph.image)  # 1/mm, for projection
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_FOV_MM",
    "MU_WATER",
    "ALL_REGIONS",
    "MIX_PIXEL_RANGES",
    "REGIONS",
    "Phantom",
    "ct_mix_phantom",
    "ct_phantom",
    "ct_slice",
    "default_pixel_size",
    "hu_to_mu",
    "mu_to_hu",
]

MU_WATER = 0.0192  # 1/mm, water at about 70 keV (used by medrecon.data.sinogram too)
DEFAULT_FOV_MM = 400.0
REGIONS = ("abdomen", "thorax")  # the body regions of ``phantom:N`` (unchanged)
ALL_REGIONS = REGIONS + ("head", "neck")
# pixel sizes (mm) of ct_mix_phantom at 256 x 256, drawn log-uniformly per region
MIX_PIXEL_RANGES = {"abdomen": (0.6, 1.6), "thorax": (0.6, 1.6), "head": (0.5, 1.05),
                    "neck": (0.5, 0.95)}

_DEG = math.pi / 180.0


# ------------------------------------------------------------------------- public API
@dataclass(frozen=True, eq=False)
class Phantom:
    """A phantom slice.

    Attributes:
        image: ``(size, size)`` float32 HU, row 0 anterior, column 0 patient right.
        pixel_size: square pixel size in mm.
        region: one of :data:`ALL_REGIONS`.
        seed: the seed it was drawn from.
    """

    image: np.ndarray
    pixel_size: float
    region: str
    seed: int

    @property
    def fov(self) -> float:
        """Field of view (mm): ``size * pixel_size``."""
        return self.image.shape[-1] * self.pixel_size


def default_pixel_size(size: int) -> float:
    """Pixel size (mm) used when none is given: ``DEFAULT_FOV_MM / size``."""
    return DEFAULT_FOV_MM / size


def ct_phantom(size: int = 256, *, seed: int = 0, region: str = "abdomen",
               pixel_size: float | None = None) -> Phantom:
    """An axial CT slice in HU with its pixel size (see the module docstring).

    Args:
        size: matrix size (square), at least 16.
        seed: non-negative integer; same seed, same patient at every ``size``.
        region: ``"abdomen"``, ``"thorax"``, ``"head"`` or ``"neck"``.
        pixel_size: mm per pixel; ``None`` gives ``DEFAULT_FOV_MM / size``. The
            anatomy is in mm, so a smaller field of view crops the body.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    if region not in ALL_REGIONS:
        raise ValueError(f"region must be one of {ALL_REGIONS}, got {region!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    ps = default_pixel_size(int(size)) if pixel_size is None else float(pixel_size)
    if not (math.isfinite(ps) and ps > 0):
        raise ValueError(f"pixel_size must be a positive number of mm, got {pixel_size!r}")
    return Phantom(_render(int(size), int(seed), region, ps, region in ("head", "neck")),
                   ps, region, int(seed))


def _render(size: int, seed: int, region: str, ps: float, trabecular: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex_rng = np.random.default_rng(int(rng.integers(2**63)))
    canvas = _Canvas(size, ps, tex_rng, trabecular=trabecular)
    {"abdomen": _abdomen, "thorax": _thorax, "head": _head, "neck": _neck}[region](canvas, rng)
    return np.clip(canvas.img, -1000.0, 3071.0).astype(np.float32)


def ct_mix_phantom(size: int = 256, *, seed: int = 0) -> Phantom:
    """A training slice of the mixed family (``ctmix:N`` in
    :func:`medrecon.priors.datasets.load_training_set`): closer to real scans than
    :func:`ct_phantom` alone.

    Per seed: the region cycles ``abdomen, thorax, head, neck`` (``seed % 4``); the
    anatomy is that of ``ct_phantom(seed=seed, region=...)`` but with trabecular bone
    texture in every bone; the pixel size is drawn log-uniformly from
    :data:`MIX_PIXEL_RANGES` (mm at 256 x 256, scaled by ``256 / size``), so the same
    anatomy is seen at 0.5 to 1.6 mm pixels; then a reconstruction-kernel blur (Gaussian,
    0.2 to 0.6 pixels, on two thirds of the slices) and, on half of them, correlated
    noise of 0.5 to 5 HU with a
    CT-like noise power spectrum (ramp times a Gaussian apodisation, peak at 0.1 to 0.3
    cycles per pixel). Values are clipped to [-1024, 3071] HU. Deterministic per seed;
    the extra draws come from a generator of their own, so they change nothing of
    :func:`ct_phantom`.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    region = ALL_REGIONS[int(seed) % len(ALL_REGIONS)]
    mix = np.random.default_rng([int(seed), 0x6D6978])
    lo, hi = MIX_PIXEL_RANGES[region]
    ps = float(math.exp(mix.uniform(math.log(lo), math.log(hi)))) * 256.0 / int(size)
    image = _render(int(size), int(seed), region, ps, True).astype(np.float64)
    from scipy import ndimage

    blur = mix.uniform(0.0, 0.6)
    if blur > 0.2:
        image = ndimage.gaussian_filter(image, blur, mode="nearest")
    if mix.random() < 0.5:
        image = image + _nps_noise(mix, image.shape, mix.uniform(0.5, 5.0),
                                   mix.uniform(0.1, 0.3))
    image = np.clip(image, -1024.0, 3071.0).astype(np.float32)
    return Phantom(image, ps, region, int(seed))


def _nps_noise(rng, shape, std: float, peak: float) -> np.ndarray:
    """Correlated noise with a filtered-back-projection-like noise power spectrum
    ``|f| exp(-(f / f0)^2)`` (maximum at ``peak`` cycles per pixel), scaled to ``std``."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    f = np.hypot(fx, fy)
    f0 = peak * math.sqrt(2.0)  # |f| exp(-(f/f0)^2) peaks at f0 / sqrt(2)
    amp = np.sqrt(f * np.exp(-((f / f0) ** 2)))
    noise = np.fft.ifft2(np.fft.fft2(white) * amp).real
    return noise * (std / max(float(noise.std()), 1e-12))


def ct_slice(size: int = 256, *, seed: int = 0, region: str = "abdomen",
             pixel_size: float | None = None) -> np.ndarray:
    """The HU image of :func:`ct_phantom` (float32 ``(size, size)``); its pixel
    size is ``pixel_size`` or :func:`default_pixel_size` ``(size)``."""
    return ct_phantom(size, seed=seed, region=region, pixel_size=pixel_size).image


def hu_to_mu(hu, mu_water: float = MU_WATER):
    """Linear attenuation (1/mm) from HU: ``mu_water * (1 + hu / 1000)``, clamped at 0."""
    hu = np.asarray(hu)
    if not np.issubdtype(hu.dtype, np.floating):
        hu = hu.astype(np.float64)
    return np.maximum(hu * (mu_water / 1000.0) + mu_water, 0)


def mu_to_hu(mu, mu_water: float = MU_WATER):
    """HU from linear attenuation (1/mm): ``1000 * (mu / mu_water - 1)``."""
    mu = np.asarray(mu)
    if not np.issubdtype(mu.dtype, np.floating):
        mu = mu.astype(np.float64)
    return mu * (1000.0 / mu_water) - 1000.0


# ------------------------------------------------------------------------- shapes
class _Ang:
    """A function of angle ``t``: ``const + sum amp cos(k t + phase)
    + sum amp exp(kappa (cos(t - t0) - 1))`` (harmonics and von Mises bumps)."""

    __slots__ = ("const", "harm", "bumps")

    def __init__(self, const: float = 0.0, harm: Sequence = (), bumps: Sequence = ()):
        self.const = float(const)
        self.harm = tuple(harm)
        self.bumps = tuple(bumps)

    def __call__(self, th):
        out = self.const
        for k, amp, ph in self.harm:
            out = out + amp * np.cos(k * th + ph)
        for t0, kappa, amp in self.bumps:
            out = out + amp * np.exp(kappa * (np.cos(th - t0) - 1.0))
        return out

    def __add__(self, other):
        if not isinstance(other, _Ang):
            return _Ang(self.const + float(other), self.harm, self.bumps)
        return _Ang(self.const + other.const, self.harm + other.harm, self.bumps + other.bumps)

    __radd__ = __add__

    def bound(self) -> float:
        return abs(self.const) + sum(abs(h[1]) for h in self.harm) + sum(
            abs(b[2]) for b in self.bumps)


_ZERO = _Ang()


def _as_ang(x) -> _Ang:
    return x if isinstance(x, _Ang) else _Ang(float(x))


class _Shape:
    bbox: tuple[float, float, float, float]  # x0, x1, y0, y1 (mm, body frame)

    def f(self, x, y):  # approximate signed distance (mm), negative inside
        raise NotImplementedError

    def inside(self, x, y, margin: float = 0.0) -> bool:
        return bool(self.f(np.float64(x), np.float64(y)) < -margin)


class _Blob(_Shape):
    """Star-shaped blob: superellipse (half-axes ``a``; ``b``/``p`` for local v < 0,
    ``b2``/``p2`` for v > 0) times ``1 + rel(t)``, minus ``off(t)`` mm."""

    def __init__(self, cx, cy, a, b, *, rot=0.0, p=2.0, b2=None, p2=None, rel=_ZERO,
                 off=_ZERO):
        self.cx, self.cy, self.a, self.b = float(cx), float(cy), float(a), float(b)
        self.b2 = self.b if b2 is None else float(b2)
        self.p = float(p)
        self.p2 = self.p if p2 is None else float(p2)
        self.rot = float(rot)
        self.c, self.s = math.cos(self.rot), math.sin(self.rot)
        self.rel, self.off = _as_ang(rel), _as_ang(off)
        t = np.linspace(-math.pi, math.pi, 181)
        r = np.maximum(self.radius(t), 0.0) + 1.5
        px = self.cx + r * (self.c * np.cos(t) - self.s * np.sin(t))
        py = self.cy + r * (self.s * np.cos(t) + self.c * np.sin(t))
        self.bbox = (px.min() - 1, px.max() + 1, py.min() - 1, py.max() + 1)

    def base(self, th, ct=None, st=None):
        ct = np.cos(th) if ct is None else ct
        st = np.sin(th) if st is None else st
        if self.b == self.b2 and self.p == self.p2:
            b, p = self.b, self.p
        else:
            post = st > 0
            b = np.where(post, self.b2, self.b)
            p = np.where(post, self.p2, self.p)
        if self.p == 2.0 and self.p2 == 2.0:
            r0 = 1.0 / np.sqrt((ct / self.a) ** 2 + (st / b) ** 2)
        else:
            r0 = (np.abs(ct / self.a) ** p + np.abs(st / b) ** p) ** (-1.0 / p)
        return r0 * (1.0 + self.rel(th))

    def radius(self, th):
        return self.base(th) - self.off(th)

    def local(self, x, y):
        dx, dy = x - self.cx, y - self.cy
        return self.c * dx + self.s * dy, -self.s * dx + self.c * dy

    def polar(self, x, y):
        u, v = self.local(x, y)
        r = np.hypot(u, v)
        rs = np.maximum(r, 1e-9)
        th = np.arctan2(v, u)
        return r, th, self.base(th, (u + 1e-12) / rs, v / rs)

    def f(self, x, y):
        r, th, rb = self.polar(x, y)
        return r - (rb - self.off(th))

    def inset(self, off) -> _Blob:
        return _Blob(self.cx, self.cy, self.a, self.b, rot=self.rot, p=self.p, b2=self.b2,
                     p2=self.p2, rel=self.rel, off=self.off + _as_ang(off))

    def point(self, th, extra=0.0):
        """Body-frame point on the boundary at local angle ``th``, moved ``extra`` mm in."""
        th = np.asarray(th, dtype=float)
        r = self.radius(th) - (extra(th) if callable(extra) else extra)
        u, v = r * np.cos(th), r * np.sin(th)
        return self.cx + self.c * u - self.s * v, self.cy + self.s * u + self.c * v

    def local_angle(self, dx, dy) -> float:
        """Local angle of the body-frame direction ``(dx, dy)``."""
        return math.atan2(-self.s * dx + self.c * dy, self.c * dx + self.s * dy)


class _Mirror(_Shape):
    def __init__(self, shape: _Shape):
        self.shape = shape
        x0, x1, y0, y1 = shape.bbox
        self.bbox = (-x1, -x0, y0, y1)

    def f(self, x, y):
        return self.shape.f(-x, y)


class _Inter(_Shape):
    def __init__(self, *shapes: _Shape):
        self.shapes = shapes
        bb = np.array([s.bbox for s in shapes])
        self.bbox = (bb[:, 0].max(), bb[:, 1].min(), bb[:, 2].max(), bb[:, 3].min())

    def f(self, x, y):
        out = self.shapes[0].f(x, y)
        for s in self.shapes[1:]:
            out = np.maximum(out, s.f(x, y))
        return out


class _Union(_Shape):
    """Union; with ``smooth`` > 0 (mm) a smooth minimum that fills the creases."""

    def __init__(self, *shapes: _Shape, smooth: float = 0.0):
        self.shapes, self.k = shapes, float(smooth)
        bb = np.array([s.bbox for s in shapes])
        g = self.k / 4
        self.bbox = (bb[:, 0].min() - g, bb[:, 1].max() + g, bb[:, 2].min() - g,
                     bb[:, 3].max() + g)

    def f(self, x, y):
        out = self.shapes[0].f(x, y)
        for s in self.shapes[1:]:
            b = s.f(x, y)
            if self.k > 0:
                h = np.maximum(self.k - np.abs(out - b), 0.0) / self.k
                out = np.minimum(out, b) - h * h * self.k / 4
            else:
                out = np.minimum(out, b)
        return out


class _Diff(_Shape):
    def __init__(self, a: _Shape, b: _Shape):
        self.a, self.b_ = a, b
        self.bbox = a.bbox

    def f(self, x, y):
        return np.maximum(self.a.f(x, y), -self.b_.f(x, y))


class _Half(_Shape):
    """Half-plane ``nx x + ny y < c`` (unit normal)."""

    def __init__(self, nx, ny, c):
        n = math.hypot(nx, ny)
        self.nx, self.ny, self.c = nx / n, ny / n, c / n
        self.bbox = (-1e4, 1e4, -1e4, 1e4)

    def f(self, x, y):
        return self.nx * x + self.ny * y - self.c


class _Circles(_Shape):
    """Union of disks (a cheap stand-in for tubes in placement tests)."""

    def __init__(self, pts, radii):
        self.pts = np.asarray(pts, float).reshape(-1, 2)
        self.radii = np.broadcast_to(np.asarray(radii, float), (len(self.pts),))
        m = self.radii.max()
        self.bbox = (self.pts[:, 0].min() - m, self.pts[:, 0].max() + m,
                     self.pts[:, 1].min() - m, self.pts[:, 1].max() + m)

    def f(self, x, y):
        d = np.hypot(x - self.pts[:, 0], y - self.pts[:, 1]) - self.radii
        return d.min()


class _Offset(_Shape):
    """``shape`` grown by ``d`` mm (shrunk when negative)."""

    def __init__(self, shape: _Shape, d: float):
        self.shape, self.d = shape, float(d)
        x0, x1, y0, y1 = shape.bbox
        g = max(self.d, 0.0)
        self.bbox = (x0 - g, x1 + g, y0 - g, y1 + g)

    def f(self, x, y):
        return self.shape.f(x, y) - self.d


class _Capsule(_Shape):
    def __init__(self, p0, p1, r):
        self.p0, self.p1, self.r = np.asarray(p0, float), np.asarray(p1, float), float(r)
        lo, hi = np.minimum(self.p0, self.p1) - r, np.maximum(self.p0, self.p1) + r
        self.bbox = (lo[0], hi[0], lo[1], hi[1])

    def f(self, x, y):
        (ax, ay), (dx, dy) = self.p0, self.p1 - self.p0
        ll = max(dx * dx + dy * dy, 1e-12)
        t = np.clip(((x - ax) * dx + (y - ay) * dy) / ll, 0.0, 1.0)
        return np.hypot(x - ax - t * dx, y - ay - t * dy) - self.r


def _disk(cx, cy, r) -> _Blob:
    return _Blob(cx, cy, r, r)


# ------------------------------------------------------------------------- canvas
class _Window:
    __slots__ = ("rows", "cols", "x", "y")

    def __init__(self, rows, cols, x, y):
        self.rows, self.cols, self.x, self.y = rows, cols, x, y


class _Canvas:
    """The image and its painting operations; shapes live in a body frame that is
    the image frame shifted by ``origin`` and rotated by ``angle``."""

    def __init__(self, size: int, ps: float, tex_rng: np.random.Generator,
                 trabecular: bool = False):
        self.n, self.ps = size, ps
        self.trabecular = trabecular
        # ridge amplitude (HU) of the trabecular network; drawn only when it is used
        self.trabecular_amp = float(tex_rng.uniform(140, 280)) if trabecular else 0.0
        self.coord = (np.arange(size) - (size - 1) / 2.0) * ps
        self.img = np.full((size, size), -1000.0)
        self.tex_rng = tex_rng
        self.pad = max(8, size // 4)
        self.fields: dict[float, np.ndarray] = {}
        self.set_frame(0.0, 0.0, 0.0)

    def set_frame(self, ox: float, oy: float, angle: float) -> None:
        self.ox, self.oy, self.angle = ox, oy, angle
        self.fc, self.fs = math.cos(angle), math.sin(angle)

    def to_image(self, x, y):
        return (self.ox + self.fc * x - self.fs * y, self.oy + self.fs * x + self.fc * y)

    def window(self, bbox) -> _Window | None:
        x0, x1, y0, y1 = bbox
        if x1 <= x0 or y1 <= y0:
            return None
        cx, cy = self.to_image(np.array([x0, x1, x0, x1]), np.array([y0, y0, y1, y1]))
        c0, ps, n = self.coord[0], self.ps, self.n
        j0 = max(0, int(math.floor((cx.min() - c0) / ps)) - 1)
        j1 = min(n, int(math.ceil((cx.max() - c0) / ps)) + 2)
        i0 = max(0, int(math.floor((cy.min() - c0) / ps)) - 1)
        i1 = min(n, int(math.ceil((cy.max() - c0) / ps)) + 2)
        if j1 <= j0 or i1 <= i0:
            return None
        xi = self.coord[j0:j1][None, :] - self.ox
        yi = self.coord[i0:i1][:, None] - self.oy
        x = self.fc * xi + self.fs * yi
        y = -self.fs * xi + self.fc * yi
        return _Window(slice(i0, i1), slice(j0, j1), x, y)

    # -- texture
    def field(self, sigma_mm: float) -> np.ndarray:
        if sigma_mm not in self.fields:
            m = self.n + self.pad
            white = self.tex_rng.standard_normal((m, m))
            sig = sigma_mm / self.ps
            from scipy import ndimage

            f = ndimage.gaussian_filter(white, sig, mode="wrap", truncate=3.0) if sig > 0.3 \
                else white
            self.fields[sigma_mm] = f / f.std()
        return self.fields[sigma_mm]

    def texture(self, win: _Window, tex) -> np.ndarray | float:
        out = 0.0
        h = win.rows.stop - win.rows.start
        w = win.cols.stop - win.cols.start
        if self.trabecular and tex is TEX_BONE:
            tex = TEX_TRAB
        for sigma, amp, *kind in tex:
            if amp == 0:
                continue
            f = self.field(sigma)
            oy, ox = self.tex_rng.integers(0, self.pad, 2)
            r0, c0 = win.rows.start + oy, win.cols.start + ox
            patch = f[r0:r0 + h, c0:c0 + w]
            if kind:  # trabecular network: the zero set of smooth noise, as ridges
                patch = self.trabecular_amp * (np.exp(-(patch / 0.45) ** 2) - 0.3)
            out = out + amp * patch
        return out

    # -- painting
    def mask(self, f: np.ndarray, soft: float = 1.0) -> np.ndarray:
        if f.shape[0] > 1 and f.shape[1] > 1:
            gy, gx = np.gradient(f, self.ps)
            g = np.clip(np.hypot(gx, gy), 0.3, 4.0)
            return np.clip(0.5 - f / (g * (self.ps * soft)), 0.0, 1.0)
        return np.clip(0.5 - f / (self.ps * soft), 0.0, 1.0)

    def paint(self, win: _Window, m: np.ndarray, value, tex=()) -> None:
        sub = self.img[win.rows, win.cols]
        if callable(value):
            value = value(win.x, win.y)
        if tex:
            value = value + self.texture(win, tex)
        sub += m * (value - sub)

    def fill(self, shape: _Shape, value, tex=(), soft: float = 1.0, alpha: float = 1.0) -> None:
        win = self.window(shape.bbox)
        if win is None:
            return
        m = self.mask(shape.f(win.x, win.y), soft)
        if alpha != 1.0:
            m = m * alpha
        self.paint(win, m, value, tex)

    def layers(self, blob: _Blob, specs) -> None:
        """Paint nested insets of one blob: ``specs`` = ``[(offset, value, tex), ...]``."""
        win = self.window(blob.bbox)
        if win is None:
            return
        r, th, rb = blob.polar(win.x, win.y)
        for off, value, tex in specs:
            f = r - (rb - (blob.off + _as_ang(off))(th))
            self.paint(win, self.mask(f), value, tex)

    def tube(self, pts, radii, value, tex=(), alpha: float = 1.0) -> None:
        """Tube along a polyline, radius interpolated linearly between points;
        thinner than a pixel, it keeps its area (partial volume)."""
        pts = np.asarray(pts, float).reshape(-1, 2)
        radii = np.broadcast_to(np.asarray(radii, float), (len(pts),))
        rm = radii.max() + self.ps
        bbox = (pts[:, 0].min() - rm, pts[:, 0].max() + rm,
                pts[:, 1].min() - rm, pts[:, 1].max() + rm)
        win = self.window(bbox)
        if win is None:
            return
        x = np.broadcast_to(win.x, np.broadcast_shapes(win.x.shape, win.y.shape))
        y = np.broadcast_to(win.y, x.shape)
        m = np.zeros(x.shape)
        ps, half, c0 = self.ps, self.ps / 2, self.coord[0]
        h, w = x.shape
        ix, iy = self.to_image(pts[:, 0], pts[:, 1])
        for k in range(len(pts) - 1):
            (ax, ay), (bx, by) = pts[k], pts[k + 1]
            ra, rb = radii[k], radii[k + 1]
            rr = max(ra, rb) + ps
            j0 = max(0, int((min(ix[k], ix[k + 1]) - rr - c0) / ps) - win.cols.start)
            j1 = min(w, int((max(ix[k], ix[k + 1]) + rr - c0) / ps) + 2 - win.cols.start)
            i0 = max(0, int((min(iy[k], iy[k + 1]) - rr - c0) / ps) - win.rows.start)
            i1 = min(h, int((max(iy[k], iy[k + 1]) + rr - c0) / ps) + 2 - win.rows.start)
            if j1 <= j0 or i1 <= i0:
                continue
            sl = (slice(i0, i1), slice(j0, j1))
            px, py = x[sl] - ax, y[sl] - ay
            dx, dy = bx - ax, by - ay
            ll = dx * dx + dy * dy
            t = np.clip((px * dx + py * dy) / ll, 0.0, 1.0) if ll > 0 else np.zeros(px.shape)
            d = np.hypot(px - t * dx, py - t * dy)
            r = ra + t * (rb - ra)
            wr = np.maximum(r, half)
            cov = np.clip((wr - d) / ps + 0.5, 0.0, 1.0) * (r / wr)
            np.maximum(m[sl], cov, out=m[sl])
        if alpha != 1.0:
            m *= alpha
        self.paint(win, m, value, tex)

    def dot(self, x, y, r, value, elong=1.0, direction=(1.0, 0.0), tex=()) -> None:
        """A vessel cross-section: a disk (or a capsule ``elong`` times longer)."""
        ux, uy = direction
        h = r * (elong - 1.0)
        self.tube([(x - ux * h, y - uy * h), (x + ux * h, y + uy * h)], [r, r], value, tex)


# ------------------------------------------------------------------------- helpers
def _harm(rng, kmax: int, amp: float, kmin: int = 2, decay: float = 1.0) -> list:
    return [(k, amp * rng.standard_normal() / k**decay, rng.uniform(0, 2 * math.pi))
            for k in range(kmin, kmax + 1)]


def _spline(points, n: int = 24) -> np.ndarray:
    """Catmull-Rom curve through ``points`` (k, 2), about ``n`` samples."""
    p = np.asarray(points, float)
    p = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    segs = len(p) - 3
    per = max(2, n // segs)
    out = []
    for i in range(segs):
        p0, p1, p2, p3 = p[i], p[i + 1], p[i + 2], p[i + 3]
        t = np.linspace(0, 1, per, endpoint=(i == segs - 1))[:, None]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    return np.vstack(out)


def _smooth_noise(rng, n: int, amp: float, width: float = 3.0) -> np.ndarray:
    from scipy import ndimage

    return amp * ndimage.gaussian_filter1d(rng.standard_normal(n), width, mode="nearest") * \
        math.sqrt(width * 3.5)


def _rot(dx, dy, ang):
    c, s = math.cos(ang), math.sin(ang)
    return c * dx - s * dy, s * dx + c * dy


class _HU(dict):
    """Per-seed tissue values."""

    def __getattr__(self, key):
        return self[key]


def _hu_table(rng) -> _HU:
    u = rng.uniform
    r = rng.random()
    phase = "unenhanced" if r < 0.25 else "arterial" if r < 0.45 else "portal"
    age = u(0, 1)  # 0 young, 1 old: bone density, calcification, fatty pancreas
    h = _HU(phase=phase, age=age)
    h.update(fat=u(-108, -90), subq=u(-110, -92), skin=u(15, 45), muscle=u(42, 56),
             csf=u(5, 15), cord=u(30, 40), cortical=u(950, 1250) - 150 * age,
             cancellous=u(190, 290) - 90 * age, marrow=u(220, 360) - 80 * age,
             cartilage=u(90, 140), bile=u(0, 18), urine=u(0, 12), fluid=u(0, 20),
             table=u(180, 300), foam=u(-960, -900), fascia=u(10, 40),
             oral=u(180, 350) if rng.random() < 0.35 else None,
             lung=u(-880, -825), lung_grad=u(30, 100), calcium=u(500, 900))
    blood = u(38, 50)
    if phase == "unenhanced":
        h.update(liver=u(52, 66), spleen=u(42, 52), pancreas=u(35, 50) - 15 * age,
                 cortex=u(28, 38), aorta=blood, ivc=blood, portal=blood,
                 bowel_wall=u(35, 50), myo=u(42, 55), left=blood, right=blood)
        h.medulla = h.cortex - u(0, 5)
    elif phase == "arterial":
        left = u(250, 400)
        h.update(liver=u(65, 80), spleen=u(90, 130), pancreas=u(100, 130) - 20 * age,
                 cortex=u(150, 220), medulla=u(55, 90), aorta=left, ivc=u(60, 110),
                 portal=u(90, 140), bowel_wall=u(80, 115), myo=u(100, 140), left=left,
                 right=u(150, 300))
        h.muscle += u(3, 8)
    else:
        venous = u(140, 190)
        h.update(liver=u(95, 120), spleen=u(105, 130), pancreas=u(80, 105) - 15 * age,
                 cortex=u(140, 190), aorta=venous, ivc=u(110, 160), portal=u(150, 200),
                 bowel_wall=u(70, 100), myo=u(90, 120), left=venous, right=venous + u(-10, 15))
        h.medulla = h.cortex - u(0, 20)
        h.muscle += u(5, 12)
    h.vessel = {"unenhanced": blood, "arterial": u(120, 200), "portal": u(120, 170)}[phase]
    return h


T_FINE, T_MID, T_COARSE = 0.7, 2.0, 6.0
TEX_FAT = ((T_FINE, 4.0), (T_MID, 4.0))
TEX_MUSCLE = ((T_FINE, 3.0), (T_MID, 3.0))
TEX_ORGAN = ((T_FINE, 3.0), (T_MID, 5.0), (T_COARSE, 5.0))
TEX_BONE = ((T_FINE, 22.0), (T_MID, 22.0), (T_COARSE, 10.0))
TEX_BLOOD = ((T_MID, 2.0), (T_COARSE, 3.0))


# ------------------------------------------------------------------------- shared parts
def _place_body(cv: _Canvas, rng, width, aspect, p_ant, p_post) -> tuple[_Blob, float]:
    u = rng.uniform
    a = width / 2
    b = a * aspect
    asym = u(-0.03, 0.06)
    b_ant, b_post = b * (1 + asym), b * (1 - asym)
    rel = _Ang(0.0, _harm(rng, 5, 0.012), [(math.pi / 2, 40.0, -u(0.0, 0.02))])
    blob = _Blob(0.0, 0.0, a, b_ant, p=p_ant, b2=b_post, p2=p_post, rel=rel)
    # body frame: centred a little anterior, slightly rotated
    oy = -0.5 * (blob.radius(np.array(math.pi / 2)) - blob.radius(np.array(-math.pi / 2))) \
        - u(5, 15)
    cv.set_frame(u(-6, 6), float(oy), u(-3, 3) * _DEG)
    return blob, b_post


def _table(cv: _Canvas, rng, body: _Blob, hu) -> None:
    u = rng.uniform
    t = np.linspace(0, 2 * math.pi, 361)
    bx, by = cv.to_image(*body.point(t))
    rc = u(800, 1600)
    top = float(np.max(by + bx**2 / (2 * rc))) + u(0.5, 3)
    shell = u(2.0, 3.5)
    core = u(18, 35)
    fov = cv.n * cv.ps / 2 + 5
    xs = np.linspace(-fov, fov, 41)
    frame = (cv.ox, cv.oy, cv.angle)
    cv.set_frame(0.0, 0.0, 0.0)
    for y0, r, v in ((top + shell + core / 2, core / 2, hu.foam),
                     (top + shell / 2, shell / 2, hu.table),
                     (top + 1.5 * shell + core, shell / 2, hu.table)):
        cv.tube(np.c_[xs, y0 - xs**2 / (2 * rc)], r, v)
    cv.set_frame(*frame)


def _wall(cv: _Canvas, rng, body: _Blob, hu, skin: float, fat: _Ang, muscle: _Ang,
          cavity_extra=_ZERO, cavity_value=None, cavity_tex=TEX_FAT) -> _Blob:
    """Skin, subcutaneous fat (with fascia line), muscle and the inner cavity."""
    specs = [(0.0, hu.skin, ((T_MID, 3.0),)),
             (skin, hu.subq, TEX_FAT),
             (fat + skin, hu.muscle, TEX_MUSCLE)]
    cavity_off = fat + skin + muscle + cavity_extra
    if cavity_value is not None:
        specs.append((cavity_off, cavity_value, cavity_tex))
    cv.layers(body, specs)
    # superficial fascia in the subcutaneous fat
    th = np.linspace(-math.pi, math.pi, 97)
    frac = rng.uniform(0.35, 0.6)
    pts = np.c_[body.point(th, lambda t: skin + frac * fat(t))]
    cv.tube(pts, 0.35, hu.fascia, alpha=0.8)
    return body.inset(cavity_off)


def _fat_line(cv, body: _Blob, th0, th1, depth, hu, r=0.5, n=24, alpha=1.0) -> None:
    th = np.linspace(th0, th1, n)
    taper = r * np.clip(np.sin(np.linspace(0, math.pi, n)) * 2.5, 0.1, 1.0)
    cv.tube(np.c_[body.point(th, depth)], taper, hu.fat, alpha=alpha)


def _bone_tube(cv, pts, radii, hu, shell=1.4, marrow=None) -> None:
    radii = np.asarray(radii, float)
    cv.tube(pts, radii, hu.cortical, ((T_FINE, 40.0),))
    inner = radii - shell
    if inner.max() > 0.2:
        cv.tube(pts, np.maximum(inner, 0.05), hu.marrow if marrow is None else marrow, TEX_BONE)


def _spine(cv: _Canvas, rng, hu, x0, y_vb, vb_a, vb_b, canal_a, canal_b, thoracic: bool,
           sp_len: float) -> dict:
    """Vertebra with its canal; returns landmarks."""
    u = rng.uniform
    y_cn = y_vb + vb_b + canal_b + u(1.5, 3.0)
    # neural arch (pedicles, laminae), drawn as a thick ring behind the body
    canal = _Blob(x0, y_cn, canal_a, canal_b, p=2.0 if thoracic else 2.4,
                  rel=_Ang(0, [(3, u(0.0, 0.08), math.pi / 2)]))
    arch_w = u(5.0, 7.5)
    arch = _Inter(canal.inset(-arch_w), _Half(0, -1, -(y_vb + vb_b * 0.3)))
    cv.fill(arch, hu.cortical, ((T_FINE, 40.0),))
    cv.fill(_Inter(canal.inset(-arch_w + 1.6), _Half(0, -1, -(y_vb + vb_b * 0.5))),
            hu.marrow, TEX_BONE)
    # transverse processes and facets
    has_tp = rng.random() < 0.75
    for side in (-1, 1):
        tp_len = u(14, 24) if not thoracic else u(14, 20)
        a0 = (x0 + side * (canal_a + 3), y_cn - 1)
        a1 = (x0 + side * (canal_a + 3 + tp_len), y_cn + u(-2, 5) + (6 if thoracic else 0))
        if has_tp:
            _bone_tube(cv, [a0, a1], [u(3.0, 4.0), u(2.3, 3.2)], hu)
        fx, fy = x0 + side * (canal_a + u(2, 4)), y_cn + canal_b * u(0.5, 0.9)
        cv.fill(_disk(fx, fy, u(4.5, 6.0)), hu.cortical, ((T_FINE, 40.0),))
        cv.fill(_disk(fx, fy, u(2.5, 3.5)), hu.marrow, TEX_BONE)
    # spinous process
    sp0 = (x0, y_cn + canal_b + arch_w - 2)
    sp1 = (x0 + u(-3, 3), y_cn + canal_b + sp_len)
    _bone_tube(cv, [sp0, sp1], [u(3.5, 5.0), u(2.5, 3.5)], hu)
    # vertebral body: kidney shape, posterior margin flat or concave
    rel = _Ang(0, _harm(rng, 4, 0.015), [(math.pi / 2, 5.0, -u(0.06, 0.14))])
    if hu.age > 0.6:  # osteophytes
        rel = rel + _Ang(0, (), [(0.0, 60.0, u(0, 0.08)), (math.pi, 60.0, u(0, 0.08)),
                                 (-0.25 * math.pi, 60.0, u(0, 0.05))])
    vb = _Blob(x0, y_vb, vb_a, vb_b, p=u(2.2, 2.6), rel=rel)
    shell = u(1.2, 1.8)
    cv.layers(vb, [(0.0, hu.cortical, ((T_FINE, 40.0),)),
                   (shell, hu.cancellous, TEX_BONE)])
    # basivertebral vein notch
    cv.fill(_Blob(x0, y_vb + vb_b * 0.75, u(2, 3.5), vb_b * u(0.15, 0.3)), hu.muscle,
            alpha=0.6)
    # canal contents
    cv.fill(canal.inset(-0.8), hu.cortical, ((T_FINE, 30.0),))
    cv.fill(canal, hu.fat + 20, ((T_MID, 5.0),))
    sac = canal.inset(u(1.0, 2.2))
    cv.fill(sac, hu.csf, ((T_MID, 3.0),))
    if thoracic:
        cv.fill(_Blob(x0, y_cn + u(-1, 1), canal_a * 0.45, canal_b * 0.45), hu.cord)
    return {"y_cn": y_cn, "vb": vb, "canal": canal}


def _rib_arc(cv, body: _Blob, th0, th1, depth, r, hu, cartilage=False, calcified=False):
    th = np.linspace(th0, th1, max(3, int(abs(th1 - th0) / (4 * _DEG)) + 2))
    pts = np.c_[body.point(th, depth)]
    n = len(th)
    taper = r * np.clip(np.sin(np.linspace(0, math.pi, n)) * 3.0, 0.55, 1.0)
    if cartilage:
        cv.tube(pts, taper, hu.cartilage, ((T_MID, 10.0),))
        if calcified:
            cv.tube(pts, taper, hu.calcium, alpha=0.35)
            cv.tube(pts, np.maximum(taper - 1.0, 0.1), hu.cartilage, ((T_MID, 10.0),))
    else:
        _bone_tube(cv, pts, taper, hu, shell=min(1.6, 0.3 * r + 0.2))


def _lumen(cv, rng, shape: _Blob, hu, content: str, wall: float, wall_value, level_frac=0.5):
    """A hollow viscus: wall, then content (gas rises anteriorly, to smaller y)."""
    cv.fill(shape, wall_value, TEX_MUSCLE)
    lumen = shape.inset(wall)
    y0, y1 = lumen.bbox[2], lumen.bbox[3]
    if content == "gas":
        cv.fill(lumen, -1000.0)
        return
    base = {"fluid": hu.fluid, "contrast": hu.oral if hu.oral is not None else hu.fluid,
            "stool": -60.0, "food": 20.0, "collapsed": wall_value}[content]
    tex = {"fluid": ((T_MID, 3.0),), "contrast": ((T_MID, 15.0), (T_COARSE, 10.0)),
           "stool": ((T_FINE, 20.0), (T_MID, 50.0), (T_COARSE, 20.0)),
           "food": ((T_FINE, 25.0), (T_MID, 30.0)),
           "collapsed": ((T_MID, 5.0),)}[content]
    if content == "collapsed":
        cv.fill(lumen.inset(max(1.0, 0.25 * min(lumen.a, lumen.b))), hu.fluid)
        return
    cv.fill(lumen, base, tex)
    if content in ("stool", "food"):
        # gas bubbles
        for _ in range(rng.integers(2, 9 if content == "stool" else 4)):
            bx = lumen.cx + rng.uniform(-0.6, 0.6) * lumen.a
            by = lumen.cy + rng.uniform(-0.6, 0.6) * lumen.b
            if lumen.inside(bx, by, 2.0):
                cv.fill(_disk(bx, by, rng.uniform(1.0, 3.5)), -1000.0)
    if level_frac > 0:
        level = y0 + level_frac * (y1 - y0)
        cv.fill(_Inter(lumen, _Half(0, 1, level)), -1000.0)


# ------------------------------------------------------------------------- abdomen
def _abdomen(cv: _Canvas, rng) -> None:
    u = rng.uniform
    hu = _hu_table(rng)
    lvl = u(0, 1)  # 0: T12 (big liver, spleen, stomach), 1: L2 (kidney hila, bowel)
    width = u(300, 370)
    body, b_post = _place_body(cv, rng, width, u(0.68, 0.82), u(2.1, 2.7), u(2.7, 3.6))
    _table(cv, rng, body, hu)

    skin = u(1.5, 2.5)
    t0 = float(np.clip(5 + (width - 300) * 0.3 + rng.gamma(2.0, 5.0), 5, 50))
    fat = _Ang(t0, [(k, t0 * 0.08 * rng.standard_normal(), u(0, 6.3)) for k in (1, 2, 3)],
               [(-math.pi / 2, 1.5, t0 * u(0.2, 0.6)), (math.pi / 2, 2.0, -t0 * u(0.2, 0.5))])
    t_post = float(fat(math.pi / 2))
    y_cn_target = b_post - skin - t_post - u(40, 52)
    m_lat = u(9, 15)
    m_post = (b_post - skin - t_post) - y_cn_target
    muscle = _Ang(m_lat, [(2, u(-1.5, 1.5), u(0, 6.3))],
                  [(math.pi / 2, u(4.0, 6.0), m_post - m_lat),
                   (-math.pi / 2, 350.0, -(m_lat - u(0.8, 1.8)))])
    cavity = _wall(cv, rng, body, hu, skin, fat, muscle, cavity_value=hu.fat)
    # fascial planes between the lateral muscles and along the paraspinal muscles
    for side in (0.0, math.pi):
        sgn = 1 if side == 0 else -1
        for frac in (u(0.3, 0.4), u(0.6, 0.72)):
            th0, th1 = sorted((side + sgn * u(-70, -50) * _DEG, side + sgn * u(25, 40) * _DEG))
            _fat_line(cv, body, th0, th1, lambda t, f=frac: skin + fat(t) + f * muscle(t), hu,
                      r=u(0.3, 0.6), alpha=0.7)

    # spine landmarks
    x0 = u(-3, 3)
    vb_a, vb_b = u(20, 25), u(14, 17)
    canal_a, canal_b = u(9, 12), u(7, 9)
    y_vb = y_cn_target - canal_b - 2.2 - vb_b
    a_c = float(cavity.radius(np.array(0.0)) + cavity.radius(np.array(math.pi))) / 2
    y_ca = -float(cavity.radius(np.array(-math.pi / 2)))
    depth_c = y_cn_target - y_ca
    r_ao = u(8, 12.5)
    x_ao, y_ao = x0 + u(5, 14), y_vb - vb_b - r_ao - u(0, 3)
    x_ivc, y_ivc = x0 - u(22, 32), y_vb - vb_b - u(6, 13)
    a_ivc, b_ivc = u(9, 14), u(6, 10)
    r_ps = 8 + 12 * lvl + u(-2, 2)
    obstacles: list[_Shape] = []

    # paraspinal fascia: lateral border of the erector spinae
    for sgn in (-1, 1):
        p0 = (x0 + sgn * u(42, 55), y_cn_target + u(-4, 2))
        p1 = (x0 + sgn * u(60, 80), y_cn_target + u(20, 35))
        cv.tube([p0, p1], u(0.5, 0.8), hu.fat)
    cv.tube([(x0, y_cn_target + 15), (x0, b_post - skin - t_post + 2)], 0.6, hu.fat)

    # psoas and quadratus lumborum
    for sgn in (-1, 1):
        pa, pb = r_ps * u(0.9, 1.1), r_ps * u(0.95, 1.2)
        px, py = x0 + sgn * (vb_a + pa * 0.8), y_vb + u(-3, 6)
        cv.fill(_Blob(px, py, pa, pb, rot=sgn * u(0, 25) * _DEG, rel=_Ang(0, _harm(rng, 3, 0.04))),
                hu.muscle, TEX_MUSCLE)
        qx = x0 + sgn * (vb_a + 2 * pa + u(6, 14))
        qy = y_cn_target - u(2, 8)
        cv.fill(_Blob(qx, qy, u(12, 20), u(7, 10), rot=-sgn * u(5, 30) * _DEG), hu.muscle,
                TEX_MUSCLE)
        obstacles.append(_disk(px, py, pa + 3))

    # liver
    liver_shapes = []
    if lvl < 0.92:
        s = 1 - 0.55 * lvl
        lx = -a_c * u(0.38, 0.5) * (0.7 + 0.3 * s)
        ly = y_ca + depth_c * u(0.42, 0.55)
        main = _Blob(lx, ly, a_c * u(0.5, 0.64) * s, depth_c * u(0.42, 0.52) * (0.6 + 0.4 * s),
                     rot=u(-25, 15) * _DEG, p=u(2.0, 2.6), rel=_Ang(0, _harm(rng, 5, 0.06)))
        liver_shapes.append(main)
        if lvl < 0.55:
            left = _Blob(-a_c * u(0.05, 0.2), y_ca + u(18, 32), a_c * u(0.4, 0.55) * (1 - lvl),
                         u(14, 24) * (1 - 0.6 * lvl), rot=u(-18, 5) * _DEG, p=2.0,
                         rel=_Ang(0, _harm(rng, 4, 0.05) + [(1, u(0.05, 0.15), 0.0)]))
            liver_shapes.append(left)
        centre = _Blob(x0 + 10, y_vb - 5, vb_a + 2 * r_ps + 5, vb_b + 2 * r_ao + 12,
                       rel=_Ang(0, _harm(rng, 4, 0.08)))
        liver = _Diff(_Inter(_Union(*liver_shapes), cavity.inset(u(0.5, 2.0))), centre)
        cv.fill(liver, hu.liver, ((T_FINE, 3.0), (T_MID, 5.0), (T_COARSE, 6.0)))
        obstacles.append(liver)
        _liver_vessels(cv, rng, hu, liver, main)
        # gallbladder
        if 0.2 < lvl < 0.8 and rng.random() < 0.5:
            gx = main.cx + main.a * u(0.2, 0.5)
            gy = y_ca + u(22, 40)
            gb = _Blob(gx, gy, u(10, 20), u(8, 14), rot=u(0, 180) * _DEG)
            if liver.inside(gx, gy, 0):
                cv.fill(gb, hu.bowel_wall)
                cv.fill(gb.inset(1.2), hu.bile, ((T_MID, 2.0),))

    # IVC, aorta
    cv.fill(_Blob(x_ivc, y_ivc, a_ivc, b_ivc, rot=u(-20, 10) * _DEG), hu.ivc, TEX_BLOOD)
    cv.fill(_disk(x_ao, y_ao, r_ao + 1.2), hu.muscle)
    cv.fill(_disk(x_ao, y_ao, r_ao), hu.aorta, TEX_BLOOD)
    if hu.age > 0.5 and rng.random() < 0.7:
        for _ in range(rng.integers(1, 4)):
            a = u(0, 2 * math.pi)
            cv.tube([(x_ao + (r_ao + 0.6) * math.cos(a + d), y_ao + (r_ao + 0.6) * math.sin(a + d))
                     for d in np.linspace(0, u(0.2, 0.8), 4)], u(0.6, 1.2), hu.calcium)
    obstacles += [_disk(x_ao, y_ao, r_ao + 4), _disk(x_ivc, y_ivc, a_ivc + 4)]

    # crura of the diaphragm (upper levels)
    if lvl < 0.6:
        for sgn in (-1, 1):
            pts = [(x_ao + sgn * 2, y_ao - r_ao - 2),
                   (x_ao + sgn * (r_ao + 3), y_ao),
                   (x0 + sgn * vb_a * 0.9, y_vb - vb_b * 0.2)]
            cv.tube(_spline(pts, 12), [u(2.0, 3.0)] * 6 + [u(3.0, 5.0)] * 6, hu.muscle,
                    TEX_MUSCLE)

    # spleen
    if lvl < 0.75:
        s = 1 - 0.7 * lvl
        sx, sy = a_c * u(0.6, 0.78), y_vb - u(0, 25)
        sp_blob = _Blob(sx, sy, u(40, 60) * s, u(22, 32) * s, rot=u(-75, -40) * _DEG,
                        rel=_Ang(0, _harm(rng, 4, 0.05)))
        spleen = _Inter(sp_blob, cavity.inset(0.8))
        tex = ((T_FINE, 3.0), (T_MID, 4.0), (T_COARSE, 4.0))
        if hu.phase == "arterial":
            tex = ((T_FINE, 3.0), (T_MID, 12.0), (T_COARSE, 25.0))
        cv.fill(spleen, hu.spleen, tex)
        obstacles.append(spleen)

    # kidneys (left drawn at +x, right mirrored)
    kidneys = []
    for sgn in (1, -1):
        if rng.random() < 0.06 + 0.1 * (1 - lvl) * (sgn < 0):
            continue
        k = _kidney(cv, rng, hu, sgn, x0 + vb_a + 2 * r_ps * 0.85 + u(12, 22), y_vb + u(-6, 6),
                    lvl, a_c)
        kidneys.append(k)
        obstacles.append(k["outer"])

    # renal veins at hilum levels
    for k in kidneys:
        if 0.3 < lvl < 0.85 and rng.random() < 0.45:
            hx, hy = k["hilum"]
            if k["side"] > 0:
                pts = [(hx, hy), ((hx + x_ao + r_ao) / 2 + 4, (hy + y_ao) / 2 - u(4, 10)),
                       (x_ao + r_ao + 3, y_ao - r_ao * 0.7),
                       (x_ao, y_ao - r_ao - 3.0), (x_ivc + a_ivc * 0.5, y_ivc)]
                rad = np.r_[np.full(12, u(3.0, 4.0)), np.full(12, u(2.2, 3.0))]
                cv.tube(_spline(pts, 24), rad, hu.ivc, TEX_BLOOD)
            else:
                mx, my = (hx + x_ivc) / 2, (hy + y_ivc) / 2 - u(0, 5)
                cv.tube(_spline([(hx, hy), (mx, my), (x_ivc - a_ivc * 0.6, y_ivc + 2)], 8),
                        u(3.0, 4.5), hu.ivc, TEX_BLOOD)
            cv.fill(_disk(x_ao, y_ao, r_ao), hu.aorta, TEX_BLOOD)

    # adrenals (upper levels)
    if lvl < 0.55:
        for sgn in (1, -1):
            if rng.random() < 0.2:
                continue
            ax = (x_ao + r_ao + u(6, 12)) if sgn > 0 else (x_ivc - u(0, 6))
            ay = (y_ao - u(0, 8)) if sgn > 0 else (y_ivc + b_ivc + u(3, 7))
            ln1, ln2 = u(14, 24), u(10, 20)
            a1, a2 = u(60, 80) * _DEG, u(90, 130) * _DEG
            if sgn < 0:
                a1, a2 = math.pi - a1, math.pi - a2
            for ln, ang in ((ln1, a1), (ln2, a2)):
                cv.tube([(ax, ay), (ax + ln * math.cos(ang), ay + ln * math.sin(ang))],
                        [u(2.0, 3.0), u(1.2, 1.8)], hu.bowel_wall - 10)

    # stomach
    if lvl < 0.7 and rng.random() < 0.9:
        s = 1 - 0.55 * lvl
        st = _Blob(a_c * u(0.12, 0.38), y_ca + u(28, 48) * s, u(28, 50) * s, u(22, 38) * s,
                   rot=u(-40, 20) * _DEG, rel=_Ang(0, _harm(rng, 4, 0.06)))
        st = _Blob(st.cx, st.cy, st.a, st.b, rot=st.rot,
                   rel=st.rel + _Ang(0, [(int(rng.integers(14, 22)), u(0.01, 0.025), 0.0)]))
        content = rng.choice(["fluid", "food", "contrast", "gas"], p=[0.4, 0.25, 0.2, 0.15])
        if content == "contrast" and hu.oral is None:
            content = "fluid"
        st_clip = _Inter(st, cavity.inset(1.0))
        cv.fill(st_clip, hu.bowel_wall + 10, TEX_MUSCLE)
        # rugae: wavy inner wall
        lum = st.inset(_Ang(u(3.5, 6.0), [(int(rng.integers(10, 18)), u(0.8, 1.8), u(0, 6.3))]))
        _lumen_inside(cv, _Inter(lum, cavity.inset(4.0)), hu, str(content),
                      level=lum.bbox[2] + (lum.bbox[3] - lum.bbox[2]) * u(0.25, 0.55))
        obstacles.append(_Inter(st, cavity))

    # pancreas with splenic vein, SMA, SMV
    if 0.15 < lvl < 0.85 and rng.random() < 0.85:
        tail = (a_c * u(0.35, 0.5), y_vb - u(8, 22))
        body_p = (x_ao + u(-5, 8), y_ao - r_ao - u(16, 24))
        neck = (x_ao - u(15, 25), y_ao - r_ao - u(16, 24))
        head = (x_ivc + u(-6, 4), y_ivc - b_ivc - u(10, 18))
        path = _spline([tail, body_p, neck, head], 28)
        n = len(path)
        rad = np.interp(np.linspace(0, 1, n), [0, 0.4, 0.75, 1], [u(7, 10), u(8, 11), u(9, 12),
                                                                 u(12, 17)])
        rad = rad * (1 + _smooth_noise(rng, n, 0.08, 2.0))
        sv = path[: int(0.7 * n)] + np.array([0.0, 1.0]) * rad[: int(0.7 * n), None] * 0.75
        tex = ((T_FINE, 3.0 + 4 * hu.age), (T_MID, 5.0 + 15 * hu.age))
        cv.tube(path, rad, hu.pancreas, tex)
        cv.tube(sv, u(2.5, 4.0), hu.portal, TEX_BLOOD)
        obstacles.append(_Circles(path, rad + 3))
    smx, smy = x_ao + u(-3, 3), y_ao - r_ao - u(8, 14)
    cv.fill(_disk(smx, smy, u(5.5, 7.0)), hu.fat, ((T_MID, 4.0),))
    cv.fill(_disk(smx, smy, u(3.0, 4.2)), hu.aorta, TEX_BLOOD)
    if lvl > 0.2:
        cv.fill(_disk(smx - u(12, 18), smy - u(-2, 4), u(4.5, 6.5)), hu.portal, TEX_BLOOD)
    obstacles.append(_disk(smx - 6, smy, 14))

    # lung bases behind liver and spleen (highest levels)
    if lvl < 0.22:
        for th0, th1 in ((u(30, 45), u(70, 82)), (u(98, 110), u(135, 150))):
            th = np.linspace(th0 * _DEG, th1 * _DEG, 20)
            wmax = u(3, 9) * (1 - lvl / 0.22)
            w = wmax * np.sin(np.linspace(0, math.pi, 20)) ** 0.7
            pts = np.c_[cavity.point(th, w + 0.5)]
            cv.tube(pts, np.maximum(w, 0.05), hu.lung, ((T_FINE, 12.0),))

    # bowel: colon segments and small-bowel loops in the free space
    _bowel(cv, rng, hu, cavity, obstacles, lvl, a_c, y_ca, y_vb, vb_b, depth_c)

    # ribs and costal cartilages in the wall
    n_ribs = int(rng.integers(2, 4) + round(3 * (1 - lvl)))
    for sgn in (1, -1):
        ths = np.sort(u(-70, 75, n_ribs)) if n_ribs else []
        for th in ths:
            t = th * _DEG if sgn > 0 else math.pi - th * _DEG
            ln = u(2.5, 6) * _DEG
            depth = lambda tt: skin + fat(tt) + 0.5 * muscle(tt)  # noqa: E731
            r = u(3.0, 4.5)
            if th < -40:
                _rib_arc(cv, body, t - ln, t + ln, depth, r * 1.2, hu, cartilage=True,
                         calcified=rng.random() < hu.age)
            else:
                _rib_arc(cv, body, t - ln, t + ln, depth, r, hu)

    # vertebra last (it sits on everything around it)
    _spine(cv, rng, hu, x0, y_vb, vb_a, vb_b, canal_a, canal_b, False, u(22, 32))


def _lumen_inside(cv, lumen_shape: _Shape, hu, content: str, level: float):
    if content == "gas":
        cv.fill(lumen_shape, -1000.0)
        return
    base = {"fluid": hu.fluid, "contrast": hu.oral or hu.fluid, "food": 10.0}[content]
    tex = {"fluid": ((T_MID, 3.0),), "contrast": ((T_MID, 15.0), (T_COARSE, 15.0)),
           "food": ((T_FINE, 6.0), (T_MID, 25.0), (T_COARSE, 30.0))}[content]
    cv.fill(lumen_shape, base, tex)
    cv.fill(_Inter(lumen_shape, _Half(0, 1, level)), -1000.0)


def _liver_vessels(cv, rng, hu, liver: _Shape, main: _Blob) -> None:
    u = rng.uniform
    delta = {"unenhanced": -u(12, 22), "arterial": u(5, 25), "portal": u(40, 75)}[hu.phase]
    value = hu.liver + delta
    hx, hy = main.cx + main.a * u(0.3, 0.55), main.cy + u(-10, 10)
    segs = []
    for _ in range(int(rng.integers(3, 6))):
        ang = u(0, 2 * math.pi)
        _grow(rng, liver, None, hx, hy, math.cos(ang), math.sin(ang), u(2.0, 4.0), 0, segs,
              r_min=0.7, margin=4.0, max_segs=len(segs) + 50, length=(2.5, 5.0))
    _draw_tree(cv, rng, segs, value, p_plane=0.45, bronchi=None)


def _kidney(cv, rng, hu, sgn, xk, yk, lvl, a_c) -> dict:
    """A kidney at ``(sgn * |xk|, yk)``; drawn for the left side and mirrored."""
    u = rng.uniform
    xk = min(abs(xk), a_c - 30)
    s = 0.75 + 0.25 * min(1.0, lvl * 2) if lvl < 0.5 else 1.0
    ak, bk = u(25, 32) * s, u(19, 24) * s
    phi = u(20, 45) * _DEG
    rot = math.atan2(-math.cos(phi), math.sin(phi))  # long axis points anterolaterally
    tmp = _Blob(xk, yk, ak, bk, rot=rot)
    hil = tmp.local_angle(-math.cos(phi), -math.sin(phi))  # hilum faces anteromedially
    hilum_depth = u(0.15, 0.3) if 0.25 < lvl < 0.9 else u(0.03, 0.1)
    rel = _Ang(0, _harm(rng, 4, 0.025), [(hil, u(3, 6), -hilum_depth)])
    outer = _Blob(xk, yk, ak, bk, rot=rot, rel=rel)
    peri = _Blob(xk + u(0, 6), yk + u(0, 6), ak * u(1.25, 1.5), bk * u(1.3, 1.6), rot=rot,
                 rel=_Ang(0, _harm(rng, 4, 0.06)))
    shapes = [peri, outer]
    if sgn < 0:
        shapes = [_Mirror(sh) for sh in shapes]
    cv.fill(shapes[0], hu.fat + u(-5, 5), TEX_FAT)
    cv.fill(shapes[1], hu.cortex, ((T_FINE, 3.0), (T_MID, 4.0)))
    # medullary pyramids
    n_pyr = int(rng.integers(4, 8))
    cortex_t = u(5.5, 8.0)
    for i in range(n_pyr):
        ang = hil + math.pi + (i - (n_pyr - 1) / 2) * (1.7 * math.pi / n_pyr) + u(-0.1, 0.1)
        rr = float(outer.radius(np.array(ang))) - cortex_t
        rad = u(4.5, 7.5) * s
        cx, cy = outer.point(ang, cortex_t + rad * 0.8)
        pyr = _Blob(float(cx), float(cy), rad * 1.3, rad * 0.75, p=1.6,
                    rot=math.atan2(float(cy) - yk, float(cx) - xk),
                    rel=_Ang(0, [(1, 0.15, 0.0)]))
        if rr > rad:
            cv.fill(_Mirror(pyr) if sgn < 0 else pyr, hu.medulla, ((T_MID, 3.0),))
    # sinus fat and pelvis toward the hilum
    hx, hy = outer.point(hil, 0.0)
    hx, hy = float(hx), float(hy)
    if hilum_depth > 0.12:
        sx, sy = xk + 0.55 * (hx - xk), yk + 0.55 * (hy - yk)
        sinus = _Blob(sx, sy, ak * u(0.3, 0.42), bk * u(0.22, 0.32), rot=rot,
                      rel=_Ang(0, _harm(rng, 4, 0.08)))
        pelvis = _Blob(xk + 0.8 * (hx - xk), yk + 0.8 * (hy - yk), u(4, 8), u(3, 5.5),
                       rot=rot + math.pi / 2)
        for sh, v, tex in ((sinus, hu.fat + 15, TEX_FAT), (pelvis, hu.urine, ((T_MID, 2.0),))):
            cv.fill(_Mirror(sh) if sgn < 0 else sh, v, tex)
    return {"outer": shapes[1], "hilum": (sgn * hx, hy), "side": sgn}


def _bowel(cv, rng, hu, cavity, obstacles, lvl, a_c, y_ca, y_vb, vb_b, depth_c) -> None:
    u = rng.uniform
    loops: list[tuple[float, float, float]] = []

    def free(x, y, r) -> bool:
        if not cavity.inside(x, y, r + 2):
            return False
        if any(o.f(np.float64(x), np.float64(y)) < r * 0.4 for o in obstacles):
            return False
        return all(math.hypot(x - a, y - b) > 0.8 * (r + c) for a, b, c in loops)

    def draw(x, y, r, kind):
        blob = _Blob(x, y, r * u(0.95, 1.4), r * u(0.7, 1.0), rot=u(0, math.pi),
                     rel=_Ang(0, _harm(rng, 5, 0.12)))
        if kind == "colon":
            wall = u(1.5, 2.5)
            content = str(rng.choice(["gas", "stool", "stool", "fluid"]))
            level = u(0.2, 0.7) if content != "gas" else 0.0
        else:
            wall = u(1.2, 2.2)
            opts = ["fluid", "fluid", "collapsed", "collapsed", "stool"]
            if hu.oral is not None:
                opts += ["contrast", "contrast", "contrast"]
            content = str(rng.choice(opts))
            if content == "stool":
                content = "fluid"
            level = u(0.05, 0.4) if rng.random() < 0.3 and content != "collapsed" else 0.0
        if content == "contrast" and hu.oral is None:
            content = "fluid"
        _lumen(cv, rng, blob, hu, content, wall, hu.bowel_wall, level_frac=level)
        loops.append((x, y, r))

    # colon at fixed places
    if lvl > 0.3:
        x, y, r = -a_c * u(0.62, 0.8), y_ca + depth_c * u(0.35, 0.6), u(15, 25)
        if free(x, y, r * 0.6):
            draw(x, y, r, "colon")
    if lvl > 0.2:
        x, y, r = a_c * u(0.68, 0.85), y_vb - u(-5, 25), u(11, 18)
        if free(x, y, r * 0.6):
            draw(x, y, r, "colon")
    if lvl > 0.35 and rng.random() < 0.7:
        for _ in range(int(rng.integers(1, 3))):
            x, y, r = a_c * u(-0.45, 0.45), y_ca + u(18, 35), u(14, 22)
            if free(x, y, r * 0.7):
                draw(x, y, r, "colon")
    # duodenum near the pancreatic head
    if 0.2 < lvl < 0.9:
        for _ in range(10):
            x, y, r = -a_c * u(0.15, 0.35), y_vb - vb_b - u(25, 45), u(9, 14)
            if free(x, y, r * 0.6):
                draw(x, y, r, "small")
                break
    # small-bowel loops
    n_loops = int(round(3 + 22 * lvl * u(0.5, 1.2)))
    tries = 0
    while n_loops > 0 and tries < 400:
        tries += 1
        r = u(7, 14)
        if loops and rng.random() < 0.7:  # loops cluster in the mesentery
            px, py, pr = loops[int(rng.integers(len(loops)))]
            ang = u(0, 2 * math.pi)
            x, y = px + (pr + r) * math.cos(ang), py + (pr + r) * math.sin(ang)
        else:
            x, y = a_c * u(-0.75, 0.85), y_ca + depth_c * u(0.05, 0.75)
        if y < y_ca + depth_c * 0.8 and free(x, y, r):
            draw(x, y, r, "small")
            n_loops -= 1
    # mesenteric vessels and small nodes in the fat
    for _ in range(int(rng.integers(30, 80))):
        x, y = a_c * u(-0.6, 0.7), y_ca + depth_c * u(0.1, 0.75)
        if free(x, y, 2.0):
            if rng.random() < 0.85:
                cv.dot(x, y, u(0.6, 2.2), hu.vessel, elong=u(1, 3),
                       direction=(math.cos(a := u(0, 6.3)), math.sin(a)))
            else:
                cv.fill(_Blob(x, y, u(2.5, 5), u(2, 3.5), rot=u(0, 3.2)), hu.muscle - 5)


# ------------------------------------------------------------------------- vessel trees
def _grow(rng, inside: _Shape, outside: _Shape | None, x, y, dx, dy, r, gen, segs, *,
          r_min=0.6, margin=2.0, max_segs=400, length=(5.0, 10.0)) -> None:
    """Grow a branching tree by recursive bifurcation, kept ``margin`` mm inside
    ``inside`` and outside ``outside``; appends ``(x0, y0, x1, y1, r0, r1, gen)``."""
    u = rng.uniform
    stack = [(x, y, dx, dy, r, gen)]
    while stack and len(segs) < max_segs:
        x, y, dx, dy, r, gen = stack.pop()
        ln = r * u(*length) + 2.0
        dx, dy = _rot(dx, dy, rng.normal(0, 0.2))
        x1, y1 = x + ln * dx, y + ln * dy
        ok = inside.inside(x1, y1, margin) and (
            outside is None or outside.f(np.float64(x1), np.float64(y1)) > 1.0)
        if not ok:
            x1, y1 = x + 0.4 * ln * dx, y + 0.4 * ln * dy
            if not inside.inside(x1, y1, margin):
                continue
        r1 = r * 0.92
        segs.append((x, y, x1, y1, r, r1, gen))
        if r1 < r_min:
            continue
        if rng.random() < 0.85:
            f1, f2 = u(0.7, 0.86), u(0.5, 0.75)
            a1, a2 = u(12, 35) * _DEG, -u(25, 55) * _DEG
            if rng.random() < 0.5:
                a1, a2 = -a1, -a2
            stack.append((x1, y1, *_rot(dx, dy, a2), r1 * f2, gen + 1))
            stack.append((x1, y1, *_rot(dx, dy, a1), r1 * f1, gen + 1))
        else:
            stack.append((x1, y1, dx, dy, r1 * 0.9, gen + 1))


def _draw_tree(cv, rng, segs, value, p_plane, bronchi, wall_hu=0.0) -> None:
    u = rng.uniform
    for x0, y0, x1, y1, r0, r1, gen in segs:
        ln = math.hypot(x1 - x0, y1 - y0)
        if ln < 1e-6:
            continue
        dx, dy = (x1 - x0) / ln, (y1 - y0) / ln
        if rng.random() < (p_plane if gen > 0 else 0.5):
            cv.tube([(x0, y0), (x1, y1)], [r0, r1], value)
            if bronchi and gen == 0 and r0 > 3.0 and rng.random() < 0.3:
                rb = r0 * u(0.8, 1.0)
                wl = max(0.8, 0.2 * rb)
                off = r0 + rb + wl + 0.3
                nx, ny = -dy * off, dx * off
                if rng.random() < 0.5:
                    nx, ny = -nx, -ny
                p = [(x0 + nx, y0 + ny), (x1 + nx * 0.8, y1 + ny * 0.8)]
                cv.tube(p, [rb + wl, rb * 0.8 + wl], wall_hu)
                cv.tube(p, [rb, rb * 0.8], -1000.0)
        else:
            el = u(1.0, 1.8)
            cv.dot(x1, y1, r1, value, elong=el, direction=(dx, dy))
            if bronchi and r1 > 1.6 and rng.random() < 0.55:
                rb = r1 * u(0.75, 1.05)
                wl = max(0.6, 0.22 * rb)
                ang = u(0, 2 * math.pi)
                off = r1 + rb + wl * 0.5
                bx, by = x1 + off * math.cos(ang), y1 + off * math.sin(ang)
                cv.fill(_disk(bx, by, rb + wl), wall_hu)
                cv.fill(_disk(bx, by, rb), -1000.0)


# ------------------------------------------------------------------------- thorax
def _thorax(cv: _Canvas, rng) -> None:
    u = rng.uniform
    hu = _hu_table(rng)
    width = u(310, 375)
    body, b_post = _place_body(cv, rng, width, u(0.6, 0.73), u(2.0, 2.5), u(2.4, 3.2))
    _table(cv, rng, body, hu)

    skin = u(1.5, 2.5)
    t0 = float(np.clip(3 + (width - 310) * 0.2 + rng.gamma(2.0, 4.0), 3, 40))
    fat = _Ang(t0, [(k, t0 * 0.08 * rng.standard_normal(), u(0, 6.3)) for k in (1, 2, 3)],
               [(-math.pi / 2, 1.5, t0 * u(0.1, 0.4)), (math.pi / 2, 2.0, -t0 * u(0.2, 0.5))])
    t_post = float(fat(math.pi / 2))
    y_cn = b_post - skin - t_post - u(30, 40)
    vb_a, vb_b = u(15, 19), u(12, 15)
    canal_a, canal_b = u(7.0, 8.5), u(6.5, 8.0)
    x0 = u(-3, 3)
    y_vb = y_cn - canal_b - 2.2 - vb_b
    rib_layer = u(9, 12)
    m_lat = u(6, 12)
    m_post = (b_post - skin - t_post) - (y_cn + u(2, 8)) - rib_layer
    pec = u(5, 18)
    scap = rng.random() < 0.75
    m_bumps = [(math.pi / 2, u(6, 9), m_post - m_lat),
               (-math.pi / 2 + 0.7, 8.0, pec), (-math.pi / 2 - 0.7, 8.0, pec),
               (-math.pi / 2, 200.0, -(m_lat - 2.0))]
    if scap:
        for t in (u(40, 55) * _DEG, math.pi - u(40, 55) * _DEG):
            m_bumps.append((t, 12.0, u(12, 22)))
    muscle = _Ang(m_lat, [(2, u(-1.0, 1.0), u(0, 6.3))], m_bumps)
    notch = (y_cn + 5) - (y_vb + vb_b * 0.1)
    cavity_extra = _Ang(rib_layer, [], [(math.pi / 2, 30.0, notch)])

    # breasts: extra fat and gland over the anterior chest wall
    breasts = []
    if rng.random() < 0.45:
        rb = u(30, 65)
        for sgn in (1, -1):
            t = -math.pi / 2 + sgn * u(30, 42) * _DEG
            px, py = body.point(t, rb * u(0.1, 0.3))
            breasts.append(_Blob(float(px), float(py), rb * u(1.2, 1.5), rb * u(0.55, 0.75),
                                 rot=t + math.pi / 2, rel=_Ang(0, _harm(rng, 3, 0.04))))
        for br in breasts:
            cv.layers(br, [(0.0, hu.skin, ()), (skin, hu.subq, TEX_FAT)])
    cavity = _wall(cv, rng, body, hu, skin, fat, muscle, cavity_extra)
    for br in breasts:
        # fibroglandular tissue: densest behind the nipple, mixed with fat
        gland = _Diff(br.inset(u(5, 12)), body.inset(_Ang(skin) + fat))
        dens = u(0.3, 1.2)
        win = cv.window(gland.bbox)
        if win is not None:
            f = gland.f(win.x, win.y)
            core = np.clip(-f / 12.0, 0, 1)
            pattern = cv.texture(win, ((T_COARSE, 0.5), (T_MID, 0.45), (T_FINE, 0.15)))
            frac = np.clip(core * (dens + pattern) - 0.15, 0, 1)
            cv.paint(win, cv.mask(f) * frac, u(25, 45))

    # fat plane between pectoral muscles and the rib layer
    _fat_line(cv, body, -math.pi / 2 - 1.3, -math.pi / 2 - 0.15,
              lambda t: skin + fat(t) + muscle(t), hu, r=u(0.8, 1.6))
    _fat_line(cv, body, -math.pi / 2 + 0.15, -math.pi / 2 + 1.3,
              lambda t: skin + fat(t) + muscle(t), hu, r=u(0.8, 1.6))

    # lungs: the whole cavity first, denser toward the back
    y_top, y_bot = cavity.bbox[2], cavity.bbox[3]
    lung_hu = hu.lung

    def lung_value(x, y):
        d = np.clip((y - y_top) / (y_bot - y_top), 0, 1)
        return lung_hu + hu.lung_grad * d**2 + 0.0 * x

    cv.fill(cavity, lung_value, ((T_FINE, 10.0), (T_MID, 8.0), (T_COARSE, 6.0)))

    # mediastinum geometry
    r_ao = u(9, 13)
    x_ao = x0 + vb_a * u(0.55, 0.85) + r_ao * 0.5
    y_ao = y_vb - vb_b * u(0.4, 0.8) - r_ao * 0.6
    r_es = u(6, 8.5)
    x_es, y_es = x0 + u(-5, 3), y_vb - vb_b - r_es - u(2, 5)
    x_az, y_az = x0 - u(8, 14), y_vb - vb_b - u(0, 4)
    y_sternum = -float(body.radius(np.array(-math.pi / 2))) + skin + float(fat(-math.pi / 2)) + \
        u(3, 6)
    st_b, st_a = u(5, 8), u(12, 18)
    y_cav_ant = y_sternum + 2 * st_b
    A, B = u(66, 82), u(52, 64)
    rot = -u(25, 45) * _DEG
    ext_y = math.hypot(A * math.sin(rot), B * math.cos(rot))
    y_back = min(y_es - r_es, y_ao - r_ao) - u(3, 8)
    avail = y_back - y_cav_ant - u(0, 10)
    scale = min(1.0, avail / (2 * ext_y))
    A, B, ext_y = A * scale, B * scale, ext_y * scale
    hx, hy = x0 + u(18, 36), y_back - ext_y
    rel_h, sac_off = _Ang(0, _harm(rng, 4, 0.03)), _Ang(-u(2, 5), _harm(rng, 4, 2.0, kmin=1))
    p_h = u(2.0, 2.3)
    th = np.linspace(-math.pi, math.pi, 72)
    for _ in range(12):  # shrink and move the heart until the sac fits in the chest
        heart = _Blob(hx, hy, A, B, rot=rot, p=p_h, rel=rel_h)
        sac = heart.inset(sac_off)
        out = cavity.f(*sac.point(th)) + 2.0
        if out.max() <= 0:
            break
        k = int(np.argmax(out))
        px, py = sac.point(th[k])
        nx, ny = float(px) - hx, float(py) - hy
        nn = math.hypot(nx, ny)
        hx, hy = hx - 0.5 * out[k] * nx / nn, hy - 0.5 * out[k] * ny / nn
        A, B = A * 0.97, B * 0.97
    heart_parts = _heart_layout(rng, heart, A, B)
    fat_d = u(2, 5)
    sac = _Offset(heart_parts["outline"], fat_d + 1.0)
    ant_med = _Blob(x0 + u(-5, 10), (y_cav_ant + hy) / 2, u(10, 24), (hy - y_cav_ant) / 2 + 4,
                    rel=_Ang(0, _harm(rng, 3, 0.05)))
    post_med = _Blob((x_es + x_az) / 2, y_vb - vb_b - u(4, 8), u(16, 24), u(10, 15),
                     rel=_Ang(0, _harm(rng, 3, 0.06)))
    mediastinum = _Union(sac, ant_med, post_med)

    # pulmonary veins from the left atrium into each lung
    pvs = []
    lax, lay = heart_parts["la_centre"]
    for side in (-1, 1):
        ang = (0.0 if side > 0 else math.pi) + side * u(0, 25) * _DEG
        dx, dy = math.cos(ang), math.sin(ang)
        ln = 0.0
        while ln < 150 and mediastinum.f(np.float64(lax + ln * dx), np.float64(lay + ln * dy)) < 0:
            ln += 2.0
        ln += u(8, 20)
        ex, ey = lax + ln * dx, lay + ln * dy
        if cavity.inside(ex, ey, 5.0):
            pvs.append(((lax, lay), (ex, ey), (dx, dy), u(4.0, 6.0)))

    # pulmonary vessel trees (arteries with their bronchi, veins), fine vessel dots, fissures
    art_hu = {"unenhanced": hu.left, "arterial": hu.right, "portal": hu.right}[hu.phase]
    for side in (-1, 1):
        arteries: list = []
        veins: list = []
        for _ in range(int(rng.integers(4, 7))):
            # start at the mediastinal border, from the heart or the posterior mediastinum
            cx0, cy0 = (hx, hy) if rng.random() < 0.6 else (x0, y_vb - vb_b - 10)
            ang = (0 if side > 0 else math.pi) + u(-70, 70) * _DEG
            dx, dy = math.cos(ang), math.sin(ang)
            sx, sy = cx0, cy0
            for _step in range(80):
                sx, sy = sx + 2 * dx, sy + 2 * dy
                if mediastinum.f(np.float64(sx), np.float64(sy)) > 1.0:
                    break
            if cavity.inside(sx, sy, 3.0):
                _grow(rng, cavity, mediastinum, sx, sy, dx, dy, u(2.5, 4.5), 0, arteries,
                      r_min=0.5, margin=4.0, max_segs=len(arteries) + 70, length=(3.0, 7.0))
        for (_, _), (ex, ey), (dx, dy), r in pvs:
            if (ex - hx) * side > 0:
                _grow(rng, cavity, mediastinum, ex, ey, dx, dy, r * 0.7, 1, veins, r_min=0.5,
                      margin=4.0, max_segs=60, length=(3.0, 7.0))
        # smaller trees entering the plane away from the hila
        xs_lo, xs_hi = (cavity.bbox[0], x0) if side < 0 else (x0, cavity.bbox[1])
        for _ in range(int(rng.integers(12, 24))):
            sx, sy = u(xs_lo, xs_hi), u(y_top, y_bot)
            if cavity.inside(sx, sy, 8.0) and mediastinum.f(np.float64(sx), np.float64(sy)) > 5:
                ang = math.atan2(sy - hy, sx - hx) + rng.normal(0, 0.5)
                segs = arteries if rng.random() < 0.5 else veins
                _grow(rng, cavity, mediastinum, sx, sy, math.cos(ang), math.sin(ang),
                      u(0.9, 2.2), 1, segs, r_min=0.5, margin=4.0, max_segs=len(segs) + 40,
                      length=(3.0, 7.0))
        wall_hu = u(-50, 20)
        _draw_tree(cv, rng, arteries, art_hu, p_plane=0.3, bronchi=True, wall_hu=wall_hu)
        _draw_tree(cv, rng, veins, hu.left, p_plane=0.3, bronchi=False)
        x_lo, x_hi = (cavity.bbox[0], x0) if side < 0 else (x0, cavity.bbox[1])
        for _ in range(int(rng.integers(80, 160))):
            x, y = u(x_lo, x_hi), u(y_top, y_bot)
            if cavity.inside(x, y, 5.0) and mediastinum.f(np.float64(x), np.float64(y)) > 3:
                a = math.atan2(y - hy, x - hx) + rng.normal(0, 0.3)
                cv.dot(x, y, u(0.3, 0.9), art_hu, elong=u(1, 1.6), direction=(math.cos(a),
                                                                               math.sin(a)))
        # major fissure: from the hilum region to the anterolateral chest wall
        if rng.random() < 0.7:
            t_end = (-u(20, 45) * _DEG) if side > 0 else (math.pi + u(20, 45) * _DEG)
            ex, ey = cavity.point(t_end, 0.5)
            sx, sy = hx + side * u(20, 45), y_vb - vb_b - u(0, 15)
            mx, my = (sx + float(ex)) / 2 + u(-10, 10), (sy + float(ey)) / 2 + u(5, 20)
            pts = _spline([(sx, sy), (mx, my), (float(ex), float(ey))], 16)
            keep = [cavity.inside(px, py, 0.5) and
                    mediastinum.f(np.float64(px), np.float64(py)) > 0 for px, py in pts]
            pts = pts[np.array(keep)]
            if len(pts) > 2:
                cv.tube(pts, 0.3, 0.0, alpha=0.9)
    # dependent subpleural density in some patients
    if rng.random() < 0.35:
        for side in (-1, 1):
            th = np.linspace(*((u(60, 75), u(100, 115)) if side > 0 else (u(65, 80), u(105, 120))),
                             16) * _DEG
            if side < 0:
                th = math.pi - th
            w = u(2, 6) * np.sin(np.linspace(0, math.pi, 16)) ** 0.5
            cv.tube(np.c_[cavity.point(th, w + 0.3)], np.maximum(w, 0.05), u(-500, -250),
                    ((T_MID, 40.0),))

    # liver dome in the right base
    if rng.random() < 0.3:
        dx_, dy_ = cavity.point(math.pi - u(20, 65) * _DEG, -u(0, 25))
        rd = u(40, 75)
        dome = _Blob(float(dx_), float(dy_), rd, rd * u(0.7, 1.0), rot=u(0, math.pi),
                     rel=_Ang(0, _harm(rng, 3, 0.05)))
        cv.fill(_Inter(dome, cavity.inset(0.5), _Diff(dome, mediastinum)), hu.liver, TEX_ORGAN)

    # mediastinal fat, pulmonary veins, great vessels
    cv.fill(mediastinum, hu.fat, TEX_FAT)
    for (sx, sy), (ex, ey), _, r in pvs:
        cv.tube([(sx, sy), (ex, ey)], [r, r * 0.8], hu.left, TEX_BLOOD)
    _heart(cv, rng, hu, heart_parts, fat_d)
    cv.fill(_disk(x_ao, y_ao, r_ao + 1.0), hu.muscle)
    cv.fill(_disk(x_ao, y_ao, r_ao), hu.aorta, TEX_BLOOD)
    if hu.age > 0.5 and rng.random() < 0.6:
        a = u(0, 2 * math.pi)
        cv.tube([(x_ao + (r_ao + 0.5) * math.cos(a + d), y_ao + (r_ao + 0.5) * math.sin(a + d))
                 for d in np.linspace(0, u(0.2, 0.7), 4)], u(0.6, 1.2), hu.calcium)
    cv.fill(_disk(x_es, y_es, r_es), hu.muscle - 5, TEX_MUSCLE)
    if rng.random() < 0.6:
        cv.fill(_disk(x_es + u(-2, 2), y_es + u(-2, 2), u(1.0, 3.0)), -1000.0)
    cv.fill(_disk(x_az, y_az, u(3, 4.5)), hu.ivc, TEX_BLOOD)

    # sternum and costal cartilages
    sternum = _Blob(x0 + u(-2, 2), y_sternum + st_b, st_a, st_b, rel=_Ang(0, _harm(rng, 3, 0.05)))
    cv.layers(sternum, [(0.0, hu.cortical, ((T_FINE, 40.0),)), (1.3, hu.marrow, TEX_BONE)])

    # ribs: long oblique sections at the back, short ovals laterally, cartilage in front
    depth = lambda t: skin + fat(t) + muscle(t) + rib_layer * 0.5  # noqa: E731
    for sgn in (1, -1):
        t_start = 90 - u(12, 18)
        ths = []
        t = t_start
        while t > -75:
            ths.append(t)
            t -= u(26, 42)
        for t in ths:
            post = t > 35
            half = (u(9, 16) if post else u(3, 7)) * _DEG
            th_mid = t * _DEG
            th_a, th_b = th_mid - half, th_mid + half
            if sgn < 0:
                th_a, th_b = math.pi - th_b, math.pi - th_a
            r = u(3.5, 5.5)
            if t < -50:
                _rib_arc(cv, body, th_a, th_b, depth, r * 1.1, hu, cartilage=True,
                         calcified=rng.random() < hu.age)
            else:
                _rib_arc(cv, body, th_a, th_b, depth, r, hu)
        if scap:
            t0s = u(38, 50) * _DEG
            th = np.linspace(t0s - u(12, 20) * _DEG, t0s + u(12, 20) * _DEG, 10)
            if sgn < 0:
                th = math.pi - th
            d = lambda t: skin + fat(t) + muscle(t) * u(0.45, 0.6)  # noqa: E731
            pts = np.c_[body.point(th, d)]
            thick = u(1.5, 3.0) * np.r_[np.linspace(1.6, 1.0, 4), np.ones(6)]
            _bone_tube(cv, pts, thick, hu, shell=1.0)

    _spine(cv, rng, hu, x0, y_vb, vb_a, vb_b, canal_a, canal_b, True, u(22, 32))


def _heart_layout(rng, heart: _Blob, A: float, B: float) -> dict:
    """A four-chamber section inside the guide ellipse ``heart`` (frame u: base to
    apex, v: toward the left ventricle); the outline is the union of the chambers
    grown by their wall thickness."""
    u = rng.uniform
    c, s, hx, hy, rot = heart.c, heart.s, heart.cx, heart.cy, heart.rot

    def at(uu, vv):
        return hx + c * uu - s * vv, hy + s * uu + c * vv

    def ell(uc, vc, a, b, egg=0.0, turn=0.0):
        return _Blob(*at(uc * A, vc * B), a * A * 1.08, b * B * 1.08, rot=rot + turn * _DEG,
                     rel=_Ang(0, _harm(rng, 5, 0.025) + [(1, egg, math.pi)]))

    lv = ell(u(0.12, 0.25), u(0.25, 0.35), u(0.52, 0.62), u(0.26, 0.32), u(0.04, 0.1),
             u(-8, 8))
    rv = ell(u(0.05, 0.2), -u(0.38, 0.48), u(0.45, 0.55), u(0.28, 0.36), u(0.0, 0.1),
             u(-10, 5))
    la = ell(-u(0.55, 0.68), u(0.12, 0.3), u(0.28, 0.36), u(0.36, 0.46))
    ra = ell(-u(0.45, 0.6), -u(0.48, 0.6), u(0.3, 0.38), u(0.28, 0.38))
    w_lv, w_rv, w_a, sep = u(9, 13), u(3, 5), u(2, 3), u(8, 12)
    outline = _Union(lv.inset(-w_lv), rv.inset(-w_rv), la.inset(-w_a), ra.inset(-w_a),
                     smooth=u(8, 14))
    chambers = [
        ("la", _Diff(_Diff(la, lv.inset(-3.5)), rv.inset(-3.0)), "left"),
        ("ra", _Diff(_Diff(_Diff(ra, la.inset(-2.5)), rv.inset(-3.0)), lv.inset(-4.0)), "right"),
        ("lv", lv, "left"),
        ("rv", _Diff(rv, lv.inset(-sep)), "right"),
    ]
    valves = []
    if rng.random() < 0.7:  # diastole: open atrioventricular valves
        for atrium, ventricle, side in ((la, lv, "left"), (ra, rv, "right")):
            r = min(ventricle.b, atrium.a) * u(0.35, 0.5)
            cap = _Capsule((atrium.cx, atrium.cy), (ventricle.cx, ventricle.cy), r)
            valves.append((_Inter(cap, _Union(atrium, ventricle.inset(-4.0)),
                                  _Offset(outline, -2.0)), side))
    papillary = []
    for t in (math.pi / 2 + u(-0.9, -0.4), math.pi / 2 + u(0.2, 0.6)):
        px, py = lv.point(t, u(2.5, 4.5))
        papillary.append(_Blob(float(px), float(py), u(2.5, 4.5), u(2, 3.5), rot=rot + t))
    u_av = 0.5 * ((lv.cx - hx) * c + (lv.cy - hy) * s - lv.a + (la.cx - hx) * c +
                  (la.cy - hy) * s + la.a)
    grooves = [at(u_av, B), at(u_av, -B), at(A, (lv.b * 0.0 - sep) + (rv.b * 0.0))]
    return {"outline": outline, "chambers": chambers, "valves": valves, "papillary": papillary,
            "grooves": grooves, "la_centre": (la.cx, la.cy)}


def _surface(shape: _Shape, x, y, dx, dy, step=1.0, limit=200.0):
    """First point outside ``shape`` from ``(x, y)`` along ``(dx, dy)``."""
    n = math.hypot(dx, dy)
    dx, dy = dx / n, dy / n
    t = 0.0
    while t < limit and shape.f(np.float64(x + t * dx), np.float64(y + t * dy)) < 0:
        t += step
    return x + t * dx, y + t * dy


def _heart(cv, rng, hu, parts: dict, fat_d: float) -> None:
    u = rng.uniform
    outline = parts["outline"]
    # pericardium, epicardial fat (thicker in the grooves), myocardium, chambers
    cv.fill(_Offset(outline, fat_d + u(0.6, 1.0)), hu.muscle, soft=1.5, alpha=0.85)
    cv.fill(_Offset(outline, fat_d), hu.fat, TEX_FAT)
    hx, hy = (outline.bbox[0] + outline.bbox[1]) / 2, (outline.bbox[2] + outline.bbox[3]) / 2
    surf = [_surface(outline, hx, hy, gx - hx, gy - hy) for gx, gy in parts["grooves"]]
    for sx, sy in surf:
        cv.fill(_Blob(sx, sy, u(5, 9), u(4, 7), rot=math.atan2(sy - hy, sx - hx)), hu.fat,
                TEX_FAT)
    cv.fill(outline, hu.myo, TEX_MUSCLE)
    tex = ((T_MID, 6.0), (T_COARSE, 10.0 if hu.phase == "arterial" else 3.0))
    for _, shape, side in parts["chambers"]:
        cv.fill(shape, hu[side], tex)
    for shape, side in parts["valves"]:
        cv.fill(shape, hu[side], tex)
    for pm in parts["papillary"]:
        cv.fill(pm, hu.myo, TEX_MUSCLE)
    for sx, sy in surf:  # coronary arteries just outside the myocardium
        d = math.hypot(sx - hx, sy - hy)
        r = u(1.2, 2.0)
        cx, cy = hx + (sx - hx) * (d + r + 0.8) / d, hy + (sy - hy) * (d + r + 0.8) / d
        cv.fill(_disk(cx, cy, r), hu.left, TEX_BLOOD)
        if hu.age > 0.6 and rng.random() < 0.5:
            cv.fill(_disk(cx + u(-1, 1), cy + u(-1, 1), u(0.6, 1.5)), hu.calcium)


# ------------------------------------------------------------------------- head and neck
TEX_BRAIN = ((T_FINE, 1.5), (T_MID, 1.5), (T_COARSE, 1.0))
TEX_TRAB = ((T_FINE, 12.0), (0.55, 1.0, "trabecular"), (T_COARSE, 12.0))


def _brain_table(rng, hu) -> _HU:
    """Per-seed brain values (HU): grey 36-44, white 24-31 (grey-white contrast
    about 7-15 HU), deep grey between them, CSF 2-12, falx, calcifications."""
    u = rng.uniform
    boost = 0.0 if hu.phase == "unenhanced" else u(1.0, 4.0)
    white = u(24, 31) + boost
    return _HU(grey=white + u(8, 14), white=white, deep=white + u(5, 10),
               csf=u(2, 12), falx=u(55, 90), calc=u(150, 600), trab=u(150, 260),
               diploe=u(380, 700) - 120 * hu.age, petrous=u(1500, 1900),
               vitreous=u(5, 15), lens=u(90, 130), nerve=u(28, 38),
               sinus=hu.vessel if hu.phase != "unenhanced" else u(45, 60),
               atrophy=float(np.clip(hu.age + u(-0.3, 0.3), 0, 1)))


def _head_holder(cv, rng, head: _Blob, hu) -> None:
    """A curved head cradle behind the head: foam pad and a thin shell."""
    u = rng.uniform
    half = u(55, 80) * _DEG
    th = np.linspace(math.pi / 2 - half, math.pi / 2 + half, 25)
    gap, pad = u(1.0, 4.0), u(8, 16)
    cv.tube(np.c_[head.point(th, -(gap + pad / 2))], pad / 2, hu.foam)
    cv.tube(np.c_[head.point(th, -(gap + pad + 1.2))], u(1.0, 1.6), hu.table)


def _air_cells(cv, rng, region: _Shape, bone: float, r_lo: float, r_hi: float,
               count: int, fluid: float | None = None) -> None:
    """Bone-walled air cells (ethmoid, mastoid): bone over ``region``, then air disks
    inside it (some filled with fluid or mucosa)."""
    cv.fill(region, bone, TEX_BONE)
    x0, x1, y0, y1 = region.bbox
    for _ in range(count):
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        r = rng.uniform(r_lo, r_hi)
        if region.inside(x, y, r * 0.6):
            value = -1000.0 if fluid is None or rng.random() > 0.1 else fluid
            cv.fill(_disk(x, y, r), value)


def _head(cv: _Canvas, rng) -> None:
    """Axial head slice from the skull base (lvl 0: orbits, sinuses, petrous bones,
    posterior fossa) to the vertex (lvl 1: centrum semiovale)."""
    u = rng.uniform
    hu = _hu_table(rng)
    br = _brain_table(rng, hu)
    lvl = u(0, 1)
    shrink = 1.0 - 0.3 * max(0.0, lvl - 0.72) / 0.28
    a, b = u(68, 80) * shrink, u(86, 100) * shrink
    rel = _Ang(0.0, _harm(rng, 6, 0.015), [(-math.pi / 2, 4.0, u(-0.04, 0.02)),
                                          (math.pi / 2, 3.0, u(0.0, 0.04))])
    p_ant, p_post = u(2.0, 2.3), u(1.9, 2.2)
    head = _Blob(0.0, 0.0, a, b, p=p_ant, p2=p_post, rel=rel)
    cv.set_frame(u(-6, 6), u(-8, 8), u(-7, 7) * _DEG)
    _head_holder(cv, rng, head, hu)

    skin, scalp_fat = u(1.5, 2.5), u(1.0, 4.0)
    temporalis = u(3, 9) if lvl < 0.75 else u(0, 2)
    galea = _Ang(u(0.8, 1.5), [], [(0.0, 6.0, temporalis), (math.pi, 6.0, temporalis)])
    o_skull = _Ang(skin + scalp_fat) + galea
    t_out, t_in = u(1.2, 2.2), u(0.8, 1.6)
    diploe = _Ang(u(1.5, 4.0), _harm(rng, 4, 0.15),
                  [(-math.pi / 2, 3.0, u(1, 3)), (math.pi / 2, 3.0, u(1, 4)),
                   (0.0, 5.0, -u(0.5, 1.2)), (math.pi, 5.0, -u(0.5, 1.2))])
    o_dip = o_skull + t_out
    o_in = o_dip + diploe
    o_dura = o_in + t_in
    csf_t = u(0.8, 2.0) + 3.0 * br.atrophy
    o_brain = o_dura + csf_t
    cv.layers(head, [(0.0, hu.skin, ((T_MID, 3.0),)),
                     (skin, hu.subq, TEX_FAT),
                     (_Ang(skin + scalp_fat), hu.muscle, TEX_MUSCLE),
                     (o_skull, hu.cortical, ((T_FINE, 40.0),)),
                     (o_dip, br.diploe, TEX_BONE),
                     (o_in, hu.cortical, ((T_FINE, 40.0),)),
                     (o_dura, br.csf, ((T_MID, 2.0),)),
                     (o_brain, br.grey, TEX_BRAIN)])
    # grey-white boundary with gyral folds
    ribbon = u(2.5, 4.0)
    wm_rel = head.rel + _Ang(0.0, _harm(rng, 44, u(0.012, 0.02), kmin=12, decay=0.4))
    white = _Blob(0.0, 0.0, a, b, p=p_ant, p2=p_post, rel=wm_rel,
                  off=o_brain + ribbon + u(4, 10) * (1.0 - lvl))
    if lvl >= 0.3:
        cv.fill(white, br.white, TEX_BRAIN)
    # sulci: CSF clefts lined by cortex, from the surface inward
    n_sulci = int(rng.integers(26, 46))
    for t in np.sort(rng.uniform(-math.pi, math.pi, n_sulci)):
        depth = u(6, 16)
        ts = t + np.cumsum(rng.normal(0, 0.012, 6))
        dd = np.linspace(0.0, depth, 6)
        pts = np.c_[head.point(ts, lambda th, d=dd: o_brain(th) + d - 0.5)]
        w = u(0.3, 0.7) + 0.6 * br.atrophy
        cv.tube(pts, np.linspace(w + ribbon * 0.8, ribbon * 0.7, 6), br.grey, TEX_BRAIN)
        cv.tube(pts, np.linspace(w, 0.15, 6), br.csf)
    # interhemispheric fissure with the falx; gap for the corpus callosum at mid levels
    y_front = float(head.point(-math.pi / 2, o_brain)[1])
    y_back = float(head.point(math.pi / 2, o_brain)[1])
    segments = [(y_front, y_back)]
    if 0.35 <= lvl < 0.75:
        cut0, cut1 = y_front * u(0.25, 0.45), y_back * u(0.3, 0.5)
        segments = [(y_front, cut0), (cut1, y_back)]
    for s0, s1 in segments if lvl >= 0.3 else []:
        ys = np.linspace(s0, s1, 12)
        xs = _smooth_noise(rng, 12, 0.6, 2.0)
        cv.tube(np.c_[xs, ys], 1.0 + 1.5 * br.atrophy, br.csf)
        cv.tube(np.c_[xs, ys], u(0.3, 0.6), br.falx)
    # superior sagittal sinus at the back of the falx
    if lvl >= 0.3:
        sx, sy = head.point(math.pi / 2, o_dura + 0.5)
        cv.fill(_Blob(float(sx), float(sy) - 3.0, u(3, 5), u(3, 4.5)), br.sinus, TEX_BLOOD)
    if lvl < 0.3:
        _skull_base(cv, rng, hu, br, head, o_brain, lvl)
    elif lvl < 0.75:
        _ventricles(cv, rng, br, lvl, a, b)
    elif lvl < 0.85:  # bodies of the lateral ventricles only
        for sgn in (-1, 1):
            x = sgn * u(5, 10)
            cv.tube([(x, -u(15, 25)), (x * 1.3, 0.0), (x * 1.6, u(15, 25))],
                    u(1.5, 4.0) + 3 * br.atrophy, br.csf)


def _ventricles(cv, rng, br, lvl, a, b) -> None:
    """Lateral ventricles (frontal and occipital horns, trigones), septum, third
    ventricle, basal ganglia and thalami, with optional calcifications."""
    u = rng.uniform
    big = 1.0 + 0.8 * br.atrophy
    deep = lvl < 0.62
    if deep:
        for sgn in (-1, 1):  # lentiform nucleus, caudate head, thalamus
            cv.fill(_Blob(sgn * u(17, 24), u(-8, 2), u(5, 8), u(11, 16),
                          rot=-sgn * u(10, 25) * _DEG), br.deep, TEX_BRAIN)
            cv.fill(_Blob(sgn * u(7, 11), -u(14, 20), u(4, 6), u(6, 9)), br.deep, TEX_BRAIN)
            cv.fill(_Blob(sgn * u(6, 10), u(6, 14), u(6, 9), u(8, 12)), br.deep, TEX_BRAIN)
    sep = u(0.8, 1.6)
    for sgn in (-1, 1):
        fx, fy = sgn * (sep + u(3, 5) * big), -u(12, 22)
        cv.fill(_Blob(fx, fy, u(2.5, 4.5) * big, u(8, 13) * big,
                      rot=sgn * u(15, 35) * _DEG, p=u(1.8, 2.4)), br.csf)
        ox, oy = sgn * u(14, 22), u(18, 30)
        cv.fill(_Blob(ox, oy, u(3, 6) * big, u(8, 14) * big, rot=-sgn * u(20, 40) * _DEG),
                br.csf)
        if not deep:  # body level: horns joined along the caudate
            cv.tube([(fx, fy), (sgn * u(9, 13), 0.0), (ox, oy)], u(2.0, 3.5) * big, br.csf)
        if rng.random() < 0.5:  # choroid plexus calcification in the trigone
            cv.fill(_disk(ox + u(-1.5, 1.5), oy + u(-2, 2), u(1.0, 2.5)), br.calc)
    if deep:
        cv.fill(_Blob(0.0, u(2, 8), u(1.0, 2.5) * big, u(7, 11)), br.csf)
        if rng.random() < 0.4:  # pineal calcification
            cv.fill(_disk(u(-1, 1), u(16, 22), u(1.0, 2.5)), br.calc)


def _skull_base(cv, rng, hu, br, head: _Blob, o_brain: _Ang, lvl: float) -> None:
    """Orbits or maxillary sinuses, nasal cavity, ethmoid / sphenoid air cells,
    petrous bones with mastoid air cells, temporal lobes, cerebellum, pons."""
    u = rng.uniform
    # posterior fossa: cerebellum with folia, pons, fourth ventricle
    yc = float(head.point(math.pi / 2, o_brain)[1])
    cer = _Blob(0.0, yc * 0.55, u(40, 52), yc * 0.42, p=2.2)
    cv.fill(cer, br.grey - 3, TEX_BRAIN)
    for k in range(int(rng.integers(8, 15))):
        t = u(0.2, math.pi - 0.2)
        r0 = u(0.3, 0.9)
        pts = [(cer.cx + cer.a * r0 * math.cos(t + d), cer.cy + cer.b * r0 * math.sin(t + d))
               for d in np.linspace(-0.5, 0.5, 6)]
        cv.tube(pts, u(0.4, 1.0), br.white if k % 2 else br.csf)
    pons = _Blob(0.0, yc * 0.05, u(13, 17), u(11, 14), p=2.4)
    cv.fill(pons, br.white + 2, TEX_BRAIN)
    cv.fill(_Blob(0.0, yc * 0.22, u(3, 6), u(2, 4)), br.csf)
    # petrous ridges (dense, oblique) and mastoid air cells behind them
    for sgn in (-1, 1):
        p0 = (sgn * u(12, 18), yc * u(0.0, 0.1))
        p1 = (sgn * u(42, 52), yc * u(0.35, 0.5))
        cv.tube([p0, p1], [u(3, 5), u(6, 9)], br.petrous, ((T_FINE, 60.0),))
        mast = _Blob(sgn * u(48, 58), yc * u(0.45, 0.6), u(7, 11), u(9, 13))
        _air_cells(cv, rng, mast, br.diploe, 0.8, 2.2, int(rng.integers(15, 30)))
    # temporal lobes in the middle cranial fossa
    for sgn in (-1, 1):
        tl = _Blob(sgn * u(34, 42), -yc * u(0.1, 0.3), u(15, 20), u(18, 26),
                   rot=sgn * u(0, 20) * _DEG)
        cv.fill(tl, br.grey, TEX_BRAIN)
        cv.fill(tl.inset(u(4, 6)), br.white, TEX_BRAIN)
    # sphenoid body and sinus, clivus
    sph = _Blob(0.0, -yc * u(0.25, 0.4), u(10, 15), u(8, 12))
    cv.fill(sph, hu.cortical, ((T_FINE, 40.0),))
    cv.fill(sph.inset(u(1.0, 2.0)), -1000.0 if rng.random() < 0.85 else br.nerve + 10)
    cv.fill(_Blob(0.0, sph.cy + sph.b + u(4, 8), u(5, 8), u(4, 7)), hu.cortical, TEX_BONE)
    y_face = float(head.point(-math.pi / 2, 0.0)[1])
    if lvl >= 0.12:  # orbits with globes, lenses, optic nerves; ethmoid between them
        for sgn in (-1, 1):
            gx, gy = sgn * u(28, 34), y_face + u(16, 22)
            rg = u(11, 12.5)
            cone = _Blob(gx * 0.85, gy + rg * 0.9, u(13, 16), u(18, 24),
                         rot=-sgn * u(15, 25) * _DEG)
            cv.fill(cone.inset(-1.5), hu.cortical, ((T_FINE, 40.0),))
            cv.fill(cone, hu.fat, TEX_FAT)
            cv.tube([(gx, gy), (gx * 0.45, gy + u(25, 35))], u(1.8, 2.5), br.nerve)
            for mx in (-1, 1):  # rectus muscles
                cv.fill(_Blob(gx + mx * u(8, 11), gy + u(10, 16), u(2, 3), u(8, 12),
                              rot=mx * u(5, 15) * _DEG), hu.muscle, TEX_MUSCLE)
            cv.fill(_disk(gx, gy, rg), hu.muscle + 5)
            cv.fill(_disk(gx, gy, rg - u(0.8, 1.3)), br.vitreous, ((T_MID, 2.0),))
            cv.fill(_Blob(gx, gy - rg + u(2.5, 3.5), u(3.5, 4.5), u(1.5, 2.2)), br.lens)
        eth = _Blob(0.0, y_face + u(22, 30), u(9, 13), u(16, 22))
        _air_cells(cv, rng, eth, hu.cortical * 0.6, 1.2, 3.0, int(rng.integers(12, 25)),
                   fluid=hu.muscle)
    else:  # maxillary sinuses, nasal cavity with septum and turbinates
        for sgn in (-1, 1):
            ms = _Blob(sgn * u(20, 26), y_face + u(22, 30), u(11, 15), u(13, 18),
                       rot=sgn * u(0, 15) * _DEG)
            cv.fill(ms.inset(-1.5), hu.cortical, ((T_FINE, 40.0),))
            cv.fill(ms, hu.muscle - 10 if rng.random() < 0.15 else -1000.0)
            if rng.random() < 0.3:  # mucosal thickening
                cv.fill(_Diff(ms, ms.inset(u(1.5, 4.0))), hu.muscle - 15)
        nc = _Blob(0.0, y_face + u(18, 26), u(7, 10), u(18, 24))
        cv.fill(nc, -1000.0)
        cv.tube([(0.0, nc.cy - nc.b), (u(-1.5, 1.5), nc.cy), (0.0, nc.cy + nc.b)], u(0.6, 1.1),
                hu.cortical * 0.7)
        for sgn in (-1, 1):
            cv.fill(_Blob(sgn * nc.a * 0.55, nc.cy + u(-4, 4), u(2, 3.5), u(9, 14)),
                    hu.muscle, TEX_MUSCLE)


def _neck(cv: _Canvas, rng) -> None:
    """Axial neck slice from the hyoid (lvl 1) to the thyroid (lvl 0): cervical
    vertebra with transverse foramina and cord, airway with cartilage, thyroid,
    esophagus, carotid arteries and jugular veins, neck muscles, nodes."""
    u = rng.uniform
    hu = _hu_table(rng)
    lvl = u(0, 1)
    width = u(105, 140)
    body, b_post = _place_body(cv, rng, width, u(0.82, 1.0), u(2.0, 2.4), u(2.3, 3.0))
    _table(cv, rng, body, hu)
    skin = u(1.5, 2.5)
    t0 = u(2, 10)
    fat = _Ang(t0, [(k, t0 * 0.1 * rng.standard_normal(), u(0, 6.3)) for k in (1, 2)],
               [(math.pi / 2, 2.0, t0 * u(0.0, 0.5))])
    vb_a, vb_b = u(8, 10.5), u(7, 8.5)
    canal_a, canal_b = u(10, 12.5), u(6.5, 8.0)
    x0 = u(-2, 2)
    t_post = float(fat(math.pi / 2))
    y_cn = b_post - skin - t_post - u(28, 40)
    y_vb = y_cn - canal_b - 2.2 - vb_b
    muscle = _Ang(u(5, 9), [(2, u(-1, 1), u(0, 6.3))],
                  [(math.pi / 2, 3.0, (b_post - skin - t_post) - y_cn - u(8, 14))])
    cavity = _wall(cv, rng, body, hu, skin, fat, muscle, cavity_value=hu.fat + 10)
    # trapezius / splenius / semispinalis separated by fat planes
    for k in range(3):
        d = lambda t, k=k: skin + fat(t) + muscle(t) * (0.25 + 0.22 * k)  # noqa: E731
        _fat_line(cv, body, math.pi / 2 - u(0.5, 0.9), math.pi / 2 + u(0.5, 0.9), d, hu,
                  r=u(0.5, 1.2), alpha=0.8)
    # prevertebral muscles, sternocleidomastoids, strap muscles
    for sgn in (-1, 1):
        cv.fill(_Blob(x0 + sgn * u(5, 8), y_vb - vb_b - u(2, 4), u(4, 6), u(3, 5)),
                hu.muscle, TEX_MUSCLE)
        t = -math.pi / 2 + sgn * u(45, 65) * _DEG
        px, py = body.point(t, skin + float(fat(t)) + u(6, 10))
        cv.fill(_Blob(float(px), float(py), u(12, 18), u(5, 8), rot=t + math.pi / 2,
                      rel=_Ang(0, _harm(rng, 3, 0.05))), hu.muscle, TEX_MUSCLE)
    # airway
    y_air = float(body.point(-math.pi / 2, 0.0)[1]) + skin + t0 + u(10, 18)
    larynx = lvl > 0.5
    ra = u(7, 10) if not larynx else u(8, 12)
    if larynx:  # thyroid cartilage laminae meeting anteriorly, supraglottic airway
        apex = (u(-1, 1), y_air - ra - u(2, 4))
        for sgn in (-1, 1):
            end = (sgn * u(14, 19), y_air + u(6, 12))
            cv.tube([apex, end], u(1.0, 1.8), hu.cartilage, ((T_MID, 10.0),))
            if rng.random() < hu.age:
                cv.tube([apex, end], u(0.5, 1.0), hu.calcium * u(0.6, 1.0))
        cv.fill(_Blob(0.0, y_air, ra * u(0.5, 0.8), ra, p=u(1.6, 2.2)), -1000.0)
    else:  # trachea: horseshoe cartilage ring, open posteriorly; thyroid gland
        ring = _Blob(0.0, y_air, ra + u(1.5, 2.5), ra + u(1.0, 2.0), b2=ra + 0.8)
        cv.fill(_Diff(ring, _Half(0, -1, -(y_air + ra * 0.5))), hu.cartilage,
                ((T_MID, 10.0),))
        cv.fill(_Blob(0.0, y_air, ra, ra * u(0.8, 1.0), b2=ra * u(0.6, 0.8)), -1000.0)
        thy = u(80, 120) if hu.phase == "unenhanced" else u(120, 200)
        for sgn in (-1, 1):
            lobe = _Blob(sgn * (ra + u(7, 11)), y_air + u(-2, 4), u(7, 10), u(10, 15),
                         rot=sgn * u(-20, 10) * _DEG, rel=_Ang(0, _harm(rng, 3, 0.05)))
            cv.fill(lobe, thy, TEX_ORGAN)
            if rng.random() < 0.2:  # nodule
                cv.fill(_disk(lobe.cx + u(-3, 3), lobe.cy + u(-3, 3), u(2, 5)),
                        thy - u(40, 70))
        cv.tube([(-ra - 5, y_air - ra - 1), (0.0, y_air - ra - u(3, 5)),
                 (ra + 5, y_air - ra - 1)], u(1.5, 3.0), thy, TEX_ORGAN)
    # esophagus behind the airway, left of the midline
    ex, ey = u(0, 5), y_air + ra + u(5, 9)
    cv.fill(_Blob(ex, ey, u(5, 8), u(3, 5)), hu.muscle - 5, TEX_MUSCLE)
    if rng.random() < 0.5:
        cv.fill(_disk(ex + u(-1, 1), ey, u(0.8, 2.0)), -1000.0)
    # carotid arteries and jugular veins
    for sgn in (-1, 1):
        cx, cy = sgn * (ra + u(17, 23)), y_air + u(2, 10)
        cv.fill(_disk(cx, cy, u(3.2, 4.5)), hu.aorta, TEX_BLOOD)
        cv.fill(_Blob(cx + sgn * u(7, 11), cy + u(-3, 3), u(4, 8), u(3, 6)), hu.ivc, TEX_BLOOD)
        for _ in range(int(rng.integers(0, 4))):  # lymph nodes
            nx, ny = cx + sgn * u(8, 20), cy + u(0, 25)
            if cavity.inside(nx, ny, 4.0):
                cv.fill(_Blob(nx, ny, u(2, 5), u(1.5, 3.5), rot=u(0, 3)), hu.muscle - 8,
                        ((T_MID, 3.0),))
    info = _spine(cv, rng, hu, x0, y_vb, vb_a, vb_b, canal_a, canal_b, True, u(14, 26))
    # cervical transverse processes with foramina and the vertebral arteries
    for sgn in (-1, 1):
        fx, fy = x0 + sgn * (vb_a + u(4, 6)), y_vb + u(-1, 2)
        cv.fill(_disk(fx, fy, u(4.5, 6.0)), hu.cortical, ((T_FINE, 40.0),))
        cv.fill(_disk(fx, fy, u(2.0, 3.0)), hu.aorta, TEX_BLOOD)
    cv.fill(_Blob(x0, info["y_cn"], canal_a * u(0.55, 0.65), canal_b * u(0.55, 0.7)),
            hu.cord + 2)
    if lvl > 0.85:  # mandible arch anteriorly
        th = np.linspace(-math.pi / 2 - u(0.9, 1.2), -math.pi / 2 + u(0.9, 1.2), 16)
        pts = np.c_[body.point(th, skin + t0 + u(3, 6))]
        _bone_tube(cv, pts, u(3.5, 5.5), hu, shell=u(1.5, 2.5))
