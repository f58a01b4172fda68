"""Array metadata: OME-Zarr (NGFF) for outputs; axes, voxel size and offset readers; input checks.

Each output array ``<group>/<name>`` is described by a single-level ``multiscales`` entry named ``<name>``
in the attributes of ``<group>``, with ``datasets[0].path == <name>``, axes typed channel/space/time, and
``coordinateTransformations`` = ``scale`` (voxel size; 1 on non-spatial axes) then ``translation``
(offset in the same physical units; 0 on non-spatial axes). Label arrays add ``image-label`` metadata.

zarr v3 groups get NGFF **0.5** (everything under the ``"ome"`` attribute key, ``dimension_names`` on the
array); zarr v2 groups get NGFF **0.4** (top-level ``"multiscales"`` with ``"version": "0.4"``).

Several arrays in one group each get their own ``multiscales`` entry; viewers open the first one when the
group itself is opened, so give a label output its own group (e.g. ``out.zarr/instances/s0``) to have it
open as labels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import zarr
from zarr.errors import NodeNotFoundError
from zarr.storage import LocalStore, ZipStore

from ppp_dist.errors import InputDataError

logger = logging.getLogger(__name__)

AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
NGFF_VERSION_V3 = "0.5"
NGFF_VERSION_V2 = "0.4"


def validate_axes(axes: str, ndim: int) -> str:
    """Return ``axes`` lower-cased after checking it names ``ndim`` distinct axes out of ``tczyx``."""
    axes = axes.lower()
    if len(axes) != ndim or len(set(axes)) != ndim or any(a not in AXIS_TYPES for a in axes):
        raise ValueError(f"axes {axes!r} must be {ndim} distinct letters out of 'tczyx' "
                         f"(one per array dimension)")
    return axes


def spatial_count(axes: str) -> int:
    """Number of spatial axes in ``axes``."""
    return sum(AXIS_TYPES.get(a) == "space" for a in axes)


def _axes_meta(axes: str, unit: str | None) -> list[dict[str, str]]:
    out = []
    for a in axes:
        entry = {"name": a, "type": AXIS_TYPES[a]}
        if unit is not None and AXIS_TYPES[a] == "space":
            entry["unit"] = unit
        out.append(entry)
    return out


def _full(axes: str, spatial: Sequence[float], fill: float) -> list[float]:
    values = iter(float(v) for v in spatial)
    return [next(values) if AXIS_TYPES[a] == "space" else fill for a in axes]


def _ome_dict(group: zarr.Group) -> tuple[dict[str, Any], str]:
    """The mutable dict that holds NGFF keys for this group's format, and its version string."""
    attrs: dict[str, Any] = group.attrs.asdict()
    if group.metadata.zarr_format == 3:
        return dict(attrs.get("ome", {})), NGFF_VERSION_V3
    return attrs, NGFF_VERSION_V2


def write_ome_metadata(group: zarr.Group, name: str, *, axes: str, voxel_size: Sequence[float],
                       offset: Sequence[float], kind: str = "image", unit: str | None = None) -> None:
    """Add or replace the ``multiscales`` entry of array ``name`` in ``group``.

    Parameters
    ----------
    group : zarr.Group
        The group holding the array (its direct parent).
    name : str
        The array's name inside ``group``.
    axes : str
        Axis letters of the array, e.g. ``"czyx"``.
    voxel_size, offset : sequence of float
        Per spatial axis, in physical units (``offset`` = position of voxel 0).
    kind : {"image", "labels"}
        ``"labels"`` also writes ``image-label`` metadata.
    unit : str, optional
        NGFF unit of the spatial axes, e.g. ``"micrometer"``.
    """
    ome, version = _ome_dict(group)
    entry: dict[str, Any] = {
        "name": name,
        "axes": _axes_meta(axes, unit),
        "datasets": [{
            "path": name,
            "coordinateTransformations": [
                {"type": "scale", "scale": _full(axes, voxel_size, 1.0)},
                {"type": "translation", "translation": _full(axes, offset, 0.0)},
            ],
        }],
    }
    if version == NGFF_VERSION_V2:
        entry["version"] = version
    others = [m for m in ome.get("multiscales", []) if m.get("name") != name]
    ome["multiscales"] = others + [entry]
    if kind == "labels":
        label: dict[str, Any] = {"colors": [{"label-value": 0, "rgba": [0, 0, 0, 0]}]}
        if version == NGFF_VERSION_V2:
            label["version"] = version
        ome["image-label"] = label
        if others:
            logger.warning("label array %s shares group %s with %d other array(s); viewers may not "
                           "open it as labels, give it its own group", name, group.path or "/",
                           len(others))
    if version == NGFF_VERSION_V3:
        ome["version"] = version
        group.attrs.update({"ome": ome})
    else:
        group.attrs.update(ome)


def read_ome_transform(group: zarr.Group, name: str) -> tuple[list[float], list[float], str] | None:
    """``(scale, translation, axes)`` of dataset ``name`` from NGFF 0.4/0.5 metadata of ``group``.

    Returns None when the group has no ``multiscales`` entry for ``name``. ``scale`` and
    ``translation`` cover all axes (not only the spatial ones).
    """
    attrs: dict[str, Any] = group.attrs.asdict()
    multiscales = attrs.get("ome", {}).get("multiscales") or attrs.get("multiscales") or []
    for ms in multiscales:
        for ds in ms.get("datasets", []):
            if ds.get("path") != name:
                continue
            axes = "".join(a["name"] if isinstance(a, dict) else str(a) for a in ms.get("axes", []))
            scale, translation = None, None
            for t in ds.get("coordinateTransformations", []):
                if t.get("type") == "scale":
                    scale = [float(v) for v in t["scale"]]
                elif t.get("type") == "translation":
                    translation = [float(v) for v in t["translation"]]
            if scale is None:
                return None
            return scale, translation or [0.0] * len(scale), axes
    return None


# --- reading the metadata of existing arrays -------------------------------------------------------

def _store_name(arr: zarr.Array) -> str:
    store = arr.store
    if isinstance(store, LocalStore):
        return str(store.root)
    if isinstance(store, ZipStore):
        return str(store.path)
    return str(store)


def describe(arr: zarr.Array) -> str:
    """``"volumes/raw in data.zarr"``, for messages."""
    return f"{arr.path} in {_store_name(arr)}" if arr.path else _store_name(arr)


def _parent(arr: zarr.Array) -> tuple[zarr.Group | None, str]:
    if not arr.path:
        return None, ""
    parent, _, name = arr.path.rpartition("/")
    try:
        return zarr.open_group(arr.store, path=parent, mode="r"), name
    except (NodeNotFoundError, FileNotFoundError, ValueError):
        return None, name


def axes_of(arr: zarr.Array) -> str:
    """Axis letters from dimension names, ``attrs["axes"]``, xarray or OME metadata.

    Defaults to the last ``ndim`` letters of ``tczyx`` (``zyx`` for 3D, ``czyx`` for 4D).
    """
    candidates: list[Any] = [getattr(arr.metadata, "dimension_names", None),
                             arr.attrs.get("axes"), arr.attrs.get("_ARRAY_DIMENSIONS")]
    group, name = _parent(arr)
    found = read_ome_transform(group, name) if group is not None else None
    if found is not None:
        candidates.append(found[2])
    for cand in candidates:
        if cand and all(isinstance(a, str) for a in cand):
            axes = "".join(cand).lower()
            try:
                return validate_axes(axes, arr.ndim)
            except ValueError:
                continue
    return "tczyx"[-arr.ndim:] if arr.ndim <= 5 else "?" * (arr.ndim - 3) + "zyx"


def spatial_ndim(arr: zarr.Array) -> int:
    """Number of trailing spatial axes (3 for ``(C, Z, Y, X)``)."""
    return min(arr.ndim, spatial_count(axes_of(arr)) or 3)


def _spatial_attr(arr: zarr.Array, keys: Sequence[str], ome_index: Literal[0, 1],
                  default: float) -> tuple[float, ...]:
    n = spatial_ndim(arr)
    for key in keys:
        value: Any = arr.attrs.get(key)
        if value is not None:
            value = tuple(float(v) for v in value)
            if len(value) != n:
                raise InputDataError(f"attribute '{key}' = {list(value)} of {describe(arr)} has "
                                     f"{len(value)} entries but the array has {n} spatial axes; fix "
                                     f"the attribute")
            return value
    group, name = _parent(arr)
    found = read_ome_transform(group, name) if group is not None else None
    if found is not None and len(found[ome_index]) == arr.ndim:
        return tuple(found[ome_index][arr.ndim - n:])
    return (default,) * n


def voxel_size_of(arr: zarr.Array) -> tuple[float, ...]:
    """Voxel size per spatial axis: ``voxel_size``/``resolution`` attributes, OME scale, or 1s."""
    return _spatial_attr(arr, ("voxel_size", "resolution"), 0, 1.0)


def offset_of(arr: zarr.Array) -> tuple[float, ...]:
    """Physical position of voxel 0 per spatial axis: ``offset`` attribute, OME translation, or 0s."""
    return _spatial_attr(arr, ("offset",), 1, 0.0)


_AXES_TEXT = {2: "Y, X", 3: "Z, Y, X", 4: "C, Z, Y, X", 5: "T, C, Z, Y, X"}


def check_array(arr: zarr.Array, name: str, *, ndim: int | Sequence[int] | None = None,
                channels: int | Sequence[int] | None = None,
                dtypes: Sequence[Any] | None = None) -> None:
    """Raise ``InputDataError`` if ``arr`` has the wrong dimensionality, channel count or dtype.

    Parameters
    ----------
    arr : zarr.Array
    name : str
        Role of the array for the message, e.g. ``"raw"`` or ``"data.raw"``.
    ndim : int or sequence of int, optional
        Allowed numbers of dimensions.
    channels : int or sequence of int, optional
        Allowed lengths of the channel axis (axis ``c``; arrays without one count as 1 channel).
    dtypes : sequence of dtype-like, optional
        Allowed dtypes; abstract NumPy types such as ``np.integer`` match their subtypes.
    """
    where = f"{name} ({describe(arr)})"
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            expected = " or ".join(f"{n} ({_AXES_TEXT.get(n, '?')})" for n in allowed)
            hint = ("; for single-channel data add a leading channel axis of length 1"
                    if arr.ndim + 1 in allowed and arr.ndim - 1 not in allowed else "")
            raise InputDataError(f"{where} has {arr.ndim} dimensions (shape {arr.shape}); expected "
                                 f"{expected}{hint}")
    if channels is not None:
        allowed = (channels,) if isinstance(channels, int) else tuple(channels)
        axes = axes_of(arr)
        count = arr.shape[axes.index("c")] if "c" in axes else 1
        if count not in allowed:
            raise InputDataError(f"{where} has {count} channel(s) (shape {arr.shape}, axes {axes}); "
                                 f"expected {' or '.join(map(str, allowed))}")
    if dtypes is not None:
        dtype = np.dtype(arr.dtype)
        if not any(np.issubdtype(dtype, d) for d in dtypes):
            names = ", ".join(getattr(d, "__name__", str(d)) for d in dtypes)
            raise InputDataError(f"{where} has dtype {dtype}; expected one of {names}")
