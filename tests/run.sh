#!/usr/bin/env bash
# The whole test suite, as `make test` runs it: the cluster tests (tests/cluster/, which spend
# most of their time waiting for SLURM to start jobs and report them done) in the background,
# beside the rest of the suite in the foreground, each pytest session in a temporary folder of
# its own. Prints the cluster tests' output after the rest, then both sessions' results, and
# exits non-zero if either failed (5, no test collected, is not a failure).
#
# Usage: tests/run.sh [PYTEST ARGS...]   (passed to both sessions)
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
base=$(mktemp -d /tmp/cohortseg-tests.XXXXXX)
cluster_log="$base/cluster.log"

"$PYTHON" -m pytest -ra --durations=10 --basetemp="$base/cluster" tests/cluster "$@" \
    >"$cluster_log" 2>&1 &
cluster_pid=$!
"$PYTHON" -m pytest -ra --durations=25 --basetemp="$base/rest" --ignore=tests/cluster "$@"
rest=$?
wait "$cluster_pid"
cluster=$?

echo
echo "===================== tests/cluster (ran in the background) ====================="
cat "$cluster_log"
echo
echo "tests/cluster: exit $cluster; the rest: exit $rest"
if [[ $rest -eq 0 || $rest -eq 5 ]] && [[ $cluster -eq 0 || $cluster -eq 5 ]]; then
    rm -rf "$base"
else
    echo "the failed sessions' temporary folders are kept in $base"
    exit 1
fi
