"""Write the subject → pseudonym mapping (keep it away from shared results)."""

import argparse

from cohortseg.cli import json_arg, run
from cohortseg.io import write_tsv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=json_arg, required=True, help="JSON [[subject, pseudonym]]")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    rows = [{"subject": a, "pseudonym": b} for a, b in args.pairs]
    write_tsv(args.output, rows, ["subject", "pseudonym"])


if __name__ == "__main__":
    run(main)
