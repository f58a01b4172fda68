"""Row tables of the graph database as NumPy structured arrays, and their validation (pure NumPy, no SQL).

Ids are signed 64-bit in SQL: fragment, cluster and patch ids must lie in ``[1, 2**63)`` (0 is background),
and uint64 input beyond that range is refused with a message rather than wrapped. Edge weights must not be
NaN (a NaN compares false and would silently decide merges); each edge is stored once with ``u < v``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from ppp_dist.errors import BlockError
from ppp_dist.ops.contract import LINK_DTYPE

FRAGMENT_DTYPE = np.dtype([("id", "<i8"), ("z", "<i4"), ("y", "<i4"), ("x", "<i4"), ("size", "<i8")])
"""One row per fragment: global id, anchor voxel (z, y, x) in volume coordinates, size in voxels."""
EDGE_DTYPE = np.dtype([("u", "<i8"), ("v", "<i8"), ("weight", "<f8"), ("count", "<i8")])
"""One row per edge: endpoint ids, weight (merge evidence, higher = more likely the same object), count
(how many patch pairs or contacts support it)."""

_INT64_MAX = np.iinfo(np.int64).max


class EdgeBatch(NamedTuple):
    """A batch of edges as arrays: ``u``, ``v`` int64 (``u < v``), ``weight`` float64, ``count`` int64."""

    u: np.ndarray
    v: np.ndarray
    weight: np.ndarray
    count: np.ndarray  # type: ignore[assignment]  # shadows tuple.count, which nothing here uses


def _as_ids(values: Any, what: str, block_id: int | None) -> np.ndarray:
    """``values`` as int64, refusing floats, uint64 beyond 2**63 - 1, and ids < 1."""
    arr = np.asarray(values)
    if arr.size == 0:
        return np.zeros(0, np.int64)
    arr = arr.ravel()
    if arr.dtype.kind not in "ui":
        raise _data_error(block_id, f"{what} must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and int(arr.max()) > _INT64_MAX:
        raise _data_error(block_id, f"{what} {int(arr.max())} does not fit a signed 64-bit SQL id (max 2**63 - 1); "
                                    "use ids below 2**63 (e.g. fewer bits for the block part of the id)")
    arr = arr.astype(np.int64, copy=False)
    if int(arr.min()) < 1:
        raise _data_error(block_id, f"{what} {int(arr.min())} is not a fragment id; ids must be >= 1 "
                                    "(0 is background)")
    return arr


def _data_error(block_id: int | None, reason: str) -> Exception:
    return BlockError(block_id, reason) if block_id is not None else ValueError(reason)


def make_fragments(ids: Any, positions: Any = None, sizes: Any = None) -> np.ndarray:
    """Build a fragment table (structured array of :data:`FRAGMENT_DTYPE`).

    Parameters
    ----------
    ids : (N,) integer array
        Global fragment ids in ``[1, 2**63)``.
    positions : (N, 3) integer array, optional
        Anchor voxel ``(z, y, x)`` of each fragment (2D data: z = 0); default zeros.
    sizes : (N,) integer array, optional
        Voxels (or patches) per fragment; default zeros.
    """
    ids_arr = _as_ids(ids, "fragment id", None)
    out = np.zeros(len(ids_arr), FRAGMENT_DTYPE)
    out["id"] = ids_arr
    if positions is not None:
        pos = np.asarray(positions, dtype=np.int64).reshape(len(ids_arr), -1)
        if pos.shape[1] != 3:
            raise ValueError(f"positions must have shape (N, 3) (z, y, x), got {pos.shape}")
        out["z"], out["y"], out["x"] = pos[:, 0], pos[:, 1], pos[:, 2]
    if sizes is not None:
        out["size"] = np.asarray(sizes, dtype=np.int64).reshape(len(ids_arr))
    return out


def make_edges(u: Any, v: Any, weight: Any, count: Any = None) -> np.ndarray:
    """Build an edge table (structured array of :data:`EDGE_DTYPE`); ``count`` defaults to 1."""
    u_arr, v_arr = np.asarray(u).ravel(), np.asarray(v).ravel()
    w_arr = np.asarray(weight, dtype=np.float64).ravel()
    if not len(u_arr) == len(v_arr) == len(w_arr):
        raise ValueError(f"u, v and weight differ in length: {len(u_arr)}, {len(v_arr)}, {len(w_arr)}")
    out = np.zeros(len(u_arr), EDGE_DTYPE)
    out["u"], out["v"] = _as_ids(u_arr, "edge endpoint", None), _as_ids(v_arr, "edge endpoint", None)
    out["weight"] = w_arr
    out["count"] = 1 if count is None else np.asarray(count, dtype=np.int64).ravel()
    return out


def _field(table: Any, name: str, n: int, default: Any, alt: str | None = None) -> np.ndarray:
    if isinstance(table, np.ndarray) and table.dtype.names:
        if name in table.dtype.names:
            return np.asarray(table[name])
        if alt is not None and alt in table.dtype.names:
            return np.asarray(table[alt])
    elif isinstance(table, Mapping):
        if name in table:
            return np.asarray(table[name])
        if alt is not None and alt in table:
            return np.asarray(table[alt])
    if default is None:
        raise ValueError(f"the table has no field {name!r}")
    return np.full(n, default)


def _normalise_fragments(fragments: Any, block_id: int) -> np.ndarray:
    """A validated :data:`FRAGMENT_DTYPE` array from a structured array or a mapping of columns."""
    if fragments is None:
        return np.zeros(0, FRAGMENT_DTYPE)
    if not ((isinstance(fragments, np.ndarray) and fragments.dtype.names) or isinstance(fragments, Mapping)):
        raise BlockError(block_id, "fragments must be a structured array (see make_fragments) or a mapping "
                                   f"of columns, got {type(fragments).__name__}")
    ids = _field(fragments, "id", 0, None)
    out = np.zeros(len(ids), FRAGMENT_DTYPE)
    out["id"] = _as_ids(ids, "fragment id", block_id)
    if isinstance(fragments, Mapping) and "position" in fragments:
        pos = np.asarray(fragments["position"], dtype=np.int64).reshape(len(out), 3)
        out["z"], out["y"], out["x"] = pos[:, 0], pos[:, 1], pos[:, 2]
    else:
        for axis in ("z", "y", "x"):
            out[axis] = _field(fragments, axis, len(out), 0)
    out["size"] = _field(fragments, "size", len(out), 0)
    if len(out) > 1:
        ordered = np.sort(out["id"])
        dup = ordered[1:][ordered[1:] == ordered[:-1]]
        if dup.size:
            raise BlockError(block_id, f"fragment id {int(dup[0])} appears twice in the block's fragments")
    return out


def _normalise_edges(edges: Any, block_id: int) -> np.ndarray:
    """A validated :data:`EDGE_DTYPE` array with ``u < v``: no NaN weights, no self-loops, no duplicates."""
    if edges is None:
        return np.zeros(0, EDGE_DTYPE)
    if not ((isinstance(edges, np.ndarray) and edges.dtype.names) or isinstance(edges, Mapping)):
        raise BlockError(block_id, "edges must be a structured array (see make_edges) or a mapping of columns, "
                                   f"got {type(edges).__name__}")
    u = _as_ids(_field(edges, "u", 0, None), "edge endpoint u", block_id)
    v = _as_ids(_field(edges, "v", 0, None), "edge endpoint v", block_id)
    w = np.asarray(_field(edges, "weight", len(u), None, alt="score"), dtype=np.float64).ravel()
    if not len(u) == len(v) == len(w):
        raise BlockError(block_id, f"edge columns differ in length: u {len(u)}, v {len(v)}, weight {len(w)}")
    nan = np.isnan(w)
    if nan.any():
        k = int(np.argmax(nan))
        raise BlockError(block_id, f"{int(nan.sum())} edge weights are NaN (first: edge {int(u[k])}-{int(v[k])}); "
                                   "NaN scores would decide merges silently — fix the scores upstream (NaN "
                                   "predictions?) or drop those edges")
    out = np.zeros(len(u), EDGE_DTYPE)
    out["u"], out["v"] = np.minimum(u, v), np.maximum(u, v)
    out["weight"] = w
    out["count"] = _field(edges, "count", len(u), 1)
    loops = out["u"] == out["v"]
    if loops.any():
        raise BlockError(block_id, f"edge {int(out['u'][np.argmax(loops)])}-{int(out['u'][np.argmax(loops)])} "
                                   "joins a fragment to itself; drop self-loops before writing")
    if len(out) > 1:
        order = np.lexsort((out["v"], out["u"]))
        su, sv = out["u"][order], out["v"][order]
        dup = (su[1:] == su[:-1]) & (sv[1:] == sv[:-1])
        if dup.any():
            k = int(np.argmax(dup))
            raise BlockError(block_id, f"edge {int(su[k])}-{int(sv[k])} appears twice in the block's edges "
                                       "(as (u, v) or (v, u)); sum their counts into one row")
    return out


def json_counts(counts: Mapping[str, Any] | None) -> str:
    def convert(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        raise TypeError(f"counts value {value!r} of type {type(value).__name__} is not JSON")
    return json.dumps(dict(counts or {}), default=convert, sort_keys=True)


CLUSTER_DTYPE = np.dtype([("id", "<i8"), ("size", "<i8")])
"""One row per cluster of the contracted graph: id (smallest patch id), number of patches."""
MAP_DTYPE = np.dtype([("patch", "<i8"), ("cluster", "<i8")])
"""One row per boundary patch: its cluster (what other blocks' links resolve their foreign ends with)."""


def make_clusters(ids: Any, sizes: Any = None) -> np.ndarray:
    """A cluster table (:data:`CLUSTER_DTYPE`); ``sizes`` default 1."""
    ids_arr = _as_ids(ids, "cluster id", None)
    out = np.zeros(len(ids_arr), CLUSTER_DTYPE)
    out["id"] = ids_arr
    out["size"] = 1 if sizes is None else np.asarray(sizes, dtype=np.int64).ravel()
    return out


def make_map(patches: Any, clusters: Any) -> np.ndarray:
    """A patch -> cluster map table (:data:`MAP_DTYPE`)."""
    p, c = _as_ids(patches, "map patch", None), _as_ids(clusters, "map cluster", None)
    if len(p) != len(c):
        raise ValueError(f"patches ({len(p)}) and clusters ({len(c)}) differ in length")
    out = np.zeros(len(p), MAP_DTYPE)
    out["patch"], out["cluster"] = p, c
    return out


def _unique_ids(values: np.ndarray, block_id: int, what: str) -> None:
    if len(values) > 1:
        ordered = np.sort(values)
        dup = ordered[1:][ordered[1:] == ordered[:-1]]
        if dup.size:
            raise BlockError(block_id, f"{what} {int(dup[0])} appears twice in the block's rows")


def normalise_table(name: str, rows: Any, block_id: int) -> np.ndarray:
    """Validated rows of table ``name`` (fragments, edges, clusters, patch_map, links) for ``block_id``."""
    if name == "fragments":
        return _normalise_fragments(rows, block_id)
    if name == "edges":
        return _normalise_edges(rows, block_id)
    dtype = {"clusters": CLUSTER_DTYPE, "patch_map": MAP_DTYPE, "links": LINK_DTYPE}[name]
    if rows is None:
        return np.zeros(0, dtype)
    if not (isinstance(rows, np.ndarray) and rows.dtype == dtype):
        raise BlockError(block_id, f"{name} rows must be a structured array of dtype {dtype}")
    if name == "clusters":
        _as_ids(rows["id"], "cluster id", block_id)
        _unique_ids(rows["id"], block_id, "cluster id")
    elif name == "patch_map":
        _as_ids(rows["patch"], "map patch", block_id)
        _as_ids(rows["cluster"], "map cluster", block_id)
        _unique_ids(rows["patch"], block_id, "map patch")
    else:
        _as_ids(rows["a"], "link cluster", block_id)
        _as_ids(rows["u"], "link patch u", block_id)
        _as_ids(rows["v"], "link patch v", block_id)
        if len(rows) and (rows["b"] < 0).any():
            raise BlockError(block_id, "a link's cluster b must be >= 0 (0: resolved through another block's map)")
        if np.isnan(rows["weight"]).any():
            raise BlockError(block_id, "link weights are NaN; fix the scores upstream (NaN predictions?)")
        if len(rows) and not (rows["u"] < rows["v"]).all():
            raise BlockError(block_id, "every link must have u < v")
    return rows


__all__ = ["CLUSTER_DTYPE", "EDGE_DTYPE", "EdgeBatch", "FRAGMENT_DTYPE", "LINK_DTYPE", "MAP_DTYPE", "json_counts",
           "make_clusters", "make_edges", "make_fragments", "make_map", "normalise_table"]
