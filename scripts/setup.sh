#!/usr/bin/env bash
# Bootstraps a fresh Debian 12 machine for isorun, idempotently: apt packages, uv, Go, the
# Python workspace and the guest agent build. Every step checks before it acts, so a second
# run costs a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-system-x86 qemu-utils      # the VMM
  linux-image-amd64               # the guest kernel and its modules
  erofs-utils                     # read-only image disks
  docker-registry apache2-utils   # loopback OCI registry for tests, htpasswd for its basic auth
  debootstrap busybox-static      # test fixture images
  binutils cpio                   # strip module signatures; inspect initramfs
  nftables iproute2
  postgresql                      # the backend tests run against PostgreSQL as well as SQLite
  ca-certificates curl git
  chromium                        # the public URL test renders a sandbox page headless
  libnss-myhostname               # *.localhost resolves to loopback (RFC 6761) for URL clients
)
GO_MIN_MINOR=22
GO_TOOLCHAIN_MODULE=v0.0.1-go1.22.12.linux-amd64

log() { printf '[setup] %s\n' "$*"; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

export PATH="$HOME/.local/bin:/usr/local/go/bin:$PATH"
if ! command -v uv >/dev/null; then
  log "installing uv"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get install -y -q --no-install-recommends python3-pip
  fi
  python3 -m pip install --user --quiet uv 2>/dev/null \
    || python3 -m pip install --user --quiet --break-system-packages uv
fi

go_ok() {
  command -v go >/dev/null || return 1
  local minor
  minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
  [ "$minor" -ge "$GO_MIN_MINOR" ]
}
if ! go_ok; then
  # Debian 12's golang-go (1.19) is too old for the agent and cannot switch toolchains by
  # itself, so it fetches a newer toolchain as an ordinary module and installs that.
  log "installing Go 1.${GO_MIN_MINOR}"
  command -v go >/dev/null || apt-get install -y -q --no-install-recommends golang-go
  export PATH="/usr/lib/go/bin:$PATH"
  cache=$(mktemp -d)
  GOMODCACHE="$cache" GOFLAGS=-modcacherw go mod download "golang.org/toolchain@${GO_TOOLCHAIN_MODULE}"
  rm -rf /usr/local/go
  cp -a "$cache/golang.org/toolchain@${GO_TOOLCHAIN_MODULE}" /usr/local/go
  chmod -R a+rX /usr/local/go
  chmod a+x /usr/local/go/bin/* /usr/local/go/pkg/tool/*/*
  rm -rf "$cache"
  hash -r
  go_ok
fi

log "syncing the Python workspace"
# --locked: every package's requirements must resolve together in the committed uv.lock.
uv sync --quiet --locked --all-packages

log "preparing the deepagents-code venv (Python >= 3.12 only; its test skips without one)"
uv run --quiet python -m tests.framework.dcode_venv

log "building the guest agent"
make --no-print-directory -s agent
