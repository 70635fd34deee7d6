"""``clip2depth data get|check``: download NYU Depth v2 / KITTI into the layouts ``train`` and ``eval`` read."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clip2depth.data.check import PartReport

from clip2depth.cli.options import (
    add_dataset_parts,
    add_download_source,
    add_dry_run,
    add_gt_root,
    add_split_lists,
    positive_float,
)

NAME = "data"
HELP = "download NYU Depth v2 or KITTI (data get) and check a dataset folder (data check)"

EPILOG = """examples:
  clip2depth data get nyu --root data/nyu --only test     # 2.8 GB: enough to evaluate
  clip2depth data get kitti --root data/kitti             # everything: about 190 GB
  clip2depth data check nyu --root data/nyu
an interrupted download continues where it stopped when the command is run again.
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=["nyu", "kitti"], help="which dataset")
    add_dataset_parts(p)
    add_split_lists(p)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP, description=HELP + ".", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="data_command", metavar="{get,check}", required=True)
    get = sub.add_parser("get", help="download, verify and unpack (resumable)",
                         description="Download, verify and unpack a dataset; re-run to continue after an "
                                     "interruption. Prints the total size and checks free disk space first.")
    _common(get)
    add_download_source(get)
    get.add_argument("--keep-archives", action="store_true", help="keep the archives after unpacking them")
    add_dry_run(get)
    get.add_argument("--timeout", type=positive_float, default=60.0, help="seconds without data before a retry (60)")
    check = sub.add_parser("check", help="compare a dataset folder with the split lists",
                           description="Decode every file the split lists name and report missing, unreadable "
                                       "(truncated, corrupt), wrong-size and permission-denied ones; exit 0 only "
                                       "when every listed file is there and whole.")
    _common(check)
    add_gt_root(check, unset="ROOT/data_depth_annotated")
    return p


def _parts(args: argparse.Namespace) -> list[str]:
    return [args.only] if args.only else ["train", "test"]


def run_check(dataset: str, root: str, parts: list[str], *, lists: dict[str, str | None],
              gt_root: str | None = None) -> list[PartReport]:
    """Check ``parts``, print the report; returns the reports of the incomplete parts."""
    from clip2depth.data.check import check_part, format_report
    from clip2depth.io.progress import progress_enabled

    incomplete = []
    for part in parts:
        report = check_part(dataset, root, part, list_file=lists.get(part), gt_root=gt_root,
                            show_progress=progress_enabled())
        print(format_report(dataset, report))
        if not report.complete:
            incomplete.append(report)
    return incomplete


def run(args: argparse.Namespace) -> int:
    from clip2depth.data.download import human_bytes
    from clip2depth.data.prepare import disk_needed, download_plan, get_dataset
    from clip2depth.errors import DataError
    from clip2depth.io.progress import progress_enabled

    lists = {"train": args.train_list, "test": args.test_list}
    only_flag = f" --only {args.only}" if args.only else ""
    if args.data_command == "check":
        from clip2depth.data.check import require_root, what_to_do

        require_root(args.dataset, args.root)
        incomplete = run_check(args.dataset, args.root, _parts(args), lists=lists, gt_root=args.gt_root)
        if incomplete:
            list_flags = "".join(f" --{part}-list {lists[part]}" for part in _parts(args) if lists[part])
            get = f"clip2depth data get {args.dataset} --root {args.root}{only_flag}{list_flags}"
            raise DataError(f"{args.dataset} under {args.root} is incomplete "
                            f"({', '.join(r.part for r in incomplete)}; listed above): {what_to_do(incomplete, get)}")
        return 0

    plan = download_plan(args.dataset, args.root, only=args.only, mirror=args.mirror, train_list=args.train_list,
                         test_list=args.test_list, online=not args.dry_run, timeout=args.timeout)
    total = sum(size for _, size, _ in plan)
    estimated = any(not exact for _, size, exact in plan if size)
    print(f"{args.dataset}{only_flag}: {len(plan)} files to fetch, {'about ' if estimated else ''}"
          f"{human_bytes(total)} to download, "
          f"{human_bytes(disk_needed(plan, keep_archives=args.keep_archives))} of free disk needed")
    for source, size, exact in plan:
        print(f"  {source.name:<40} {'~' if not exact else ' '}{human_bytes(size):>9}  {source.url(args.mirror)}")
    if args.dry_run:
        return 0
    result = get_dataset(args.dataset, args.root, only=args.only, mirror=args.mirror,
                         keep_archives=args.keep_archives, train_list=args.train_list, test_list=args.test_list,
                         splits_file=args.nyu_splits, timeout=args.timeout, show_progress=progress_enabled(), plan=plan)
    print(f"fetched and unpacked {len(result.done)} files ({len(result.skipped)} were done before)")
    incomplete = run_check(args.dataset, args.root, _parts(args), lists=lists)
    if incomplete:
        raise DataError(f"the download finished but {', '.join(r.part for r in incomplete)} is incomplete (see "
                        "above): the split list names files no archive holds, or the archives hold files the check "
                        "refuses; correct the list, or fetch those files from another host (--mirror)")
    return 0
