"""Noise schedules."""

from __future__ import annotations

import pytest
import torch

from medrecon.solvers.schedules import check_descending, geometric, karras, vp_sigmas


def test_geometric_and_karras_endpoints_and_shape():
    g = geometric(0.01, 100.0, 5)
    torch.testing.assert_close(g, torch.tensor([100.0, 10.0, 1.0, 0.1, 0.01], dtype=torch.float64))
    k = karras(0.002, 80.0, 10)
    assert float(k[0]) == pytest.approx(80.0) and float(k[-1]) == pytest.approx(0.002)
    check_descending(k)
    # rho = 1 is linear spacing
    torch.testing.assert_close(karras(1.0, 3.0, 3, rho=1.0),
                               torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))


def test_vp_sigmas_of_ddpm():
    s = vp_sigmas()
    assert s.shape == (1000,)
    # abar_0 = 1 - 1e-4: sigma = sqrt(1e-4 / (1 - 1e-4)); sigma_T about 157 for this schedule
    assert float(s[-1]) == pytest.approx((1e-4 / (1 - 1e-4)) ** 0.5, rel=1e-9)
    assert 150 < float(s[0]) < 160
    check_descending(s)
    sub = vp_sigmas(50)
    assert sub.shape == (50,) and float(sub[0]) == float(s[0]) and float(sub[-1]) == float(s[-1])


@pytest.mark.parametrize("bad", [torch.tensor([1.0, 1.0]), torch.tensor([1.0, 2.0]),
                                 torch.tensor([1.0, float("nan")]), torch.tensor([1.0, -1.0])])
def test_check_descending_refuses(bad):
    with pytest.raises(ValueError):
        check_descending(bad)


def test_bad_arguments():
    with pytest.raises(ValueError):
        geometric(1.0, 0.5, 10)
    with pytest.raises(ValueError):
        karras(0.1, 1.0, 1)
