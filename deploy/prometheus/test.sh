#!/usr/bin/env bash
# Check the Prometheus configs and alert rules, and run the rules' unit tests:
#   deploy/prometheus/test.sh
# promtool comes from PATH, else from Debian's `prometheus` package (installed with
# apt-get when running as root). Exit 0 only when every check and test passes.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() {
  printf 'ERROR: %s\n' "$*" >&2
  exit 1
}

# Whether the apt sources offer package $1. The policy is read whole before it is matched:
# `apt-cache policy | grep -q` under pipefail fails with SIGPIPE (exit 141) whenever grep
# exits at the first match while apt-cache is still writing its version table.
apt_has_candidate() {
  local policy
  policy="$(apt-cache policy "$1" 2>/dev/null)" || return 1
  [[ "$policy" =~ Candidate:\ [0-9] ]]
}

# Install Debian's `prometheus` package (the server and promtool) when running as root with
# apt; $1 names the tool wanted, $2 says how to get it otherwise.
install_prometheus_package() {
  local tool="$1" how="$2"
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    die "$tool not found; $how"
  fi
  echo "$tool not found; installing Debian's prometheus package for it" >&2
  apt-get update -qq >&2 || die "apt-get update failed; $how"
  apt_has_candidate prometheus || die "no prometheus package in the apt sources; $how"
  # --no-install-recommends: only the package itself is wanted, not the exporters it
  # recommends; its service is not used (and policy-rc.d usually stops it from starting).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2 ||
    die "apt-get install prometheus failed; $how"
}

find_promtool() {
  command -v promtool && return
  local how="install Prometheus's promtool: 'sudo apt-get install prometheus' (Debian/Ubuntu ships it
  as /usr/bin/promtool), or a release from prometheus.io/download, then put promtool on PATH"
  install_prometheus_package promtool "$how"
  command -v promtool || die "the prometheus package installed no promtool; $how"
}

# The Prometheus server, for tests/integration/test_prometheus.py (the same package).
find_prometheus() {
  command -v prometheus && return
  local how="install the Prometheus server: 'sudo apt-get install prometheus' (Debian/Ubuntu ships
  it as /usr/bin/prometheus), or a release from prometheus.io/download, then put prometheus on PATH"
  install_prometheus_package prometheus "$how"
  command -v prometheus || die "the prometheus package installed no prometheus; $how"
}

# The rules use keep_firing_for, which Prometheus knows from 2.42 on: fail clearly before.
require_version() {
  local version="$1" major minor
  [[ "$version" =~ version\ ([0-9]+)\.([0-9]+) ]] || die "cannot read a version from: $version"
  major="${BASH_REMATCH[1]}" minor="${BASH_REMATCH[2]}"
  if ((major < 2 || (major == 2 && minor < 42))); then
    die "${version%%$'\n'*} is older than 2.42, which the alert rules need (keep_firing_for)"
  fi
}

main() {
  local promtool version
  promtool="$(find_promtool)"
  version="$("$promtool" --version 2>&1)" || true
  echo "promtool: $promtool (${version%%$'\n'*})"
  require_version "$version"

  cd "$HERE"
  "$promtool" check config prometheus.yml prometheus.compose.yml
  "$promtool" check rules rules/*.rules.yml
  "$promtool" test rules tests/*.test.yml
  # promtool prints no count; each test group (`- name:`) passed when it exits 0.
  echo "promtool: $(cat tests/*.test.yml | grep -c '^  - name:') passed, 0 failed"
}

# Sourcing the script (tests/unit/test_deploy_scripts.py does) defines the functions only.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
