#!/usr/bin/env bash
# Set up a fresh Debian machine for callpass-worker: system packages, then .venv.
# Idempotent and quiet when everything is there; safe to run before every make target.
set -o errexit -o pipefail -o nounset

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
need_apt=()

command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
"$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ "${WITH_COMPOSE_CHECK:-0}" = 1 ] && ! command -v docker-compose >/dev/null 2>&1; then
  need_apt+=(docker-compose)
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "bootstrap: need ${need_apt[*]} (apt-get); run as root or install them" >&2
    exit 1
  fi
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "bootstrap: installing ${need_apt[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts a system redis-server on 6379 on install; we start our own, so leave it be.
fi

stamp="$VENV/.installed"
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing the project and its dev tools into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[dev]"
  touch "$stamp"
fi
