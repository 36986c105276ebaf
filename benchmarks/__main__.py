"""``make bench``: run every benchmark module and print one table.

Each module ``benchmarks/bench_<name>.py`` exposes ``run(quick: bool) -> list[Row]``.
A row measures our implementation and, where there is one, the peer it is
compared with in the same run; figures are medians over repeats, because the
machine is shared and noisy.

    python -m benchmarks                 # everything
    python -m benchmarks assignment      # only modules whose name contains "assignment"
    python -m benchmarks --quick         # smaller sizes, for a smoke run
"""

import argparse
import importlib
import pkgutil
import sys
from datetime import date

import benchmarks
from benchmarks.table import Row, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("only", nargs="*", help="run only modules whose name contains one of these")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    args = parser.parse_args(argv)

    names = sorted(
        module.name
        for module in pkgutil.iter_modules(benchmarks.__path__)
        if module.name.startswith("bench_") and (not args.only or any(o in module.name for o in args.only))
    )
    rows: list[Row] = []
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"running {name} …", file=sys.stderr, flush=True)
        rows.extend(module.run(quick=args.quick))
    print(f"PrivacyLab benchmarks, {date.today().isoformat()}")
    print(render(rows))
    return 0 if all(row.passed is not False for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
