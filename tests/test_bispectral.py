"""otbook.bispectral: rotations, polar resampling, power spectrum and bispectrum, against NumPy."""

import itertools
import math

import numpy as np
import pytest
import torch

import otbook as ob
from tests.helpers import gen


def _images(seed, n=3, h=10, w=10):
    return torch.rand(n, h, w, generator=gen(seed), dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# independent references (NumPy loops)


def _bilinear(img, x, y):
    """Bilinear value at pixel coordinates (x along the width), zero outside the image."""
    h, w = img.shape
    x0, y0 = math.floor(x), math.floor(y)
    total = 0.0
    for dx, dy in itertools.product((0, 1), (0, 1)):
        xi, yi = x0 + dx, y0 + dy
        weight = (1 - abs(x - xi)) * (1 - abs(y - yi))
        if 0 <= xi < w and 0 <= yi < h:
            total += weight * img[yi, xi]
    return total


def _polar_numpy(img, n_angles, n_radii, r_max):
    h, w = img.shape
    out = np.zeros((n_radii, n_angles))
    for i in range(n_radii):
        r = (i + 0.5) * r_max / n_radii
        for j in range(n_angles):
            t = 2 * math.pi * j / n_angles
            out[i, j] = _bilinear(img, (w - 1) / 2 + r * math.cos(t), (h - 1) / 2 + r * math.sin(t))
    return out


def _bispectrum_numpy(sig, k_max, mode):
    """sig: (R, N). Loops over the definition; real parts then imaginary parts."""
    R, N = sig.shape
    F = np.fft.fft(sig, axis=-1)
    if mode == "ring":
        B = np.array([[[F[r, a] * F[r, b] * np.conj(F[r, (a + b) % N]) for b in range(k_max)]
                       for a in range(k_max)] for r in range(R)])
    else:
        B = np.zeros((R, R, R, k_max, k_max), dtype=complex)
        for r1, r2, r3, a, b in itertools.product(range(R), range(R), range(R), range(k_max),
                                                  range(k_max)):
            B[r1, r2, r3, a, b] = F[r1, a] * F[r2, b] * np.conj(F[r3, (a + b) % N])
    B = B.ravel()
    return np.concatenate([B.real, B.imag])


# --------------------------------------------------------------------------------------------
# rotations


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotate_quarter_turns_match_rot90(k):
    x = _images(0, h=9, w=9)
    np.testing.assert_allclose(ob.rotate_images(x, 90.0 * k).numpy(),
                               torch.rot90(x, k, dims=(-2, -1)).numpy(), atol=1e-12)


def test_rotate_per_image_angles_and_identity():
    x = _images(1)
    np.testing.assert_allclose(ob.rotate_images(x, 0.0).numpy(), x.numpy(), atol=1e-12)
    out = ob.rotate_images(x, torch.tensor([0.0, 90.0, 180.0], dtype=torch.float64))
    np.testing.assert_allclose(out[1].numpy(), torch.rot90(x[1], 1).numpy(), atol=1e-12)
    np.testing.assert_allclose(out[2].numpy(), torch.rot90(x[2], 2).numpy(), atol=1e-12)


def test_rotate_against_scipy():
    from scipy import ndimage

    x = _images(2, n=1, h=15, w=15)
    ours = ob.rotate_images(x, 30.0)[0].numpy()
    ref = ndimage.rotate(x[0].numpy(), 30.0, reshape=False, order=1, mode="grid-constant")
    inner = np.s_[4:-4, 4:-4]  # away from the frame, where the two pad differently
    np.testing.assert_allclose(ours[inner], ref[inner], atol=1e-10)


# --------------------------------------------------------------------------------------------
# polar resampling


@pytest.mark.parametrize("shape", [(10, 10), (9, 12)])
def test_polar_resample_against_loops(shape):
    x = _images(3, n=2, h=shape[0], w=shape[1])
    p = ob.polar_resample(x, n_angles=12, n_radii=4)
    r_max = (min(shape) - 1) / 2
    for i in range(2):
        np.testing.assert_allclose(p[i].numpy(), _polar_numpy(x[i].numpy(), 12, 4, r_max),
                                   atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_polar_resample_turns_quarter_turns_into_shifts(k):
    x = _images(4, h=12, w=12)
    p = ob.polar_resample(x, n_angles=16, n_radii=5)
    q = ob.polar_resample(torch.rot90(x, k, dims=(-2, -1)), n_angles=16, n_radii=5)
    np.testing.assert_allclose(q.numpy(), p.roll(-4 * k, dims=-1).numpy(), atol=1e-12)


def test_polar_resample_defaults_and_dtype():
    x = _images(5, h=8, w=8).float()
    p = ob.polar_resample(x)
    assert p.shape == (3, 4, 16) and p.dtype == torch.float32


# --------------------------------------------------------------------------------------------
# spectra


def test_power_spectrum_against_numpy():
    s = torch.rand(4, 3, 10, generator=gen(6), dtype=torch.float64)
    ref = np.abs(np.fft.fft(s.numpy(), axis=-1))[..., :6] ** 2
    got = ob.power_spectrum(s, normalize=False)
    np.testing.assert_allclose(got.numpy(), ref.reshape(4, -1), rtol=1e-12)
    amp = ob.power_spectrum(s, k_max=3, root=True, normalize=False)
    np.testing.assert_allclose(amp.numpy(), np.sqrt(ref[..., :3]).reshape(4, -1), rtol=1e-12)
    unit = ob.power_spectrum(s)
    np.testing.assert_allclose(unit.norm(dim=1).numpy(), 1.0, rtol=1e-12)


@pytest.mark.parametrize("mode", ["ring", "joint"])
def test_bispectrum_against_loops(mode):
    s = torch.rand(2, 3, 7, generator=gen(7), dtype=torch.float64)
    got = ob.bispectrum(s, k_max=4, mode=mode, normalize=False)
    for i in range(2):
        np.testing.assert_allclose(got[i].numpy(), _bispectrum_numpy(s[i].numpy(), 4, mode),
                                   rtol=1e-10, atol=1e-12)
    unit = ob.bispectrum(s, k_max=4, mode=mode)
    np.testing.assert_allclose(unit.norm(dim=1).numpy(), 1.0, rtol=1e-12)


@pytest.mark.parametrize("mode", ["ring", "joint"])
def test_bispectrum_root_keeps_phases_and_scales_linearly(mode):
    s = torch.rand(2, 2, 8, generator=gen(8), dtype=torch.float64)
    b = ob.bispectrum(s, k_max=3, mode=mode, normalize=False)
    r = ob.bispectrum(s, k_max=3, mode=mode, root=True, normalize=False)
    h = b.shape[1] // 2
    zb, zr = torch.complex(b[:, :h], b[:, h:]), torch.complex(r[:, :h], r[:, h:])
    np.testing.assert_allclose(zr.abs().numpy(), zb.abs().numpy() ** (1 / 3), rtol=1e-10)
    keep = zb.abs() > 1e-8
    np.testing.assert_allclose(torch.angle(zr)[keep].numpy(), torch.angle(zb)[keep].numpy(),
                               atol=1e-10)
    r3 = ob.bispectrum(3.0 * s, k_max=3, mode=mode, root=True, normalize=False)
    np.testing.assert_allclose(r3.numpy(), 3.0 * r.numpy(), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------
# invariances: what each feature forgets


@pytest.mark.parametrize("shift", [1, 3, 6])
def test_common_shift_invariance(shift):
    s = torch.rand(3, 4, 11, generator=gen(9), dtype=torch.float64)
    t = s.roll(shift, dims=-1)
    for f in (lambda u: ob.power_spectrum(u),
              lambda u: ob.bispectrum(u, k_max=5, mode="ring"),
              lambda u: ob.bispectrum(u, k_max=5, mode="joint", root=True)):
        np.testing.assert_allclose(f(t).numpy(), f(s).numpy(), atol=1e-12)


def test_only_the_joint_bispectrum_sees_ring_alignment():
    s = torch.rand(1, 4, 12, generator=gen(10), dtype=torch.float64)
    twisted = torch.stack([s[:, r].roll(r, dims=-1) for r in range(4)], dim=1)
    for f in (ob.power_spectrum, lambda u: ob.bispectrum(u, mode="ring")):
        np.testing.assert_allclose(f(twisted).numpy(), f(s).numpy(), atol=1e-12)
    gap = (ob.bispectrum(twisted) - ob.bispectrum(s)).norm()
    assert float(gap) > 0.1


def test_the_bispectrum_sees_reflections_the_power_spectrum_does_not():
    s = torch.rand(1, 1, 9, generator=gen(11), dtype=torch.float64)
    mirror = s.flip(-1)
    np.testing.assert_allclose(ob.power_spectrum(mirror).numpy(), ob.power_spectrum(s).numpy(),
                               atol=1e-12)
    b, bm = ob.bispectrum(s, normalize=False), ob.bispectrum(mirror, normalize=False)
    h = b.shape[1] // 2  # a reflection conjugates the bispectrum (up to a shift's phase: none)
    np.testing.assert_allclose(bm[:, :h].numpy(), b[:, :h].numpy(), atol=1e-10)
    assert float((bm[:, h:] - b[:, h:]).norm()) > 1e-3


@pytest.mark.parametrize("mode", ["ring", "joint"])
def test_features_of_exact_grid_rotations_are_equal(mode):
    x = _images(12, n=4, h=16, w=16)
    feats = [ob.bispectrum(ob.polar_resample(torch.rot90(x, k, dims=(-2, -1)), n_angles=8,
                                             n_radii=3), k_max=4, mode=mode)
             for k in range(4)]
    for f in feats[1:]:
        np.testing.assert_allclose(f.numpy(), feats[0].numpy(), atol=1e-10)


def test_float32_in_float32_out():
    x = _images(13, h=12, w=12).float()
    p = ob.polar_resample(ob.rotate_images(x, 10.0), n_angles=8, n_radii=3)
    assert p.dtype == torch.float32
    assert ob.power_spectrum(p).dtype == torch.float32
    assert ob.bispectrum(p, k_max=3, root=True).dtype == torch.float32


def test_zero_images_give_zero_features():
    p = ob.polar_resample(torch.zeros(2, 8, 8), n_angles=8, n_radii=2)
    for f in (ob.power_spectrum(p), ob.bispectrum(p, root=True), ob.bispectrum(p, mode="ring")):
        assert bool(torch.isfinite(f).all()) and float(f.abs().max()) == 0.0


# --------------------------------------------------------------------------------------------
# bad inputs name the argument


@pytest.mark.parametrize("call, exc, name", [
    (lambda: ob.polar_resample(torch.rand(8, 8)), ValueError, "images"),
    (lambda: ob.polar_resample(torch.rand(1, 1, 8, 8)), ValueError, "images"),
    (lambda: ob.polar_resample(torch.rand(0, 8, 8)), ValueError, "images"),
    (lambda: ob.polar_resample(torch.full((1, 4, 4), float("nan"))), ValueError, "images"),
    (lambda: ob.polar_resample("image"), TypeError, "images"),
    (lambda: ob.polar_resample(torch.rand(1, 8, 8), n_angles=0), ValueError, "n_angles"),
    (lambda: ob.polar_resample(torch.rand(1, 8, 8), n_radii=2.5), TypeError, "n_radii"),
    (lambda: ob.polar_resample(torch.rand(1, 8, 8), r_max=-1.0), ValueError, "r_max"),
    (lambda: ob.rotate_images(torch.rand(8, 8), 10.0), ValueError, "images"),
    (lambda: ob.rotate_images(torch.rand(3, 8, 8), [1.0, 2.0]), ValueError, "degrees"),
    (lambda: ob.rotate_images(torch.rand(1, 8, 8), float("inf")), ValueError, "degrees"),
    (lambda: ob.power_spectrum(torch.rand(2, 8)), ValueError, "signals"),
    (lambda: ob.power_spectrum(torch.rand(2, 1, 8), k_max=9), ValueError, "k_max"),
    (lambda: ob.bispectrum(torch.rand(2, 8)), ValueError, "signals"),
    (lambda: ob.bispectrum(torch.rand(2, 1, 8), k_max=0), ValueError, "k_max"),
    (lambda: ob.bispectrum(torch.rand(2, 1, 8), mode="rings"), ValueError, "mode"),
])
def test_bad_inputs_name_the_argument(call, exc, name):
    with pytest.raises(exc, match=name):
        call()
