"""Credentials of a real federation (README "A real federation"): at the coordinator, the CA and
the SuperLink's TLS certificate for its host names (--hosts); at a hospital, its SuperNode's key
pair (--site), whose public key it sends to the coordinator."""

import argparse
import logging

from cohortseg.core.errors import CohortsegError
from cohortseg.federated.credentials import write_node_keys, write_tls_certificates
from cohortseg.workflow.cli import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="folder to write the files to")
    parser.add_argument(
        "--hosts", nargs="+", help="the coordinator's host names and IP addresses (TLS)"
    )
    parser.add_argument("--site", help="a site's name: write its SuperNode key pair")
    args = parser.parse_args()
    if bool(args.hosts) == bool(args.site):
        raise CohortsegError("give either --hosts (at the coordinator) or --site (at a site)")
    written = (
        write_tls_certificates(args.out, args.hosts)
        if args.hosts
        else write_node_keys(args.out, args.site)
    )
    for what, path in written.items():
        logging.getLogger("cohortseg").info("%s: %s", what, path)


if __name__ == "__main__":
    run(main)
