"""Prebuild the whole zoo cache and print a summary table: ``python -m tests.zoo [-j N]``.

Worth running once before a parallel pytest run, so workers do not all export the same
models at the same moment.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import time
from concurrent.futures import ProcessPoolExecutor

from . import NAMES, cache_dir, export


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.zoo", description=__doc__)
    parser.add_argument("-j", "--jobs", type=int, default=min(2, mp.cpu_count()))
    parser.add_argument(
        "--clean-stale",
        action="store_true",
        help="delete cache dirs of other code/torch versions (~1.4 GB each); not the default "
        "because another checkout or a running pytest may still be using them",
    )
    parser.add_argument("names", nargs="*", default=list(NAMES), help="subset of models")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(NAMES))
    if unknown:
        parser.error(f"unknown models {unknown}; known: {', '.join(NAMES)}")

    t0 = time.perf_counter()
    if args.jobs > 1:
        # spawn: forking a process that already ran torch ops can deadlock in OpenMP
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            results = list(pool.map(export.build_all_variants, args.names))
    else:
        results = [export.build_all_variants(n) for n in args.names]
    wall = time.perf_counter() - t0

    if args.clean_stale:
        for stale in export.stale_cache_dirs():
            shutil.rmtree(stale, ignore_errors=True)
            print(f"removed stale cache {stale}")
    print(f"cache: {export.key_dir()}")
    print(
        f"{'name':<20}{'opset':>6}  {'bn':<7}{'size MB':>9}{'nodes':>7}{'build s':>9}{'MACs':>15}"
    )
    for rows in results:
        for name, opset, bn, size, nodes, seconds in rows:
            built = f"{seconds:.2f}" if seconds else "cached"
            macs = export.macs(name)
            print(f"{name:<20}{opset:>6}  {bn:<7}{size / 1e6:>9.2f}{nodes:>7}{built:>9}{macs:>15,}")
    total = sum(r[3] for rows in results for r in rows)
    print(
        f"{sum(map(len, results))} files, {total / 1e6:.0f} MB under {cache_dir()}, {wall:.1f} s wall"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
