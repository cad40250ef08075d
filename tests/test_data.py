"""otbook.data: the offline digits and the named image shifts."""

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.datasets import load_digits

from otbook.data import IMAGE_TRANSFORMS, digits, transform_images


def test_digits_native_matches_sklearn():
    images, labels = digits()
    bunch = load_digits()
    np.testing.assert_allclose(images.numpy(), bunch.images / 16.0, rtol=1e-6)
    assert labels.dtype == torch.long and (labels.numpy() == bunch.target).all()


def test_digits_resized_in_unit_interval():
    images, _ = digits(size=24, dtype=torch.float64)
    assert images.shape == (1797, 24, 24) and images.dtype == torch.float64
    assert images.min() >= 0 and images.max() <= 1
    # a bilinear resampling keeps the mean brightness to within a few percent
    assert abs(images.mean() - digits()[0].double().mean()) < 0.03


def test_transforms_against_numpy():
    images, _ = digits(dtype=torch.float64)
    x = images[:50]
    np.testing.assert_array_equal(transform_images(x, "flip").numpy(), x.numpy()[:, :, ::-1])
    np.testing.assert_array_equal(transform_images(x, "rot90").numpy(),
                                  np.rot90(x.numpy(), 1, axes=(1, 2)))
    np.testing.assert_array_equal(transform_images(x, "shift").numpy(),
                                  np.roll(x.numpy(), 1, axis=2))
    blurred = transform_images(x, "blur", strength=2.0).numpy()
    ref = ndimage.gaussian_filter(x.numpy(), sigma=(0, 1.6, 1.6), mode="nearest", truncate=3.0)
    np.testing.assert_allclose(blurred, ref, atol=2e-3)
    gen = torch.Generator().manual_seed(0)
    noisy = transform_images(x, "noise", generator=gen)
    assert noisy.min() >= 0 and noisy.max() <= 1 and not torch.equal(noisy, x)
    again = transform_images(x, "noise", generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(kind="smudge"), ValueError, "kind"),
    (dict(kind="blur", strength=0.0), ValueError, "strength"),
    (dict(kind="blur", strength=float("nan")), ValueError, "strength"),
    (dict(kind="noise", generator=0), TypeError, "generator"),
])
def test_transform_bad_inputs(kwargs, exc, word):
    images, _ = digits()
    with pytest.raises(exc, match=word):
        transform_images(images[:3], **kwargs)


def test_transform_bad_images():
    with pytest.raises(ValueError, match="images"):
        transform_images(torch.zeros(3, 4), "flip")
    with pytest.raises(TypeError, match="images"):
        transform_images(torch.zeros(3, 4, 4, dtype=torch.long), "flip")
    with pytest.raises(ValueError, match="size"):
        digits(size=0)
    assert set(IMAGE_TRANSFORMS) >= {"blur", "noise", "shift", "invert", "flip"}
