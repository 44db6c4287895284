#!/usr/bin/env bash
# Install the Debian 12 packages sandgate needs to build, test and run.
# Idempotent: packages already present are left alone, and apt is asked
# nothing when every package is installed. Run as root.
#
#   deploy/install-deps.sh            build + test packages
#   deploy/install-deps.sh --check    list what is missing, install nothing
set -euo pipefail

# Build: compiler, CMake, and the libraries the components link.
build_pkgs=(
  g++ cmake make pkg-config
  libboost1.81-dev  # Asio, Beast, JSON, system::result
  libssl-dev        # SHA-256 and HMAC for the log chain, TLS tests
  libre2-dev        # re: host rules, compiled once into an RE2::Set
  libyaml-cpp-dev   # policy YAML with line and column marks
  libidn2-dev       # IDNA2008 host names to punycode (not hand-written)
  libc-ares-dev     # DNS on the proxy's own threads, with each answer's TTL (getaddrinfo reports none)
  zlib1g-dev        # reading gzip-compressed rotated network logs (gzread reads plain files too)
  help2man          # man pages generated from each command's --help
  libseccomp-dev    # the proxy's own seccomp filter once it has bound its listeners
)
# Tests, fuzzing and benchmarks.
test_pkgs=(
  libgtest-dev
  libbenchmark-dev
  clang libclang-rt-14-dev  # libFuzzer and the sanitizer runtimes
  python3 curl git openssl  # the proxy tests: origin server, clients, a TLS certificate
  systemd                   # systemd-analyze: the unit's verify and security checks
)

# Sandboxes: QEMU's microvm machine (virtiofsd comes with qemu-system-common),
# busybox for the guest's initramfs, binutils to read kernel modules' info.
# The guest kernel itself is fetched with apt-get download, and the guest's
# root filesystem built with mmdebstrap (apt), by deploy/guest/build-image.sh.
sandbox_pkgs=(
  qemu-system-x86 busybox-static binutils xz-utils
  mmdebstrap erofs-utils  # the guest's Debian root filesystem, built through apt, as an EROFS image
)

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
  "") ;;
  *) echo "install-deps.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
esac

missing=()
for p in "${build_pkgs[@]}" "${test_pkgs[@]}" "${sandbox_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
if [ $check_only -eq 1 ]; then
  printf 'missing: %s\n' "${missing[*]}"
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing ${missing[*]}; run as root to install them" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${missing[*]}"
