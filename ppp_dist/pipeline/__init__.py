"""The distributed pipeline: blockwise stages on dask, a graph database between them (docs/pipeline.md).

``run_pipeline`` (``pipeline.infer``) runs the passes in order through a ``runner.StageRunner``, which owns
staleness and resume: a stage skips the blocks its ledger marks done unless its parameters changed or a
stage before it did work in this run. Each blockwise stage is an object of its module with ``grid``,
``params``, ``prepare``, ``forget``, ``process_block`` and ``finalize`` (``runner.BlockStage``); the stage
modules import ``pipeline.worker`` (what a block may use on a worker), never the runner.

=============  ==================================================  ==================================================
pass           reads                                               writes
=============  ==================================================  ==================================================
predict        the raw volume (+ context), the checkpoint          ``prediction.zarr``: numinst/fg, patches (or codes)
(optional)                                                         -- skipped when fused: vote predicts per block
vote           patches + numinst of the block + the vote halo      graph DB: clusters, patch map, links (the
               (a stored prediction, the network per block when    contracted patch graph) and the ledger row;
               fused, or oracle patches from labels)               ``pipeline/vote.zarr`` (cluster map, numinst),
                                                                   ``pipeline/vote_rows/<block>.npz``
agglomerate    graph DB: clusters and links (a tree of tasks on    graph DB: instances (cluster -> instance id)
(driver)       the workers; tier-2 edges and mutexes streamed)
paint          ``pipeline/vote_rows``, the cluster map and numinst ``instances.zarr/instances`` (K, Z, Y, X) uint32;
               of core + h, the instances of the touching blocks   ``pipeline/paint_sizes/<block>.npz``
relabel        as paint, plus ``pipeline/removed_ids.npy``         ``instances.zarr/instances`` with compacted ids
(if needed)                                                        (small instances removed)
=============  ==================================================  ==================================================
"""

from __future__ import annotations

from ppp_dist.pipeline.settings import AssemblySettings, paint_halo, vote_halo

__all__ = ["AssemblySettings", "paint_halo", "run_pipeline", "vote_halo"]


def __getattr__(name: str):
    if name == "run_pipeline":
        from ppp_dist.pipeline.infer import run_pipeline

        return run_pipeline
    raise AttributeError(name)
