"""Seeded synthetic instance-segmentation data: crossing tubes, crossing worms, touching nuclei.

Each generator builds a scene (``ppp_dist.data.synthetic_scene``) from continuous parameters drawn from
``seed`` and renders the whole volume into a :class:`~ppp_dist.data.Sample`. The same scene renders any
sub-box bit-identically (``make_scene(...).render(box)``), which is how :func:`write_synthetic_volume
<ppp_dist.data.writer.write_synthetic_volume>` writes volumes larger than memory.

=============  =========================  ======  =================  ==================================
kind           generator                  raw C   instances K        overlaps
=============  =========================  ======  =================  ==================================
``tubes``      :func:`crossing_tubes_3d`  3       one per tube [1]_  yes, tubes cross
``worms``      :func:`crossing_worms_2d`  1       one per worm [1]_  yes, worms cross
``nuclei2d``   :func:`touching_nuclei_2d` 1       1 (flat)           no; nuclei touch
``nuclei3d``   :func:`touching_nuclei_3d` 1       1 (flat)           no; nuclei touch
=============  =========================  ======  =================  ==================================

.. [1] ``channels="packed"`` instead shares channels between objects whose bounding boxes are disjoint.

Instance ids are 1..N in generation order (not in order of first appearance). Object counts default to a
density (4 tubes per 64^3, 8 worms per 256^2, 40 nuclei per 256^2, 20 nuclei per 64^3) so they scale with
the volume; a given count is rendered exactly: every object has at least one voxel inside the volume.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ppp_dist.data import Sample
from ppp_dist.data.synthetic_nuclei import NucleusScene
from ppp_dist.data.synthetic_scene import ChannelMode, Scene, normalize_shape
from ppp_dist.data.synthetic_tubes import TubeScene, WormScene

logger = logging.getLogger(__name__)

__all__ = ["KINDS", "Scene", "TubeScene", "WormScene", "NucleusScene", "make_scene",
           "crossing_tubes_3d", "crossing_worms_2d", "touching_nuclei_2d", "touching_nuclei_3d"]

KINDS = ("tubes", "worms", "nuclei2d", "nuclei3d")


def make_scene(kind: str, shape: Sequence[int], seed: int = 0, **params: Any) -> Scene:
    """Build the scene of one kind.

    Parameters
    ----------
    kind
        One of :data:`KINDS`.
    shape
        (Z, Y, X); for the 2D kinds also (Y, X), and Z must be 1.
    seed
        Seed of all random draws.
    **params
        Keyword arguments of the scene class (:class:`TubeScene`, :class:`WormScene`,
        :class:`NucleusScene`), e.g. ``n_tubes``, ``radius``, ``channels``.

    Returns
    -------
    Scene
        Call ``.render(box)`` for a sub-box, ``.to_sample()`` for the whole volume.
    """
    if kind == "tubes":
        return TubeScene(shape, seed=seed, **params)
    if kind == "worms":
        return WormScene(shape, seed=seed, **params)
    if kind in ("nuclei2d", "nuclei3d"):
        dims = normalize_shape(shape, planar=kind == "nuclei2d")
        if kind == "nuclei3d" and dims[0] == 1:
            raise ValueError(f"nuclei3d needs Z > 1, got shape {tuple(shape)}; use nuclei2d")
        return NucleusScene(dims, seed=seed, **params)
    raise ValueError(f"unknown synthetic kind {kind!r}; choose one of {', '.join(KINDS)}")


def crossing_tubes_3d(shape: Sequence[int] = (64, 64, 64), n_tubes: int | None = None,
                      radius: tuple[float, float] = (2.0, 3.5), branches: bool = True,
                      seed: int = 0, *, length: tuple[float, float] = (40.0, 100.0),
                      cross_prob: float = 0.75, channels: ChannelMode = "per_instance",
                      noise_sigma: float = 0.04) -> Sample:
    """Neuron-like branching tubes that cross each other (FlyLight-like).

    Parameters
    ----------
    shape
        (Z, Y, X) voxels; any size, also tiny or Z = 1.
    n_tubes
        Number of tubes (instances); None: 4 per 64^3 voxels, at least 1.
    radius
        Tube radius range (low >= 1) in voxels; branches are 0.7 x thinner (at least 1).
    branches
        Give each tube 0-2 side branches belonging to the same instance.
    seed
        Seed; the same seed gives identical bytes.
    length
        Length range of a tube's main centre line in voxels (independent of the volume).
    cross_prob
        Probability that a tube after the second starts on an earlier tube (the second always does, so
        any scene with >= 2 tubes has overlapping voxels).
    channels
        ``"per_instance"``: K = n_tubes, tube i in channel i - 1. ``"packed"``: greedy colouring.
    noise_sigma
        Standard deviation of the additive Gaussian noise.

    Returns
    -------
    Sample
        raw (3, Z, Y, X) float32 in [0, 1], a colour signature per tube; instances (K, Z, Y, X) uint16,
        ids 1..n_tubes in generation order.
    """
    return TubeScene(shape, n_tubes=n_tubes, radius=radius, length=length, branches=branches,
                     cross_prob=cross_prob, channels=channels, noise_sigma=noise_sigma,
                     seed=seed).to_sample()


def crossing_worms_2d(shape: Sequence[int] = (256, 256), n_worms: int | None = None,
                      width: tuple[float, float] = (8.0, 14.0),
                      length: tuple[float, float] = (60.0, 120.0), seed: int = 0, *,
                      cross_prob: float = 0.75, channels: ChannelMode = "per_instance",
                      noise_sigma: float = 0.04) -> Sample:
    """BBBC010-like bright-field worms: thick, tapered curved bodies that cross (Z = 1).

    Parameters
    ----------
    shape
        (Y, X) or (1, Y, X) pixels.
    n_worms
        Number of worms; None: 8 per 256^2 pixels, at least 1.
    width
        Body width range in pixels (at the middle; the ends taper to 45 %), low >= 2.
    length
        Body length range in pixels.
    seed
        Seed; the same seed gives identical bytes.
    cross_prob
        Probability that a worm after the second starts on an earlier worm (the second always does).
    channels
        ``"per_instance"``: K = n_worms. ``"packed"``: greedy colouring.
    noise_sigma
        Standard deviation of the additive Gaussian noise.

    Returns
    -------
    Sample
        raw (1, 1, Y, X) float32 in [0, 1], dark worms on a bright background; instances (K, 1, Y, X)
        uint16, ids 1..n_worms in generation order.
    """
    return WormScene(shape, n_worms=n_worms, width=width, length=length, cross_prob=cross_prob,
                     channels=channels, noise_sigma=noise_sigma, seed=seed).to_sample()


def touching_nuclei_2d(shape: Sequence[int] = (256, 256), n: int | None = None,
                       radius: tuple[float, float] = (6.0, 16.0), seed: int = 0, *,
                       touching: float = 0.5, noise_sigma: float = 0.05) -> Sample:
    """Randomly oriented elliptic nuclei that touch but never overlap (flat labels, Z = 1).

    Parameters
    ----------
    shape
        (Y, X) or (1, Y, X) pixels.
    n
        Number of nuclei; None: 40 per 256^2 pixels, at least 1.
    radius
        Range of the mean semi-axis in pixels (low >= 1).
    seed
        Seed; the same seed gives identical bytes.
    touching
        Probability of placing a nucleus next to an existing one.
    noise_sigma
        Standard deviation of the additive Gaussian noise.

    Returns
    -------
    Sample
        raw (1, 1, Y, X) float32 in [0, 1]; instances (1, 1, Y, X) uint16, ids 1..n in placement order.

    Raises
    ------
    ValueError
        If n nuclei do not fit (lower n or radius).
    """
    return make_scene("nuclei2d", shape, seed=seed, n=n, radius=radius, touching=touching,
                      noise_sigma=noise_sigma).to_sample()


def touching_nuclei_3d(shape: Sequence[int] = (64, 64, 64), n: int | None = None,
                       radius: tuple[float, float] = (5.0, 10.0), seed: int = 0, *,
                       touching: float = 0.5, noise_sigma: float = 0.05) -> Sample:
    """Randomly oriented ellipsoidal nuclei that touch but never overlap (flat labels, Z > 1).

    Parameters
    ----------
    shape
        (Z, Y, X) voxels with Z > 1.
    n
        Number of nuclei; None: 20 per 64^3 voxels, at least 1.
    radius
        Range of the mean semi-axis in voxels (low >= 1).
    seed
        Seed; the same seed gives identical bytes.
    touching
        Probability of placing a nucleus next to an existing one.
    noise_sigma
        Standard deviation of the additive Gaussian noise.

    Returns
    -------
    Sample
        raw (1, Z, Y, X) float32 in [0, 1]; instances (1, Z, Y, X) uint16, ids 1..n in placement order.

    Raises
    ------
    ValueError
        If n nuclei do not fit (lower n or radius).
    """
    return make_scene("nuclei3d", shape, seed=seed, n=n, radius=radius, touching=touching,
                      noise_sigma=noise_sigma).to_sample()
