"""Write a seeded synthetic volume (raw + labels/gt_instances) to a zarr v3 group, block by block.

Example::

    python scripts/make_synthetic_volume.py --kind tubes --shape 512 512 512 --chunks 128 128 128 \\
        --seed 0 --out synthetic_tubes.zarr

A thin wrapper around ``ppp_dist.data.write_synthetic_volume``; see ``docs/data.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ppp_dist.data.synthetic import KINDS
from ppp_dist.data.writer import RAW_DTYPES, write_synthetic_volume
from ppp_dist.errors import PppDistError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--shape", type=int, nargs="+", required=True, metavar="N",
                        help="Z Y X (or Y X for worms / nuclei2d)")
    parser.add_argument("--chunks", type=int, nargs="+", required=True, metavar="N",
                        help="chunk = block shape, as many values as --shape")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output zarr group (folder)")
    parser.add_argument("--raw-dtype", choices=RAW_DTYPES, default="float32")
    parser.add_argument("--workers", type=int, default=1, help="parallel writer processes")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        info = write_synthetic_volume(args.out, args.kind, args.shape, args.chunks, seed=args.seed,
                                      raw_dtype=args.raw_dtype, n_workers=args.workers,
                                      overwrite=args.overwrite)
    except (PppDistError, ValueError) as err:
        print(f"make_synthetic_volume: error: {err}", file=sys.stderr)
        return 2
    print(f"{info.path}: {info.kind} seed {info.seed}, shape {info.shape}, chunks {info.chunks}, "
          f"{info.num_instances} instances in {info.num_layers} channels, {info.num_blocks} blocks, "
          f"{info.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
