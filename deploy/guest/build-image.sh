#!/usr/bin/env bash
# Builds the sandbox guest image from Debian packages and sandgate's agent:
# Debian's kernel (uncompressed, for a fast PVH boot); an initramfs with
# busybox, the modules the guest needs, init and the agent; and a root
# filesystem (mmdebstrap, through apt) with the tools agents use, as a
# read-only EROFS disk the guest overlays with a tmpfs. Each part is cached by
# the hash of its inputs: a rebuild with the same inputs reuses it.
#
#   deploy/guest/build-image.sh AGENT [IMAGES_DIR]
#     AGENT       the static sandgate-agent binary
#     IMAGES_DIR  default: $SANDGATE_IMAGES, else ${SANDGATE_HOME:-$HOME/.sandgate}/images
# Prints the image's folder (vmlinux, vmlinuz, initrd.cpio, rootfs.erofs, manifest).
# SANDGATE_GUEST_PACKAGES overrides the root filesystem's package list.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
agent=${1:?usage: build-image.sh AGENT [IMAGES_DIR]}
images=${2:-${SANDGATE_IMAGES:-${SANDGATE_HOME:-$HOME/.sandgate}/images}}
mkdir -p "$images/.debs" 2>/dev/null || true
# One build at a time per cache (parallel test runs share one). A user who
# may only read a cache (one root built) locks it read-only and uses it.
[ -e "$images/.build.lock" ] || : > "$images/.build.lock"
exec 9<"$images/.build.lock"
flock 9
[ -x /bin/busybox ] || { echo "build-image: /bin/busybox is missing (apt-get install busybox-static)" >&2; exit 1; }

# Debian's current kernel package, fetched through apt (once; cached).
# Every `sandgate run` asks, so the answer is kept until apt's lists change
# (apt-cache takes about a second to say it).
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -1; }
lists=$(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo none)
kpkg=$(sed -n "s/^$lists //p" "$images/.debs/kernel-package" 2>/dev/null || true)
if [ -z "$kpkg" ]; then
  kpkg=$(kernel_pkg)
  if [ -z "$kpkg" ] && [ "$(id -u)" -eq 0 ]; then apt-get update -qq && kpkg=$(kernel_pkg); fi
  [ -n "$kpkg" ] || { echo "build-image: apt knows no linux-image-amd64 (apt-get update?)" >&2; exit 1; }
  (echo "$(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo none) $kpkg" > "$images/.debs/kernel-package") 2>/dev/null || true
fi
deb=$(ls "$images/.debs/${kpkg}_"*.deb 2>/dev/null | head -1 || true)
if [ -z "$deb" ]; then
  # (as root apt warns that its sandbox user cannot write here; harmless)
  (cd "$images/.debs" && apt-get download "$kpkg" >/dev/null 2>&1) ||
    { echo "build-image: apt-get download $kpkg failed" >&2; exit 1; }
  deb=$(ls "$images/.debs/${kpkg}_"*.deb | head -1)
fi
# The package's hash, once: a .deb of a given name and version never changes.
[ -s "$deb.sha256" ] || (sha256sum "$deb" | cut -c1-64 > "$deb.sha256") 2>/dev/null || true
deb_sha=$(cat "$deb.sha256" 2>/dev/null || sha256sum "$deb" | cut -c1-64)
kv=${kpkg#linux-image-}

# The root filesystem: Debian's minbase plus what agents reach for.
packages=${SANDGATE_GUEST_PACKAGES:-bash,coreutils,curl,ca-certificates,git,python3,nodejs,npm,netcat-openbsd,iproute2,procps,less,openssh-client}
suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
rootfs_id=$(echo "$suite $packages $(sed -n '/^# rootfs-start/,/^# rootfs-end/p' "$0")" | sha256sum | cut -c1-16)
rootfs="$images/.rootfs/$rootfs_id/rootfs.erofs"
# rootfs-start
if [ ! -f "$rootfs" ]; then
  command -v mmdebstrap >/dev/null || { echo "build-image: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }
  rwork=$(mktemp -d "$images/.rootfs-build-XXXXXX")
  echo "build-image: building the guest's root filesystem ($packages); a few minutes, once" >&2
  mmdebstrap --quiet --mode=root --variant=minbase --include="$packages" "$suite" "$rwork/root" >&2 ||
    { rm -rf "$rwork"; echo "build-image: mmdebstrap failed" >&2; exit 1; }
  # Names are resolved by the proxy, never in the guest.
  : > "$rwork/root/etc/resolv.conf"
  # EROFS, not ext4: read-only by design, and under TCG its three small
  # modules load in about 0.1 s where ext4's five took 0.3 s.
  command -v mkfs.erofs >/dev/null || { echo "build-image: mkfs.erofs is missing (apt-get install erofs-utils)" >&2; exit 1; }
  mkfs.erofs --quiet "$rwork/rootfs.erofs" "$rwork/root" >&2
  mkdir -p "$(dirname "$rootfs")"
  mv "$rwork/rootfs.erofs" "$rootfs.tmp" && mv "$rootfs.tmp" "$rootfs"
  rm -rf "$rwork"
fi
# rootfs-end

# crc32c_generic: erofs (through libcrc32c) asks for a crc32c driver by name
# (no module dependency says so).
mods="virtio_mmio virtio_console virtiofs virtio_blk crc32c_generic erofs overlay evdev button"
# Loaded only when the workspace comes over 9p (virtiofsd could not run).
mods_9p="9p 9pnet_virtio"
id=$( (echo "$deb_sha"; sha256sum /bin/busybox "$agent" "$here/init" "$0"; echo "$mods $mods_9p $rootfs_id") | sha256sum | cut -c1-16)
out="$images/$id"
if [ -f "$out/manifest" ]; then echo "$out"; exit 0; fi

work=$(mktemp -d "$images/.build-XXXXXX")
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$deb" "$work/deb"
root="$work/root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,etc,lib/modules,root,usr/bin,usr/sbin}
cp /bin/busybox "$root/bin/busybox"
strip -o "$root/sbin/sandgate-agent" "$agent"
cp "$here/init" "$root/init"
chmod 755 "$root/init" "$root/sbin/sandgate-agent"
# Module dependencies from each module's own .modinfo section (the package
# ships no modules.dep; depmod runs at install time).
moddir="$work/deb/lib/modules/$kv"
path_of() { find "$moddir" \( -name "$1.ko*" -o -name "${1//_/-}.ko*" \) -print -quit; }
plain_ko() {
  case "$1" in
    *.xz) xz -dc "$1" ;;
    *.zst) zstd -dc "$1" ;;
    *) cat "$1" ;;
  esac
}
# The module as the guest loads it: plain, without its appended signature.
# Checking signatures (RSA and SHA-256 in emulation) took 80 ms of a TCG
# boot's 0.28 s of module loading, and the check proves nothing here:
# the host hands the guest its kernel and modules together, from a package
# apt verified, and the kernel loads unsigned modules anyway (it notes
# "module verification failed" once and marks itself tainted, E).
guest_ko() {
  plain_ko "$1" > "$work/sig.ko"
  python3 - "$work/sig.ko" <<'PY'
import struct, sys
data = open(sys.argv[1], 'rb').read()
marker = b'~Module signature appended~\n'
if data.endswith(marker):
    # struct module_signature (12 bytes) precedes the marker; its last field is the big-endian length.
    info = data[-len(marker) - 12:-len(marker)]
    signer_len, key_id_len, sig_len = info[3], info[4], struct.unpack('>I', info[8:12])[0]
    data = data[:-len(marker) - 12 - sig_len - signer_len - key_id_len]
sys.stdout.buffer.write(data)
PY
}
deps_of() {
  plain_ko "$1" > "$work/mod.ko"
  objcopy -O binary --only-section=.modinfo "$work/mod.ko" "$work/modinfo"
  tr '\0' '\n' < "$work/modinfo" | sed -n 's/^depends=//p' | tr ',' ' '
}
resolve() {
  local p d
  p=$(path_of "$1")
  [ -n "$p" ] || { echo "build-image: module $1 is not in $kpkg" >&2; return 1; }
  for d in $(deps_of "$p"); do resolve "$d" || return 1; done
  echo "$1"
}
# order: loaded at boot; order-9p: the rest that 9p needs, loaded on demand.
order=""
for m in $mods; do order+="$(resolve "$m") "; done
order_9p=""
for m in $mods_9p; do order_9p+="$(resolve "$m") "; done
: > "$root/lib/modules/order"
: > "$root/lib/modules/order-9p"
for m in $(echo "$order" | tr ' ' '\n' | awk 'NF && !seen[$0]++'); do
  guest_ko "$(path_of "$m")" > "$root/lib/modules/$m.ko"
  echo "$m" >> "$root/lib/modules/order"
done
for m in $(echo "$order_9p" | tr ' ' '\n' | awk 'NF && !seen[$0]++'); do
  [ -f "$root/lib/modules/$m.ko" ] && continue
  guest_ko "$(path_of "$m")" > "$root/lib/modules/$m.ko"
  echo "$m" >> "$root/lib/modules/order-9p"
done
# Uncompressed: under TCG inflating it costs more than reading it.
(cd "$root" && find . | LC_ALL=C sort | /bin/busybox cpio -o -H newc 2>/dev/null) > "$work/initrd.cpio"
cp "$work/deb/boot/vmlinuz-$kv" "$work/vmlinuz"
# The uncompressed kernel boots by its PVH entry: no real-mode stub, no
# decompression (seconds saved under TCG).
python3 - "$work/vmlinuz" "$work/vmlinux" <<'PY'
import lzma, sys
data = open(sys.argv[1], 'rb').read()
at = data.find(b'\xfd7zXZ\x00')
if at < 0: sys.exit("build-image: the kernel is not xz-compressed")
open(sys.argv[2], 'wb').write(lzma.LZMADecompressor().decompress(data[at:]))
PY
{
  echo "id $id"
  echo "kernel $kpkg $deb_sha"
  echo "busybox $(sha256sum /bin/busybox | cut -c1-64)"
  echo "agent $(sha256sum "$agent" | cut -c1-64)"
  echo "modules $(tr '\n' ' ' < "$root/lib/modules/order")"
  echo "rootfs $rootfs_id $suite $packages"
} > "$work/manifest.tmp"
# Publish by renaming a complete folder: a concurrent build of the same
# image either wins the rename or finds this one in place.
mkdir "$work/image"
# Readable by all, whatever the umask: started by root, QEMU runs as an
# unprivileged user and reads its kernel and initrd through descriptors
# sandgate opened, which still needs the files' own read permission.
chmod 644 "$work/vmlinux" "$work/vmlinuz" "$work/initrd.cpio"
mv "$work/vmlinux" "$work/vmlinuz" "$work/initrd.cpio" "$work/image/"
ln -s "../.rootfs/$rootfs_id/rootfs.erofs" "$work/image/rootfs.erofs"
mv "$work/manifest.tmp" "$work/image/manifest"
mv -T "$work/image" "$out" 2>/dev/null || [ -f "$out/manifest" ]
echo "$out"
