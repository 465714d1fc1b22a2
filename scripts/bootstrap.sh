#!/usr/bin/env bash
# Install everything the lab, the demo and the tests need on a Debian 12 machine (as root).
# Idempotent: apt runs only for missing packages, pip only when requirements-dev.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  podman runc debootstrap iptables iproute2 # lab hosts: podman + runc, local base image
  mariadb-server mariadb-client mariadb-backup   # throwaway MariaDB servers for live tests
  openssh-client autossh zstd rsync git make python3-venv
  prometheus chromium                      # promtool for the alert rules, the status page in a browser
  restic                                   # offsite copies of backups (live test of the backup script)
  shellcheck                               # ansible-test sanity's shellcheck test (skipped with a warning without it)
  python3-flask python3-gunicorn python3-pymysql python3-yaml openssl  # enrollment service under test (Debian's python3, as on hosts)
  python3-pika                             # edgefleet-monitor reading the change stream's queues (Debian's python3, as on hosts)
  erlang-base erlang-crypto erlang-eldap erlang-inets erlang-mnesia erlang-os-mon erlang-parsetools erlang-public-key erlang-runtime-tools erlang-ssl erlang-syntax-tools erlang-tools erlang-xmerl socat  # RabbitMQ's runtime (change-stream live tests)
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Only promtool is wanted from the prometheus package: keep its server from running here.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [[ -d /run/systemd/system ]]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
fi

# RabbitMQ for the change-stream live tests (tests/support/rabbitmq.py): the .deb unpacked, never
# installed (its postinst starts a broker on every address); Erlang's epmd.socket kept off too.
RABBITMQ_DIR=/var/cache/edgefleet/rabbitmq
if [[ ! -x $RABBITMQ_DIR/usr/lib/rabbitmq/bin/rabbitmq-server ]]; then
  deb_dir=$(mktemp -d) && chmod 755 "$deb_dir"  # apt's _apt user writes the download there
  (cd "$deb_dir" && apt-get download -qq rabbitmq-server)
  mkdir -p "$RABBITMQ_DIR" && dpkg -x "$deb_dir"/rabbitmq-server_*.deb "$RABBITMQ_DIR" && rm -rf "$deb_dir"
fi
if [[ -d /run/systemd/system ]]; then
  systemctl disable --now epmd.socket epmd.service >/dev/null 2>&1 || true
fi

PYTHON=${PYTHON:-python3}
stamp_want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
stamp_have=$(cat .venv/.requirements.sha256 2>/dev/null || true)
if [[ "$stamp_want" != "$stamp_have" ]]; then
  echo "bootstrap: creating .venv from requirements-dev.txt"
  [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -r requirements-dev.txt 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import ansible, pymysql, molecule, testinfra, hypothesis" \
    || { echo "bootstrap: venv is incomplete" >&2; exit 1; }
  echo "$stamp_want" > .venv/.requirements.sha256
fi

# ansible-test fetches a get-pip script from a host that is unreachable here. Its stand-in
# bootstraps pip from the interpreter's own ensurepip and installs the pinned packages from PyPI.
# ansible-core 2.19 asks for get_pip_24_2.py.
stand_in=~/.ansible/test/cache/get_pip_24_2.py
if [[ ! -f $stand_in ]]; then
  mkdir -p "$(dirname "$stand_in")"
  cat > "$stand_in" <<'PY'
"""Offline stand-in for get-pip.py: ensurepip, then pip install the requested packages."""
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check"] + args)
PY
fi
echo "bootstrap: ok ($(.venv/bin/ansible --version 2>/dev/null | awk "NR==1"))"
