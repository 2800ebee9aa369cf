# shellcheck shell=bash
# The Galera cluster steps of CI (issue 12), sourced by .ci/run:
#
#   . .ci/galera-steps.sh
#   if galera_start; then record galera-start ok; else record galera-start FAILED; fi
#   ... tests that read ASYNCTASK_TEST_GALERA_URL ...
#   if galera_stop; then record galera-stop ok; else record galera-stop FAILED; fi
#
# galera_start brings up a fresh 3-node cluster with scripts/galera-cluster (client ports 3311 to
# 3313, data under $GALERA_DIR) and exports ASYNCTASK_TEST_GALERA_URL, the comma-separated node
# URLs on database $GALERA_CI_DATABASE, and ASYNCTASK_TEST_GALERA_DIR.  galera_stop stops the nodes it started. Both return
# non-zero on failure instead of exiting, so that .ci/run goes on to its other steps and its
# summary; galera_stop is safe to call when the start failed halfway.

GALERA_DIR="${GALERA_DIR:-/var/tmp/atm-galera-ci}"
GALERA_NODES="${GALERA_NODES:-3}"
GALERA_CI_DATABASE="${GALERA_CI_DATABASE:-atm_ci_galera}"

galera_cluster() {
  "$(dirname "${BASH_SOURCE[0]}")/../scripts/galera-cluster" "$@" --dir "$GALERA_DIR"
}

galera_start() {
  local started=$SECONDS urls
  printf '\n=== Galera cluster: %s nodes in %s\n' "$GALERA_NODES" "$GALERA_DIR"
  # A cluster left running by an earlier run is stopped and wiped: CI starts from nothing.
  galera_cluster stop || true
  if ! urls=$(galera_cluster start --fresh --nodes "$GALERA_NODES" --database "$GALERA_CI_DATABASE"); then
    echo "galera: the cluster did not start" >&2
    return 1
  fi
  # The node-kill tests find the nodes' pid files and restart them with the same --dir.
  export ASYNCTASK_TEST_GALERA_URL ASYNCTASK_TEST_GALERA_DIR="$GALERA_DIR"
  ASYNCTASK_TEST_GALERA_URL=$(tail -n 1 <<<"$urls")
  echo "galera: started in $((SECONDS - started)) s"
  echo "ASYNCTASK_TEST_GALERA_URL=$ASYNCTASK_TEST_GALERA_URL"
  galera_cluster status
}

galera_stop() {
  local started=$SECONDS
  printf '\n=== Galera cluster: stop\n'
  if ! galera_cluster stop; then
    echo "galera: stop failed" >&2
    return 1
  fi
  echo "galera: stopped in $((SECONDS - started)) s"
}
