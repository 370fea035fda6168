"""Record the current model version's Dice per class on the val and test splits
(results/models/v{N}/metrics.json), then compare every version: results/models/versions.tsv and
a figure of Dice per class per version."""

import argparse
from pathlib import Path

from cohortseg.core.io import read_json, read_tsv, write_json, write_tsv
from cohortseg.viz.figures import plot_version_dice
from cohortseg.workflow.cli import run
from cohortseg.workflow.registry import (
    split_dice,
    version_columns,
    version_dir,
    version_rows,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics", required=True, help="results/metrics.tsv")
    parser.add_argument("--current", required=True, help="results/models/current.json")
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--table", required=True, help="output TSV")
    parser.add_argument("--figure", required=True, help="output PNG")
    args = parser.parse_args()
    models_dir = Path(args.current).parent
    current = read_json(args.current)["version"]
    dice = split_dice(read_tsv(args.metrics), args.classes)
    write_json(version_dir(current, models_dir) / "metrics.json", dice)
    rows = version_rows(args.classes, models_dir)
    write_tsv(args.table, rows, version_columns(args.classes))
    plot_version_dice(rows, args.classes, args.figure)


if __name__ == "__main__":
    run(main)
