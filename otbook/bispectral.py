r"""Rotation-invariant features of images: polar resampling, power spectrum and bispectrum.

An image sampled on concentric rings becomes, ring by ring, a signal on the cyclic group
:math:`\mathbb Z/N` (``N`` angles). A rotation by a multiple of :math:`2\pi/N` shifts every ring
by the same number of steps, and the discrete Fourier transform turns that shift into a phase:
:math:`\hat f_r(k) \mapsto e^{-2\pi i k s/N}\hat f_r(k)`. Products of Fourier coefficients whose
frequencies add up to zero cancel the phase, which gives the invariants here:

* the **power spectrum** :math:`|\hat f_r(k)|^2` (frequencies ``k`` and ``-k``): invariant, but it
  forgets every phase, so it cannot tell a signal from many others (a digit from its mirror
  image, for instance);
* the **bispectrum** :math:`\hat f(k_1)\,\hat f(k_2)\,\overline{\hat f(k_1 + k_2)}` (frequencies
  ``k1``, ``k2`` and ``-(k1 + k2)``): invariant, and complete for generic signals on
  :math:`\mathbb Z/N`, so it removes the rotation and nothing else. Taken ring by ring
  (``mode="ring"``) it is invariant to rotating each ring *separately*, which forgets how the
  rings are aligned with one another; taken across rings (``mode="joint"``,
  :math:`\hat f_{r_1}(k_1)\hat f_{r_2}(k_2)\overline{\hat f_{r_3}(k_1 + k_2)}`) it is invariant
  only to rotating them all together, which is the symmetry of the image.

The features are the ones Bispectral OT compares with optimal transport (the book's chapter on
symmetry-aware dataset comparison); the official code computes the per-ring version.
"""

from __future__ import annotations

import math

import torch

from ._checks import as_tensor, check_choice, check_finite, check_positive, check_positive_int

__all__ = ["rotate_images", "polar_resample", "power_spectrum", "bispectrum"]


def _images(images, name: str = "images") -> torch.Tensor:
    t = as_tensor(images, name)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.ndim != 3:
        raise ValueError(f"{name} must have shape (n, height, width), got {tuple(t.shape)}")
    if min(t.shape) == 0:
        raise ValueError(f"{name} is empty: got shape {tuple(t.shape)}")
    return check_finite(t, name)


def _signals(signals, name: str = "signals") -> torch.Tensor:
    t = as_tensor(signals, name)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.ndim != 3:
        raise ValueError(f"{name} must have shape (n, rings, angles), got {tuple(t.shape)}; "
                         "polar_resample makes it from images")
    if min(t.shape) == 0:
        raise ValueError(f"{name} is empty: got shape {tuple(t.shape)}")
    return check_finite(t, name)


def _sample(images: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``images`` (n, h, w) at pixel coordinates ``px``, ``py`` (shape
    (a, b), x along the width), zero outside the image."""
    h, w = images.shape[-2:]
    gx = 2 * px / max(w - 1, 1) - 1
    gy = 2 * py / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], -1).expand(images.shape[0], *px.shape, 2)
    out = torch.nn.functional.grid_sample(images[:, None], grid, mode="bilinear",
                                          padding_mode="zeros", align_corners=True)
    return out[:, 0]


def rotate_images(images, degrees) -> torch.Tensor:
    """Rotate each image about its centre, with bilinear interpolation.

    Parameters
    ----------
    images : (n, h, w) tensor or array
        The images; pixels that come from outside the frame are 0.
    degrees : float or (n,) tensor or array
        Rotation angle in degrees, counterclockwise as the image is displayed (row 0 at the
        top), one for all images or one per image. A multiple of 90 degrees reproduces
        ``torch.rot90`` on square images (to round-off).

    Returns
    -------
    (n, h, w) tensor on the images' device and dtype.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.arange(9.0).reshape(1, 3, 3)
    >>> torch.allclose(ob.rotate_images(x, 90.0), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5)
    True
    """
    images = _images(images)
    n, h, w = images.shape
    theta = as_tensor(degrees, "degrees", like=images)
    if theta.ndim > 1 or (theta.ndim == 1 and theta.shape[0] != n):
        raise ValueError(f"degrees must be a number or have shape ({n},), got "
                         f"{tuple(theta.shape)}")
    theta = check_finite(theta, "degrees").to(images.device, images.dtype)
    theta = torch.deg2rad(theta).reshape(-1, 1, 1).expand(n, 1, 1)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(h, dtype=images.dtype, device=images.device) - cy,
                            torch.arange(w, dtype=images.dtype, device=images.device) - cx,
                            indexing="ij")
    # output pixel p takes the value at R(-theta) p; on screen (y down) "counterclockwise"
    # means x' = x cos + y sin, y' = -x sin + y cos for the inverse map.
    c, s = torch.cos(theta), torch.sin(theta)
    src_x = c * xx - s * yy + cx
    src_y = s * xx + c * yy + cy
    gx = 2 * src_x / max(w - 1, 1) - 1
    gy = 2 * src_y / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], -1)
    out = torch.nn.functional.grid_sample(images[:, None], grid, mode="bilinear",
                                          padding_mode="zeros", align_corners=True)
    return out[:, 0]


def polar_resample(images, *, n_angles: int = 16, n_radii: int | None = None,
                   r_max: float | None = None) -> torch.Tensor:
    r"""Sample images on concentric rings about their centre (bilinear interpolation).

    Ring ``i`` has radius :math:`r_i = (i + \tfrac12)\, r_{\max} / R` pixels and is sampled at
    the angles :math:`2\pi j / N`, ``j = 0 .. N - 1``, about the centre
    :math:`((w - 1)/2, (h - 1)/2)`. A rotation of the image by :math:`2\pi s / N` about that
    centre becomes a cyclic shift by ``s`` of every ring; with ``n_angles`` a multiple of 4, the
    quarter turns of ``torch.rot90`` are such rotations exactly.

    Parameters
    ----------
    images : (n, h, w) tensor or array
        The images.
    n_angles : int
        Samples per ring, ``N``.
    n_radii : int, optional
        Number of rings, ``R`` (default: ``min(h, w) // 2``, about one ring per pixel).
    r_max : float, optional
        Outer radius in pixels (default: ``(min(h, w) - 1) / 2``, the centre of the edge pixel).

    Returns
    -------
    (n, R, N) tensor on the images' device and dtype.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> x = torch.rand(2, 12, 12, dtype=torch.float64)
    >>> p = ob.polar_resample(x, n_angles=8, n_radii=3)
    >>> p.shape
    torch.Size([2, 3, 8])
    >>> q = ob.polar_resample(torch.rot90(x, 1, dims=(-2, -1)), n_angles=8, n_radii=3)
    >>> torch.allclose(q, p.roll(2, dims=-1)) or torch.allclose(q, p.roll(-2, dims=-1))
    True
    """
    images = _images(images)
    h, w = images.shape[-2:]
    n_angles = check_positive_int(n_angles, "n_angles")
    n_radii = max(1, min(h, w) // 2) if n_radii is None else check_positive_int(n_radii, "n_radii")
    r_max = (min(h, w) - 1) / 2 if r_max is None else check_positive(r_max, "r_max")
    kw = {"dtype": images.dtype, "device": images.device}
    radii = (torch.arange(n_radii, **kw) + 0.5) * (float(r_max) / n_radii)
    angles = torch.arange(n_angles, **kw) * (2 * math.pi / n_angles)
    px = (w - 1) / 2 + radii[:, None] * torch.cos(angles)
    py = (h - 1) / 2 + radii[:, None] * torch.sin(angles)
    return _sample(images, px, py)


def _fourier(signals: torch.Tensor, k_max: int | None) -> tuple[torch.Tensor, int]:
    n_angles = signals.shape[-1]
    K = n_angles // 2 + 1 if k_max is None else check_positive_int(k_max, "k_max")
    if K > n_angles:
        raise ValueError(f"k_max must be at most the number of angles ({n_angles}), got {K}")
    return torch.fft.fft(signals, dim=-1), K


def _normalise(feats: torch.Tensor) -> torch.Tensor:
    norm = feats.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, feats / norm.clamp_min(torch.finfo(feats.dtype).tiny), feats)


def power_spectrum(signals, *, k_max: int | None = None, root: bool = False,
                   normalize: bool = True) -> torch.Tensor:
    r"""Power spectrum of each ring, :math:`|\hat f_r(k)|^2` for ``k = 0 .. k_max - 1``.

    Invariant to cyclic shifts of each ring (so to rotations of an image by multiples of
    :math:`2\pi/N` after :func:`polar_resample`), but blind to phases.

    Parameters
    ----------
    signals : (n, R, N) tensor or array
        ``n`` samples of ``R`` signals on :math:`\mathbb Z/N` (the output of
        :func:`polar_resample`).
    k_max : int, optional
        Number of frequencies kept (default ``N // 2 + 1``: for a real signal the others are
        mirror copies).
    root : bool
        Return the amplitude :math:`|\hat f_r(k)|` (the square root) instead, which scales
        like the signal.
    normalize : bool
        Scale each sample's feature vector to unit Euclidean norm (so that the cost compares
        shapes, not overall brightness).

    Returns
    -------
    (n, R * k_max) real tensor on the signals' device and dtype.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> f = torch.tensor([[[1.0, 2.0, 0.0, 0.0]]])
    >>> ob.power_spectrum(f, normalize=False)
    tensor([[9., 5., 1.]])
    >>> bool(torch.allclose(ob.power_spectrum(f), ob.power_spectrum(f.roll(1, -1))))
    True
    """
    signals = _signals(signals)
    F, K = _fourier(signals, k_max)
    feats = F[..., :K].abs().flatten(1)
    feats = feats if root else feats.square()
    return _normalise(feats) if normalize else feats


def bispectrum(signals, *, k_max: int | None = None, mode: str = "joint", root: bool = False,
               normalize: bool = True) -> torch.Tensor:
    r"""Bispectrum of signals on :math:`\mathbb Z/N`, per ring or across rings.

    With :math:`\hat f_r` the DFT of ring ``r`` and ``k1, k2 = 0 .. k_max - 1``:

    * ``mode="ring"``: :math:`B_r(k_1, k_2) = \hat f_r(k_1)\,\hat f_r(k_2)\,
      \overline{\hat f_r(k_1 + k_2)}` (``R k_max^2`` complex numbers, the official code's
      feature, there with all ``N`` frequencies);
    * ``mode="joint"``: :math:`B_{r_1 r_2 r_3}(k_1, k_2) = \hat f_{r_1}(k_1)\,\hat f_{r_2}(k_2)\,
      \overline{\hat f_{r_3}(k_1 + k_2)}` (``R^3 k_max^2`` complex numbers).

    Frequencies are taken modulo ``N``. Both are invariant to one cyclic shift of all rings
    together; ``"ring"`` is also invariant to shifting each ring by its own amount, so it cannot
    see how the rings are aligned, and ``"joint"`` can.

    Parameters
    ----------
    signals : (n, R, N) tensor or array
        ``n`` samples of ``R`` signals on :math:`\mathbb Z/N` (the output of
        :func:`polar_resample`).
    k_max : int, optional
        Number of frequencies per index (default ``N // 2 + 1``).
    mode : {"joint", "ring"}
        Across rings or ring by ring.
    root : bool
        Replace each coefficient :math:`B = |B| e^{i\varphi}` by :math:`|B|^{1/3} e^{i\varphi}`:
        the same phases, magnitudes that scale like the signal (the bispectrum itself is cubic
        in it, so its large coefficients dominate a Euclidean cost).
    normalize : bool
        Scale each sample's feature vector to unit Euclidean norm (as the official code does).

    Returns
    -------
    (n, D) real tensor, the real parts then the imaginary parts, with ``D = 2 R^3 k_max^2``
    (``"joint"``) or ``2 R k_max^2`` (``"ring"``), on the signals' device and dtype.

    Examples
    --------
    >>> import torch, otbook as ob
    >>> f = torch.tensor([[[0.0, 1.0, 3.0, 0.0, 2.0]]], dtype=torch.float64)
    >>> b = ob.bispectrum(f, k_max=3)
    >>> b.shape
    torch.Size([1, 18])
    >>> bool(torch.allclose(b, ob.bispectrum(f.roll(2, -1), k_max=3)))
    True
    """
    signals = _signals(signals)
    mode = check_choice(mode, "mode", ("joint", "ring"))
    F, K = _fourier(signals, k_max)
    n_angles = signals.shape[-1]
    k = torch.arange(K, device=signals.device)
    low = F[..., :K]  # (n, R, K)
    high = F[..., (k[:, None] + k[None, :]) % n_angles].conj()  # (n, R, K, K)
    if mode == "ring":
        B = low[..., :, None] * low[..., None, :] * high  # (n, R, K, K)
    else:
        pair = low[:, :, None, :, None] * low[:, None, :, None, :]  # (n, R1, R2, K1, K2)
        B = pair[:, :, :, None] * high[:, None, None]  # (n, R1, R2, R3, K1, K2)
    B = B.flatten(1)
    if root:
        B = B * B.abs().clamp_min(torch.finfo(B.real.dtype).tiny).pow(-2.0 / 3.0)
    feats = torch.cat([B.real, B.imag], dim=1)
    return _normalise(feats) if normalize else feats
