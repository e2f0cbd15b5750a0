"""CT geometry and projector: physical units, FBP, rebinning, device checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medrecon.errors import DeviceUnavailableError, OperatorShapeError
from medrecon.operators.ct import CTProjector, cuda_available, rebin_fan_to_parallel
from medrecon.operators.ct_geometry import CTGeometry, angles_over


def disk(size: int, radius_px: float, value: float = 1.0) -> torch.Tensor:
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    return torch.tensor((xx**2 + yy**2 <= radius_px**2) * value, dtype=torch.float32)


@pytest.mark.parametrize("pixel_size", [0.5, 1.0, 1.7])
@pytest.mark.parametrize("beam", ["parallel", "fan"])
def test_line_integrals_are_in_mm(beam, pixel_size):
    """A disk of attenuation mu and radius r (mm): the central ray measures 2 r mu."""
    size, radius_px, mu = 128, 40.0, 0.02
    if beam == "parallel":
        g = CTGeometry.parallel((size, size), 8, pixel_size=pixel_size)
    else:
        g = CTGeometry.fan((size, size), 8, pixel_size=pixel_size,
                           source_to_isocenter=400 * pixel_size,
                           isocenter_to_detector=300 * pixel_size)
    sino = CTProjector(g)(disk(size, radius_px, mu))
    centre = sino[:, (g.n_detectors - 1) // 2 : g.n_detectors // 2 + 1].mean(dim=1)
    expected = 2 * radius_px * pixel_size * mu
    assert torch.allclose(centre, torch.full_like(centre, expected), rtol=0.02)


def test_detector_default_covers_the_image_diagonal():
    g = CTGeometry.parallel((100, 60), 4, pixel_size=0.8)
    assert g.n_detectors * g.detector_spacing >= math.hypot(100, 60) * 0.8
    f = CTGeometry.fan((100, 100), 4, source_to_isocenter=200, isocenter_to_detector=100)
    sino = CTProjector(f)(torch.ones(100, 100))
    assert float(sino[:, 0].abs().max()) == 0 and float(sino[:, -1].abs().max()) == 0


def test_geometry_round_trip_and_validation():
    g = CTGeometry.fan((32, 40), 10, source_to_isocenter=300.0, isocenter_to_detector=200.0,
                       pixel_size=0.9)
    assert CTGeometry.from_dict(g.to_dict()) == g
    assert g.with_angles(angles_over(5, "full")).n_views == 5
    with pytest.raises(ValueError, match="n_detectors"):
        CTGeometry("parallel", (8, 8), (0.0,), 0)
    with pytest.raises(ValueError, match="source_to_isocenter"):
        CTGeometry.fan((64, 64), 4, source_to_isocenter=10.0)
    with pytest.raises(ValueError, match="angles"):
        CTGeometry("parallel", (8, 8), (0.0, float("nan")), 12)
    with pytest.raises(ValueError, match="pixel_size"):
        CTGeometry.parallel((8, 8), 3, pixel_size=-1.0)
    with pytest.raises(ValueError, match="missing"):
        CTGeometry.from_dict({"beam": "fan"})


def _phantom(size=128):
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    img = ((xx / 50) ** 2 + (yy / 40) ** 2 <= 1) * 0.02
    img = img + ((xx - 15) ** 2 + (yy + 5) ** 2 <= 100) * 0.01
    return torch.tensor(img, dtype=torch.float32)


def _psnr(x, ref):
    return float(10 * torch.log10((ref.max() - ref.min()) ** 2 / torch.mean((x - ref) ** 2)))


@pytest.mark.parametrize(("filter_name", "min_psnr"), [("ram-lak", 31), ("shepp-logan", 30),
                                                       ("hann", 27)])
def test_fbp_inverts_dense_parallel_data(filter_name, min_psnr):
    """Smoother filters trade resolution for noise: lower PSNR on this sharp phantom."""
    x = _phantom()
    A = CTProjector(CTGeometry.parallel(x.shape, 180, pixel_size=0.7))
    assert _psnr(A.fbp(A(x), filter=filter_name), x) > min_psnr


def test_fbp_full_turn_and_fan_by_rebinning():
    x = _phantom()
    full = CTProjector(CTGeometry.parallel(x.shape, 360, turn="full"))
    assert _psnr(full.fbp(full(x)), x) > 28
    fan = CTProjector(CTGeometry.fan(x.shape, 360, source_to_isocenter=300,
                                     isocenter_to_detector=200))
    assert _psnr(fan.fbp(fan(x)), x) > 28
    batch = fan.fbp(torch.stack([fan(x), 2 * fan(x)]))
    assert torch.allclose(batch[1], 2 * batch[0], atol=1e-6)


def test_rebinning_needs_a_full_turn():
    g = CTGeometry.fan((32, 32), 20, turn="half", source_to_isocenter=300,
                       isocenter_to_detector=200)
    with pytest.raises(ValueError, match="full turn"):
        rebin_fan_to_parallel(torch.zeros(g.sinogram_shape), g)


def test_fbp_rejects_unknown_filter_and_wrong_shape():
    A = CTProjector(CTGeometry.parallel((16, 16), 10))
    with pytest.raises(ValueError, match="filter"):
        A.fbp(torch.zeros(A.range_shape), filter="wiener")
    with pytest.raises(OperatorShapeError, match="sinogram"):
        A.fbp(torch.zeros(10, 3))


def test_projector_choice_is_checked():
    with pytest.raises(OperatorShapeError, match="projector"):
        CTProjector(CTGeometry.parallel((16, 16), 10), projector="strip_fanflat")


@pytest.mark.skipif(cuda_available(), reason="checks the error raised without a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(DeviceUnavailableError, match="CUDA"):
        CTProjector(CTGeometry.parallel((16, 16), 10), device="cuda")


@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("beam", ["parallel", "fan"])
def test_cuda_projection_matches_cpu(beam):
    x = _phantom(64)
    g = (CTGeometry.parallel(x.shape, 30) if beam == "parallel" else
         CTGeometry.fan(x.shape, 30, source_to_isocenter=300, isocenter_to_detector=200))
    cpu, gpu = CTProjector(g), CTProjector(g, device="cuda")
    y_cpu, y_gpu = cpu(x), gpu(x.cuda()).cpu()
    assert float(torch.linalg.vector_norm(y_gpu - y_cpu) / torch.linalg.vector_norm(y_cpu)) < 0.02
    back = gpu.adjoint(y_cpu.cuda()).cpu()
    ref = cpu.adjoint(y_cpu)
    assert float(torch.linalg.vector_norm(back - ref) / torch.linalg.vector_norm(ref)) < 0.05
