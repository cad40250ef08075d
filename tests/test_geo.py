"""otbook.geo and otbook.data.cities: GeoSpOT's distances between regions and greedy selection,
against POT and NumPy (haversine written out independently)."""

import itertools

import numpy as np
import ot
import pytest
import torch

import otbook as ob
from otbook.geo import unit_vectors
from tests.helpers import gen

EPS = 0.01


def haversine(p, q):
    """Angles (radians) between (lat, lon) degrees, the haversine formula, in NumPy."""
    p, q = np.radians(np.asarray(p))[:, None], np.radians(np.asarray(q))[None]
    dlat, dlon = q[..., 0] - p[..., 0], q[..., 1] - p[..., 1]
    h = np.sin(dlat / 2) ** 2 + np.cos(p[..., 0]) * np.cos(q[..., 0]) * np.sin(dlon / 2) ** 2
    return 2 * np.arcsin(np.sqrt(h))


def cosine(x, y):
    x, y = np.asarray(x), np.asarray(y)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    return 1 - x @ y.T


def regions(seed=0, sizes=(7, 5, 9, 6)):
    """Clouds of (lat, lon) around random centres."""
    g = np.random.default_rng(seed)
    out = []
    for n in sizes:
        centre = np.array([g.uniform(-60, 60), g.uniform(-180, 180)])
        out.append(torch.tensor(centre + g.normal(0, 4, (n, 2))))
    return out


def pot_value(C, eps=EPS):
    a, b = ot.unif(C.shape[0]), ot.unif(C.shape[1])
    P = ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", numItermax=100000, stopThr=1e-10)
    return float((P * C).sum())


@pytest.mark.parametrize("seed", range(2))
def test_region_distances_great_circle_against_pot(seed):
    doms = regions(seed)
    D = ob.region_distances(doms, tol=1e-9)
    pts = np.concatenate([d.numpy() for d in doms])
    scale = haversine(pts, pts).max()
    for i, j in itertools.combinations(range(len(doms)), 2):
        ref = pot_value(haversine(doms[i].numpy(), doms[j].numpy()) / scale)
        assert D[i, j].item() == pytest.approx(ref, rel=1e-6, abs=1e-9)
    assert torch.equal(D, D.T) and (D.diagonal() == 0).all()


def test_region_distances_single_points_are_the_normalised_haversine():
    pts = torch.tensor([[48.85, 2.35], [35.68, 139.69], [-33.87, 151.21], [40.71, -74.01]],
                       dtype=torch.float64)
    D = ob.region_distances([p[None] for p in pts], normalise=None)
    np.testing.assert_allclose(D.numpy(), haversine(pts, pts), atol=1e-12)
    # Paris - Tokyo on a sphere of radius 6371 km: about 9,710 km
    assert 6371 * D[0, 1].item() == pytest.approx(9712, rel=2e-3)


def test_region_distances_mixture_and_diagonal_against_pot():
    g = np.random.default_rng(3)
    doms = regions(3, sizes=(6, 8, 5))
    feats = [torch.tensor(g.normal(size=(d.shape[0], 4)) + k) for k, d in enumerate(doms)]
    w = [0.3, 0.7]
    eps = 0.05  # a domain against itself converges slowly at 0.01, in POT as here
    D = ob.region_distances([doms, feats], ["great_circle", "cosine"], weights=w,
                            diagonal=True, eps=eps, tol=1e-9)
    pts, fts = np.concatenate([d.numpy() for d in doms]), np.concatenate(feats)
    s_gc, s_cos = haversine(pts, pts).max(), cosine(fts, fts).max()
    for i, j in itertools.product(range(3), repeat=2):
        C = (w[0] * haversine(doms[i], doms[j]) / s_gc
             + w[1] * cosine(feats[i], feats[j]) / s_cos)
        assert D[i, j].item() == pytest.approx(pot_value(C, eps), rel=1e-6, abs=1e-9), (i, j)
    assert (D.diagonal() > 0).all()  # the entropic blur of a domain against itself


def test_region_distances_batches_do_not_change_the_answer():
    doms = regions(5, sizes=(4, 6, 5, 7, 3))
    full = ob.region_distances(doms, tol=1e-9)
    small = ob.region_distances(doms, tol=1e-9, pairs_per_solve=3)
    torch.testing.assert_close(full, small, rtol=1e-9, atol=1e-12)


def test_greedy_selection_against_pot():
    doms = regions(7, sizes=(8, 5, 6, 9, 4, 7))
    target, cands = doms[0], doms[1:]
    sel = ob.greedy_selection(target, cands, k=3, tol=1e-9)
    pool = np.concatenate([c.numpy() for c in cands])
    scale = haversine(target, pool).max()

    def dist(chosen):
        union = np.concatenate([cands[c].numpy() for c in chosen])
        return pot_value(haversine(target, union) / scale)

    chosen = []
    for step in range(3):
        rest = [c for c in range(len(cands)) if c not in chosen]
        values = {c: dist(chosen + [c]) for c in rest}
        best = min(values, key=values.get)
        assert sel.selected[step] == best
        assert sel.distances[step].item() == pytest.approx(values[best], rel=1e-6)
        for c in rest:
            assert sel.trials[step, c].item() == pytest.approx(values[c], rel=1e-6)
        assert all(torch.isinf(sel.trials[step, chosen]))
        chosen.append(best)


def test_greedy_selection_on_embeddings_with_cosine():
    g = gen(0)
    target = torch.randn(10, 3, generator=g, dtype=torch.float64) + torch.tensor([5.0, 0, 0])
    near = torch.randn(6, 3, generator=g, dtype=torch.float64) + torch.tensor([5.0, 0.5, 0])
    far = torch.randn(6, 3, generator=g, dtype=torch.float64) - torch.tensor([5.0, 0, 0])
    sel = ob.greedy_selection(target, [far, near], k=1, cost="cosine")
    assert sel.selected == [1] and sel.distances.shape == (1,)


def test_location_encoder_approximates_the_gaussian_kernel():
    enc = ob.LocationEncoder(20000, scales=(3.0,), generator=gen(0))
    pts = torch.tensor([[0.0, 0.0], [5.0, 5.0], [20.0, -10.0], [0.0, 60.0]])
    z = enc(pts)
    u = unit_vectors(pts)
    kernel = torch.exp(-9.0 * torch.cdist(u, u) ** 2 / 2)
    torch.testing.assert_close(z @ z.T, kernel.to(z), atol=0.03, rtol=0)
    again = ob.LocationEncoder(20000, scales=(3.0,), generator=gen(0))
    assert torch.equal(again(pts), z)
    assert z.dtype == torch.float32  # the input's dtype


def test_location_encoder_distance_saturates_with_distance():
    enc = ob.LocationEncoder(4096, scales=(4.0,), generator=gen(1))
    lons = torch.tensor([0.0, 2.0, 10.0, 40.0, 120.0], dtype=torch.float64)
    z = enc(torch.stack([torch.zeros_like(lons), lons], 1))
    d = cosine(z[:1].numpy(), z.numpy())[0]
    assert d[0] == pytest.approx(0, abs=1e-12) and d[1] < d[2] < d[3]
    assert abs(d[4] - d[3]) < 0.1  # beyond a few 1/scale radians: all equally far


def test_unit_vectors():
    u = unit_vectors(torch.tensor([[0.0, 0.0], [0.0, 90.0], [-90.0, 0.0], [45.0, 45.0]]))
    torch.testing.assert_close(u.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(u[:3], torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, -1]]),
                               atol=1e-7, rtol=0)


def test_cities():
    c = ob.data.cities()
    assert len(set(c.country.tolist())) == 62 and c.latlon.shape == (len(c.name), 2)
    assert c.latlon.dtype == torch.float64 and (c.latlon[:, 0].abs() <= 90).all()
    fr = ob.data.cities(["FR"], per_country=1, dtype=torch.float32)
    assert fr.name.tolist() == ["Paris"] and fr.latlon.dtype == torch.float32
    assert fr.latlon[0].tolist() == pytest.approx([48.853, 2.349], abs=1e-3)
    two = ob.data.cities(["JP", "BR"], per_country=5)
    assert two.country.tolist() == ["JP"] * 5 + ["BR"] * 5
    assert (two.population[:5].diff() <= 0).all()  # most populous first


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(countries=["XX"]), ValueError, "countries"),
    (dict(countries="FR"), TypeError, "countries"),
    (dict(countries=["FR", "FR"]), ValueError, "countries"),
    (dict(per_country=0), ValueError, "per_country"),
    (dict(dtype=torch.long), TypeError, "dtype"),
])
def test_cities_bad_inputs(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        ob.data.cities(**kwargs)


OK = [torch.tensor([[10.0, 20.0], [11.0, 21.0]]), torch.tensor([[-5.0, 100.0]])]


@pytest.mark.parametrize("call, exc, word", [
    (lambda: ob.region_distances([OK[0], torch.tensor([[95.0, 0.0]])]), ValueError,
     r"domains\[1\] has latitudes outside"),
    (lambda: ob.region_distances([OK[0], torch.tensor([[0.0, 1.0, 2.0]])]), ValueError,
     r"domains\[1\] must hold \(latitude, longitude\)"),
    (lambda: ob.region_distances([OK, OK], ["great_circle", "sqeuclidean"],
                                 weights=[0.5, 0.6]), ValueError, r"weights must lie on the simplex"),
    (lambda: ob.region_distances([OK, OK], ["great_circle", "sqeuclidean"],
                                 weights=[1.5, -0.5]), ValueError, r"weights\[1\]"),
    (lambda: ob.region_distances([OK, OK], ["great_circle", "sqeuclidean"], weights=[1.0]),
     ValueError, "weights must have 2 entries"),
    (lambda: ob.region_distances([OK, OK[:1]], ["great_circle", "sqeuclidean"]), ValueError,
     r"domains\[1\] must have as many domains"),
    (lambda: ob.region_distances(OK, "manhattan"), ValueError, "cost must be one of"),
    (lambda: ob.region_distances(OK, eps=0), ValueError, "eps"),
    (lambda: ob.region_distances(OK, normalise="mean"), ValueError, "normalise"),
    (lambda: ob.region_distances([]), TypeError, "domains"),
    (lambda: ob.region_distances(OK[0]), TypeError, "domains"),
    (lambda: ob.greedy_selection(torch.tensor([[91.0, 0.0]]), OK, k=1), ValueError,
     "target has latitudes outside"),
    (lambda: ob.greedy_selection(OK[0], [OK[1], torch.tensor([[0.0, 0.0], [-90.5, 3.0]])],
                                 k=1), ValueError, r"candidates\[1\] has latitudes"),
    (lambda: ob.greedy_selection(OK[0], OK, k=3), ValueError, "k must be at most 2"),
    (lambda: ob.greedy_selection(OK[0], OK, k=0), ValueError, "k"),
    (lambda: ob.greedy_selection(OK[0], OK, k=1, eps=-1.0), ValueError, "eps"),
    (lambda: ob.greedy_selection(torch.ones(3, 4), [torch.ones(2, 3)], k=1, cost="cosine"),
     ValueError, "feature dimension"),
    (lambda: ob.LocationEncoder(0), ValueError, "n_features"),
    (lambda: ob.LocationEncoder(8, scales=(1.0, -2.0)), ValueError, r"scales\[1\]"),
    (lambda: ob.LocationEncoder(8, generator=0), TypeError, "generator"),
    (lambda: ob.LocationEncoder(8)(torch.tensor([[100.0, 0.0]])), ValueError, "latlon"),
])
def test_bad_inputs_name_the_argument(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


def test_outputs_keep_dtype_and_device(device):
    doms = [d.to(device=device, dtype=torch.float32) for d in regions(2)]
    D = ob.region_distances(doms, tol=1e-4)
    assert D.device.type == device.type and D.dtype == torch.float32
    sel = ob.greedy_selection(doms[0], doms[1:], k=2, tol=1e-4)
    assert sel.distances.device.type == device.type
    enc = ob.LocationEncoder(16, generator=gen(0))
    assert enc(doms[0]).device.type == device.type
