#!/usr/bin/env bash
# Installs everything regionwall needs to build and test, idempotently.
# Each step is skipped when its result is already present, so a second run
# takes well under a second. See ../shared/TOOLCHAIN.md for why each pin.
set -euo pipefail

USER_TOOLCHAIN=1.98.0
EBPF_TOOLCHAIN=nightly-2026-07-20
BPF_LINKER_VERSION=0.13.0
LLVM_PREFIX=/usr/lib/llvm-22

log() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
# systemd: `systemd-analyze verify` of the installed unit (works offline,
# no running systemd needed); man-db: `man -l` renders the generated pages;
# dnsmasq + bind9-dnsutils: the hostname tests run a real resolver and `dig`;
# prometheus: the metrics tests run `promtool check metrics` and a real server;
# chromium + chromium-driver: the dashboard test drives a real headless
# browser over WebDriver.
for pkg in llvm-22-dev libpolly-22-dev zlib1g-dev libzstd-dev iproute2 iputils-ping nftables systemd man-db dnsmasq-base bind9-dnsutils prometheus chromium chromium-driver; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages: ${need_apt[*]} (run as root, or install them yourself)"
    exit 1
  fi
  log "installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! command -v rustup >/dev/null 2>&1; then
  log "rustup is required (https://rustup.rs); it is the only thing assumed installed"
  exit 1
fi

installed_toolchains=$(rustup toolchain list)
if ! grep -q "^${USER_TOOLCHAIN}-" <<<"$installed_toolchains"; then
  log "installing Rust ${USER_TOOLCHAIN}"
  rustup toolchain install "$USER_TOOLCHAIN" --profile minimal --component clippy,rustfmt
fi
if ! grep -q "^${EBPF_TOOLCHAIN}-" <<<"$installed_toolchains" \
   || ! rustup component list --toolchain "$EBPF_TOOLCHAIN" --installed 2>/dev/null | grep -q '^rust-src' \
   || ! rustup component list --toolchain "$EBPF_TOOLCHAIN" --installed 2>/dev/null | grep -q '^clippy'; then
  # clippy: `./x test` lints the eBPF crate for the bpf target too.
  log "installing ${EBPF_TOOLCHAIN} + rust-src, clippy"
  rustup toolchain install "$EBPF_TOOLCHAIN" --profile minimal --component rust-src --component clippy
fi

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
if ! "$CARGO_BIN/bpf-linker" --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  log "building bpf-linker ${BPF_LINKER_VERSION} against LLVM 22 (a few minutes, once)"
  LLVM_SYS_221_PREFIX="$LLVM_PREFIX" PATH="$LLVM_PREFIX/bin:$PATH" \
    cargo +"$USER_TOOLCHAIN" install bpf-linker --locked --version "$BPF_LINKER_VERSION" \
      --no-default-features --features llvm-22
fi

# cargo-fuzz: `cargo xtask fuzz` (part of `./x test`) runs the fuzz targets
# briefly on the eBPF nightly.
CARGO_FUZZ_VERSION=0.13.2
if ! "$CARGO_BIN/cargo-fuzz" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  log "installing cargo-fuzz ${CARGO_FUZZ_VERSION}"
  cargo +"$USER_TOOLCHAIN" install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

# The bpf filesystem pins live on (systemd mounts it; bare containers may not).
if [ "$(id -u)" = 0 ] && ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
  log "mounting a bpf filesystem on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi
