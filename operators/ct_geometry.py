"""CT acquisition geometry in physical units.

A :class:`CTGeometry` describes a 2D parallel-beam or flat-detector fan-beam
scan: the image grid (rows x cols of square pixels, ``pixel_size`` mm, centred on
the isocentre), the projection angles in radians, the detector (``n_detectors``
cells of ``detector_spacing`` mm, centred) and for fan beam the
source-to-isocentre and isocentre-to-detector distances in mm. Line integrals
are in mm, so an image of linear attenuation in 1/mm gives a dimensionless
sinogram.

Angle convention (ASTRA's): at angle ``theta`` the parallel rays travel along
``(sin theta, -cos theta)`` in the image plane (x to the right along columns, y up
against rows), and the fan-beam source sits at ``R (sin theta, -cos theta)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Beam = Literal["parallel", "fan"]
BEAMS: tuple[str, ...] = ("parallel", "fan")
#: limits of a geometry (refused beyond them before any operator is built): views,
#: detector cells, image side, lengths in mm and angles in radians
MAX_VIEWS = 65536
MAX_DETECTORS = 65536
MAX_IMAGE_SIDE = 8192
LENGTH_RANGE = (1e-4, 1e5)
MAX_ABS_ANGLE = 1e4


def _length(name: str, value: object) -> float:
    """``value`` as a length in mm within :data:`LENGTH_RANGE`, else ``ValueError``."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not (math.isfinite(number) and LENGTH_RANGE[0] <= number <= LENGTH_RANGE[1]):
        raise ValueError(f"geometry field {name!r}: must be a length in mm between "
                         f"{LENGTH_RANGE[0]:g} and {LENGTH_RANGE[1]:g}, got {value}")
    return number


def angles_over(n_views: int, turn: Literal["half", "full"] = "half") -> np.ndarray:
    """``n_views`` equally spaced angles over a half ``[0, pi)`` or full turn ``[0, 2 pi)``."""
    if not 1 <= n_views <= MAX_VIEWS:
        raise ValueError(f"number of views must be 1 to {MAX_VIEWS}, got {n_views}")
    if turn not in ("half", "full"):
        raise ValueError(f"turn must be 'half' or 'full', got {turn!r}")
    span = math.pi if turn == "half" else 2 * math.pi
    return np.linspace(0.0, span, n_views, endpoint=False)


@dataclass(frozen=True)
class CTGeometry:
    """A 2D CT scan geometry; build one with :meth:`parallel` or :meth:`fan`.

    >>> g = CTGeometry.parallel((256, 256), n_views=60)
    >>> g.sinogram_shape
    (60, 366)
    """

    beam: Beam
    image_shape: tuple[int, int]
    angles: tuple[float, ...]
    n_detectors: int
    pixel_size: float = 1.0
    detector_spacing: float = 1.0
    source_to_isocenter: float | None = None
    isocenter_to_detector: float | None = None
    _angles_array: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_shape", tuple(int(n) for n in self.image_shape))
        object.__setattr__(self, "angles", tuple(float(a) for a in np.ravel(self.angles)))
        object.__setattr__(self, "_angles_array", np.asarray(self.angles, dtype=np.float64))
        self._validate()

    def _validate(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"geometry field {name!r}: {why}")

        if self.beam not in BEAMS:
            raise bad("beam", f"must be one of {BEAMS}, got {self.beam!r}")
        if (len(self.image_shape) != 2 or min(self.image_shape) < 1
                or max(self.image_shape) > MAX_IMAGE_SIDE):
            raise bad("image_shape", f"must be two sizes from 1 to {MAX_IMAGE_SIDE}, got "
                      f"{self.image_shape}")
        if not self.angles:
            raise bad("angles", "no projection angles")
        if len(self.angles) > MAX_VIEWS:
            raise bad("angles", f"{len(self.angles)} views, more than {MAX_VIEWS}")
        if not np.all(np.isfinite(self._angles_array)):
            raise bad("angles", "contains NaN or infinite values")
        if np.abs(self._angles_array).max() > MAX_ABS_ANGLE:
            raise bad("angles", f"values beyond +-{MAX_ABS_ANGLE:g} rad (radians expected)")
        try:
            integral = int(self.n_detectors) == self.n_detectors
        except (TypeError, ValueError, OverflowError):
            integral = False
        if not integral or not 1 <= self.n_detectors <= MAX_DETECTORS:
            raise bad("n_detectors", f"must be an integer from 1 to {MAX_DETECTORS}, got "
                      f"{self.n_detectors}")
        for name in ("pixel_size", "detector_spacing"):
            _length(name, getattr(self, name))
        if self.beam == "fan":
            for name in ("source_to_isocenter", "isocenter_to_detector"):
                if getattr(self, name) is None:
                    raise bad(name, "fan beam needs a distance in mm")
                _length(name, getattr(self, name))
            if self.field_of_view_radius >= self.source_to_isocenter:
                raise bad("source_to_isocenter", "the source lies inside the image")

    # -- constructors --------------------------------------------------------
    @classmethod
    def parallel(cls, image_shape: Sequence[int], n_views: int | None = None, *,
                 angles: Sequence[float] | np.ndarray | None = None, turn: str = "half",
                 n_detectors: int | None = None, pixel_size: float = 1.0,
                 detector_spacing: float | None = None) -> CTGeometry:
        """Parallel beam; angles as a count over a ``turn`` or as an array (radians).
        By default the detector has the pixel pitch and covers the image diagonal."""
        angles = _angles(n_views, angles, turn)
        pixel_size = _length("pixel_size", pixel_size)
        spacing = pixel_size if detector_spacing is None else _length("detector_spacing",
                                                                     detector_spacing)
        if n_detectors is None:
            diagonal = math.hypot(*image_shape) * pixel_size
            n_detectors = int(math.ceil(diagonal / spacing)) + 3
        return cls("parallel", tuple(image_shape), angles, n_detectors, pixel_size, spacing)

    @classmethod
    def fan(cls, image_shape: Sequence[int], n_views: int | None = None, *,
            angles: Sequence[float] | np.ndarray | None = None, turn: str = "full",
            source_to_isocenter: float = 500.0, isocenter_to_detector: float = 500.0,
            n_detectors: int | None = None, pixel_size: float = 1.0,
            detector_spacing: float | None = None) -> CTGeometry:
        """Flat-detector fan beam; by default a full turn, a detector pitch of the
        pixel size times the magnification, and a detector wide enough for the
        circle around the image. ``turn="short"`` spreads the views from 0 to
        ``pi + 2 delta`` (:func:`short_scan_span`), the least range that filtered
        back-projection with Parker's weights reconstructs."""
        short = turn == "short"
        if short and angles is not None:
            raise ValueError("turn='short' places the views itself; give n_views, not angles")
        angles = _angles(n_views, angles, "full" if short else turn)
        source_to_isocenter = _length("source_to_isocenter", source_to_isocenter)
        isocenter_to_detector = _length("isocenter_to_detector", isocenter_to_detector)
        pixel_size = _length("pixel_size", pixel_size)
        if detector_spacing is not None:
            detector_spacing = _length("detector_spacing", detector_spacing)
        if len(image_shape) != 2 or not all(1 <= int(n) <= MAX_IMAGE_SIDE for n in image_shape):
            raise ValueError(f"geometry field 'image_shape': must be two sizes from 1 to "
                             f"{MAX_IMAGE_SIDE}, got {tuple(image_shape)}")
        magnification = (source_to_isocenter + isocenter_to_detector) / source_to_isocenter
        spacing = pixel_size * magnification if detector_spacing is None else detector_spacing
        if n_detectors is None:
            radius = math.hypot(*image_shape) * pixel_size / 2
            if radius >= source_to_isocenter:
                raise ValueError("geometry field 'source_to_isocenter': the source lies inside "
                                 "the image")
            half_fan = math.asin(radius / source_to_isocenter)
            half_width = (source_to_isocenter + isocenter_to_detector) * math.tan(half_fan)
            n_detectors = int(math.ceil(2 * half_width / spacing)) + 3
        geometry = cls("fan", tuple(image_shape), angles, n_detectors, pixel_size, spacing,
                       source_to_isocenter, isocenter_to_detector)
        if short:  # first to last view over pi + the fan angle (Parker's short scan)
            count = len(angles)
            if count < 2:
                raise ValueError("a short scan needs at least 2 views")
            span = short_scan_span(geometry)
            geometry = geometry.with_angles(np.linspace(0.0, span, count))
        return geometry

    # -- derived quantities ----------------------------------------------------
    @property
    def angles_array(self) -> np.ndarray:
        """The angles as a float64 array (radians)."""
        return self._angles_array.copy()

    @property
    def n_views(self) -> int:
        return len(self.angles)

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        """``(n_views, n_detectors)``."""
        return (self.n_views, self.n_detectors)

    @property
    def field_of_view_radius(self) -> float:
        """Radius (mm) of the circle around the image grid."""
        return math.hypot(*self.image_shape) * self.pixel_size / 2

    @property
    def magnification(self) -> float:
        if self.beam == "parallel":
            return 1.0
        return (self.source_to_isocenter + self.isocenter_to_detector) / self.source_to_isocenter

    @property
    def angular_coverage(self) -> float:
        """Span of the angles plus one angular step (radians)."""
        a = np.sort(self._angles_array)
        step = float(np.median(np.diff(a))) if len(a) > 1 else 0.0
        return float(a[-1] - a[0] + step)

    def with_angles(self, angles: Sequence[float] | np.ndarray) -> CTGeometry:
        """The same scanner with other angles (e.g. a subset of views)."""
        return CTGeometry(self.beam, self.image_shape, tuple(np.ravel(angles)), self.n_detectors,
                          self.pixel_size, self.detector_spacing, self.source_to_isocenter,
                          self.isocenter_to_detector)

    # -- serialisation (HDF5 attributes, JSON) ---------------------------------
    def to_dict(self) -> dict:
        """Plain values (angles as a list); inverse of :meth:`from_dict`."""
        d = {"beam": self.beam, "image_shape": list(self.image_shape),
             "angles": list(self.angles), "n_detectors": self.n_detectors,
             "pixel_size": self.pixel_size, "detector_spacing": self.detector_spacing}
        if self.beam == "fan":
            d["source_to_isocenter"] = self.source_to_isocenter
            d["isocenter_to_detector"] = self.isocenter_to_detector
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> CTGeometry:
        """Build from :meth:`to_dict` output; raises ``ValueError`` naming a missing
        or bad field."""
        required = ["beam", "image_shape", "angles", "n_detectors", "pixel_size",
                    "detector_spacing"]
        if d.get("beam") == "fan":
            required += ["source_to_isocenter", "isocenter_to_detector"]
        for name in required:
            if name not in d:
                raise ValueError(f"geometry field {name!r}: missing")
        try:
            beam = str(d["beam"].decode() if isinstance(d["beam"], bytes) else d["beam"])
            return cls(beam, tuple(int(n) for n in np.ravel(d["image_shape"])),
                       tuple(float(a) for a in np.ravel(d["angles"])), int(d["n_detectors"]),
                       float(d["pixel_size"]), float(d["detector_spacing"]),
                       None if beam != "fan" else float(d["source_to_isocenter"]),
                       None if beam != "fan" else float(d["isocenter_to_detector"]))
        except (TypeError, ValueError, OverflowError, AttributeError) as exc:
            if str(exc).startswith("geometry field"):
                raise
            raise ValueError(f"geometry: {exc}") from None


def fan_angles(g: CTGeometry) -> tuple[np.ndarray, float]:
    """The fan angle ``gamma`` (radians) of each detector cell's centre ray,
    ``atan(u / (R + D))`` at detector offset ``u``, and the half fan angle that matters:
    that of the circle around the image (``asin(r / R)``) or of the detector, whichever
    is smaller."""
    R, D = g.source_to_isocenter, g.isocenter_to_detector
    u = (np.arange(g.n_detectors) - (g.n_detectors - 1) / 2) * g.detector_spacing
    gamma = np.arctan(u / (R + D))
    detector_half = math.atan((g.n_detectors / 2) * g.detector_spacing / (R + D))
    image_half = math.asin(min(g.field_of_view_radius / R, 1.0))
    return gamma, min(detector_half, image_half)


def short_scan_span(g: CTGeometry) -> float:
    """The least source-angle range (radians) between a short scan's first and last
    view: ``pi + 2 delta``, with ``delta`` the half fan angle (:func:`fan_angles`)."""
    return math.pi + 2 * fan_angles(g)[1]


def _angles(n_views: int | None, angles, turn: str) -> tuple[float, ...]:
    if (n_views is None) == (angles is None):
        raise ValueError("give either the number of views or the angles, not both")
    if angles is not None:
        values = np.ravel(angles)
        if values.size > MAX_VIEWS:
            raise ValueError(f"geometry field 'angles': {values.size} views, more than "
                             f"{MAX_VIEWS}")
        return tuple(float(a) for a in values)
    return tuple(angles_over(int(n_views), turn))  # type: ignore[arg-type]
