#!/usr/bin/env bash
# System services and packages the tests need: PostgreSQL running on 127.0.0.1:5432 (trust auth),
# RabbitMQ on 127.0.0.1:5672 (guest/guest, the production profile's Celery broker),
# Debian's Chromium for the headless UI check and promtool (from Debian's prometheus package) for
# the checks of deploy/prometheus/. Idempotent: does nothing when all is there.
set -euo pipefail

need_apt=()
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# strace: the offline test audits the connect calls of a real `bentoml serve`
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
  apt_updated=1
fi

# promtool only: the Prometheus server the package also ships must not start (nor its
# recommended node exporter be installed), so service starts are denied while it installs
# unless a policy-rc.d already decides (Docker images deny everything).
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing prometheus (for promtool) from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  [ -n "${apt_updated:-}" ] || apt-get update -qq
  policy=/usr/sbin/policy-rc.d
  if [ -e "$policy" ]; then
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    rm -f "$policy" && trap - EXIT
  fi
  command -v promtool >/dev/null || { echo "prometheus installed but no promtool" >&2; exit 1; }
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "starting PostgreSQL"
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi

# A freshly installed cluster only trusts local socket peers: let the tests in as postgres.
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
  hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -n 1)
  sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/; s/^(host\s+all\s+all\s+::1\/128\s+)\S+/\1trust/; s/^(local\s+all\s+postgres\s+)\S+/\1trust/' "$hba"
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main reload
fi
psql -h 127.0.0.1 -U postgres -d postgres -Atqc "select 1 from pg_database where datname='test'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -d postgres -qc 'create database test'

# RabbitMQ, the Celery broker of the production profile's test (ml_assets_tests/deploy/).
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "installing rabbitmq-server from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq rabbitmq-server >/dev/null
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  echo "starting RabbitMQ"
  rabbitmq-server -detached
  for _ in $(seq 1 60); do (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 1; done
  (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null || { echo "RabbitMQ did not start on 127.0.0.1:5672" >&2; exit 1; }
fi
