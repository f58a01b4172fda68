"""The distributed pipeline stages: blockwise predict, vote, agglomerate, paint on dask (docs/pipeline.md).

``run_pipeline`` (``ppp_dist.pipeline.infer``) runs them in order; each stage module also exposes its
picklable ``process_block`` (``PredictStage``, ``VoteStage``, ``PaintStage``) for ``runner.run_stage``.
"""

from __future__ import annotations

from ppp_dist.pipeline.settings import AssemblySettings, paint_halo, vote_halo

__all__ = ["AssemblySettings", "paint_halo", "run_pipeline", "vote_halo"]


def __getattr__(name: str):
    if name == "run_pipeline":
        from ppp_dist.pipeline.infer import run_pipeline

        return run_pipeline
    raise AttributeError(name)
