"""Convert TIFF / PNG / HDF5 images (+ labels) into ppp_dist zarr samples: raw (C, Z, Y, X), labels (K, Z, Y, X).

Examples::

    # one sample: a multi-page TIFF stack and its flat label stack
    python scripts/convert_to_zarr.py --raw stack.tif --labels labels.tif --out sample.zarr
    # BBBC010: two raw channels, one binary PNG per worm -> one worm per label channel (overlaps kept)
    python scripts/convert_to_zarr.py --raw 'images/*_A01_w1_*.tif' --raw 'images/*_A01_w2_*.tif' \\
        --label-masks 'foreground_eachworm/A01_*_ground_truth.png' --out worms/A01.zarr
    # one sample per image file of a folder (labels matched by file name)
    python scripts/convert_to_zarr.py --per-file --raw train/images --labels train/masks --out train_zarr

A thin wrapper around ``ppp_dist.tasks.convert``; see ``docs/datasets.md``. Exit code 2 on input errors.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ppp_dist.cli import one_line
from ppp_dist.errors import InputDataError, PppDistError
from ppp_dist.tasks.convert import GT_KEY, RAW_KEY, convert_per_file, convert_sample


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convert_to_zarr", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--raw", action="append", required=True, metavar="PATH",
                        help="raw image: a .tif/.tiff/.png file, a folder or glob of Z slices, or "
                             "file.h5/KEY; repeat to stack channels (with --per-file: a folder of images)")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--labels", metavar="PATH",
                        help="flat label image (0 = background), same forms as --raw (with --per-file: "
                             "a folder of label files named like the raw files)")
    labels.add_argument("--label-masks", metavar="PATH",
                        help="folder or glob of binary masks, one per instance -> one channel per instance")
    parser.add_argument("--labels-flat", action="store_true",
                        help="with --label-masks: pack the instances into one channel (later masks win)")
    parser.add_argument("--labels-cc", choices=("2d", "3d"),
                        help="with --labels: label the connected components of the non-zero voxels "
                             "(per Z slice for 2d), e.g. for boundary maps")
    parser.add_argument("--channel-axis", type=int, metavar="N",
                        help="axis of the channels in each raw file (default: none, C = 1)")
    parser.add_argument("--gray", action="store_true",
                        help="average the R, G, B channels of colour images into one channel")
    parser.add_argument("--voxel-size", type=float, nargs="+", default=[1.0, 1.0, 1.0], metavar="S",
                        help="voxel size Z Y X (or Y X), default 1 1 1")
    parser.add_argument("--raw-key", default=RAW_KEY, help=f"raw array key (default {RAW_KEY})")
    parser.add_argument("--gt-key", default=GT_KEY, help=f"label array key (default {GT_KEY})")
    parser.add_argument("--per-file", action="store_true",
                        help="--raw is a folder of images, one sample each: --out is a folder of NAME.zarr")
    parser.add_argument("--out", required=True, help="output zarr store (a folder with --per-file)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing arrays of another layout")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    options = dict(labels_cc=args.labels_cc, channel_axis=args.channel_axis, gray=args.gray,
                   voxel_size=args.voxel_size, raw_key=args.raw_key, gt_key=args.gt_key,
                   overwrite=args.overwrite)
    try:
        if args.labels_flat and not args.label_masks:
            raise InputDataError("--labels-flat only applies to --label-masks")
        if args.labels_cc and not args.labels:
            raise InputDataError("--labels-cc only applies to --labels")
        if args.per_file:
            if len(args.raw) != 1 or args.label_masks:
                raise InputDataError("--per-file takes one --raw folder and optionally a --labels folder")
            results = convert_per_file(args.raw[0], args.out, labels_dir=args.labels, **options)
        else:
            results = [convert_sample(args.raw, args.out, labels=args.labels, label_masks=args.label_masks,
                                      labels_flat=args.labels_flat, **options)]
    except PppDistError as err:
        print(f"convert_to_zarr: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    for r in results:
        gt = (f", {r.gt_key} {r.gt_shape} with {r.num_instances} instances" if r.gt_key else "")
        print(f"{r.path}: {r.raw_key} {r.raw_shape} {r.raw_dtype}{gt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
