#!/usr/bin/env python3
"""Compares the hypervolume of several `alphanas search` output folders on one scale.

Each run's `summary.json` computes its hypervolume against a reference point taken from that
run's own results, so the figures of two runs cannot be compared directly. This script reads
the `ok` results of every folder's `history.jsonl` and takes one reference point over all of
them: each objective's worst value plus 1% of its range. It scales every objective to [0, 1]
between the best value seen and that point. Then it prints each run's hypervolume after the
given numbers of evaluations. Constraints are ignored, so use it on runs without any.

    scripts/compare_runs.py --after 12,20,40 old1 new1 old2 new2
    scripts/compare_runs.py --objectives latency_decode_ms,decoder_params old1 new1

Objectives and their directions come from the first folder's `summary.json`; `--objectives`
keeps a subset. Only the Python standard library is used.
"""

import argparse
import json
import os
import sys


def load_run(folder, objectives):
    """Returns one minimised objective vector per evaluation, or None for a result that is not ok."""
    path = os.path.join(folder, "history.jsonl")
    if not os.path.isfile(path):
        sys.exit(f"{path} not found; give the --out folders of alphanas searches")
    points = []
    ok_without_objectives = 0
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            metrics = record.get("metrics", {})
            if record.get("status") != "ok":
                points.append(None)
            elif any(name not in metrics for name, _ in objectives):
                ok_without_objectives += 1
                points.append(None)
            else:
                points.append(tuple(sign * metrics[name] for name, sign in objectives))
    if ok_without_objectives and all(p is None for p in points):
        names = ", ".join(name for name, _ in objectives)
        sys.exit(f"{folder}: no ok result has every objective ({names}); compare runs of the same objectives")
    return points


def hypervolume(points, dims):
    """Returns the exact hypervolume of minimised points in [0, 1]^dims below the reference (1, ..., 1)."""
    if not points:
        return 0.0
    if dims == 1:
        return 1.0 - min(p[0] for p in points)
    # Slice along the last coordinate: between two consecutive values, the dominated region is
    # the hypervolume of the points at or below the slice in the other coordinates.
    ordered = sorted(points, key=lambda p: p[dims - 1])
    total = 0.0
    for i, point in enumerate(ordered):
        upper = ordered[i + 1][dims - 1] if i + 1 < len(ordered) else 1.0
        if upper > point[dims - 1]:
            total += hypervolume(ordered[: i + 1], dims - 1) * (upper - point[dims - 1])
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="search output folders (--out DIR)")
    parser.add_argument("--after", default="", help="evaluation counts to report, comma-separated (default: each run's last)")
    parser.add_argument("--objectives", default="", help="objective metrics to keep, comma-separated (default: all)")
    args = parser.parse_args()

    summary = os.path.join(args.folders[0], "summary.json")
    if not os.path.isfile(summary):
        sys.exit(f"{summary} not found; give the --out folders of alphanas searches")
    with open(summary) as f:
        specs = json.load(f)["settings"]["objectives"]
    objectives = []
    for spec in specs:
        direction, name = spec.split(":", 1)
        objectives.append((name, -1.0 if direction == "max" else 1.0))
    if args.objectives:
        keep = [name.strip() for name in args.objectives.split(",")]
        if "" in keep:
            sys.exit(f"--objectives {args.objectives!r} has an empty name; separate names with single commas")
        unknown = [name for name in keep if name not in [o[0] for o in objectives]]
        if unknown:
            sys.exit(f"--objectives: {', '.join(unknown)} not among the run's objectives {specs}")
        objectives = [o for o in objectives if o[0] in keep]

    runs = {folder: load_run(folder, objectives) for folder in args.folders}
    seen = [p for points in runs.values() for p in points if p is not None]
    if not seen:
        sys.exit("no ok results in the given folders")
    dims = len(objectives)
    best = [min(p[k] for p in seen) for k in range(dims)]
    worst = [max(p[k] for p in seen) for k in range(dims)]
    reference = [worst[k] + 0.01 * (worst[k] - best[k]) for k in range(dims)]
    span = [(reference[k] - best[k]) or 1.0 for k in range(dims)]

    counts = []
    for item in args.after.split(","):
        if not item.strip():
            continue
        if not item.strip().isdigit() or int(item) < 1:
            sys.exit(f"--after: `{item}` is not a positive whole number of evaluations")
        counts.append(int(item))
    names = ", ".join(("max " if sign < 0 else "min ") + name for name, sign in objectives)
    print(f"objectives: {names}; reference point: {', '.join(f'{abs(r):g}' for r in reference)}")
    print("run\t" + ("\t".join(f"after {c}" for c in counts) if counts else "at its last evaluation"))
    for folder, points in runs.items():
        cells = []
        for count in counts or [len(points)]:
            if len(points) < count:
                cells.append("-")
                continue
            scaled = [tuple((p[k] - best[k]) / span[k] for k in range(dims)) for p in points[:count] if p is not None]
            cells.append(f"{hypervolume(scaled, dims):.4f}" + ("" if counts else f" after {count}"))
        print(folder + "\t" + "\t".join(cells))


if __name__ == "__main__":
    main()
