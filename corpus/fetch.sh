#!/bin/bash
# fetch.sh OUTDIR [PKG...]
#
# Reproduces the download of every closure listed in closures/<pkg>.txt (next to
# this script), or only of the named PKGs. `cargo xtask corpus` runs it.
#
# Layout produced:
#   OUTDIR/pool/<filename>.deb          one copy of every .deb (sha256-verified)
#   OUTDIR/closures/<pkg>/<filename>    hard links into pool: exactly the debs that
#                                       `dpkg -i` needs on top of the minbase rootfs
#   OUTDIR/closures/<pkg>/ORDER         apt's unpack order (name=version filename)
#
# Idempotent / cached: debs already in OUTDIR/pool with the right sha256 are not
# fetched again; if nothing is missing no rootfs copy is made and no network is used.
#
# Downloads run with apt inside a THROWAWAY reflink copy of the cached minbase
# rootfs (never written to); the copy is deleted on exit. Exact versions are
# requested (`apt-get download name=version`) and checked against the sha256
# recorded in closures/<pkg>.txt.
#
# Env:
#   ROOTFS   cached minbase rootfs (default /work/main/target/xtask/rootfs-bookworm-minbase)
#   MIRROR   optional: override sources.list in the throwaway copy, e.g.
#            "deb http://deb.debian.org/debian bookworm main"
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOTFS=${ROOTFS:?set ROOTFS to the cached minbase rootfs (cargo xtask corpus does)}
[ $# -ge 1 ] || { echo "usage: $0 OUTDIR [PKG...]" >&2; exit 2; }
OUT=$1; shift
mkdir -p "$OUT/pool" "$OUT/closures"
OUT=$(cd "$OUT" && pwd)

# closures/ = packages that install with ONE `dpkg -i *.deb` on minbase.
cfile() { echo "$HERE/closures/$1.txt"; }
if [ $# -gt 0 ]; then PKGS=("$@"); else
  PKGS=(); for f in "$HERE"/closures/*.txt; do [ -f "$f" ] || continue; PKGS+=("$(basename "$f" .txt)"); done
fi

# ---- 1. which debs are missing / corrupt in the pool -------------------------
ALL=$(mktemp); NEED=$(mktemp)
cleanup_tmp() { rm -f "$ALL" "$NEED"; }
for p in "${PKGS[@]}"; do
  cf=$(cfile "$p"); [ -f "$cf" ] || { echo "no closure file $cf" >&2; exit 2; }
  grep -v '^#' "$cf"
done | sort -u > "$ALL"

while IFS=$'\t' read -r nv fn size sha; do
  if [ -f "$OUT/pool/$fn" ] && [ "$(sha256sum < "$OUT/pool/$fn" | cut -d' ' -f1)" = "$sha" ]; then
    continue
  fi
  rm -f "$OUT/pool/$fn"
  printf '%s\t%s\t%s\t%s\n' "$nv" "$fn" "$size" "$sha" >> "$NEED"
done < "$ALL"

n_need=$(wc -l < "$NEED")
echo "closures: ${#PKGS[@]}  distinct debs: $(wc -l < "$ALL")  to download: $n_need"

# ---- 2. download missing ones with apt in a throwaway rootfs copy -----------
if [ "$n_need" -gt 0 ]; then
  [ -d "$ROOTFS/var/lib/dpkg" ] || { echo "rootfs $ROOTFS not found" >&2; exit 2; }
  TMPD=$(mktemp -d "$OUT/.aptroot.XXXXXX")
  trap 'rm -rf "$TMPD"; cleanup_tmp' EXIT
  R="$TMPD/root"
  cp -a --reflink=auto "$ROOTFS" "$R"
  cp -L /etc/resolv.conf "$R/etc/resolv.conf" 2>/dev/null || true
  [ -n "${MIRROR:-}" ] && echo "$MIRROR" > "$R/etc/apt/sources.list"
  chroot "$R" apt-get -q update
  mkdir -p "$R/dl"
  # download in batches (apt-get download fails as a whole if one version is gone)
  cut -f1 "$NEED" | xargs -r -n 50 sh -c '
    R=$0
    chroot "$R" sh -c "cd /dl && apt-get -q -o APT::Sandbox::User=root download \"\$@\"" sh "$@" ' "$R" || {
      echo "ERROR: apt-get download failed. If a version vanished from deb.debian.org after a" >&2
      echo "bookworm point release, set MIRROR to a snapshot.debian.org URL, e.g." >&2
      echo "  MIRROR='deb [check-valid-until=no] http://snapshot.debian.org/archive/debian/20250101T000000Z bookworm main'" >&2
      exit 1; }
  fail=0
  while IFS=$'\t' read -r nv fn size sha; do
    src="$R/dl/$fn"
    if [ ! -f "$src" ]; then  # filename mismatch: find by hash
      # awk reads to the end: exiting at the match would kill sha256sum
      # with SIGPIPE, and pipefail would end the whole script with 141.
      src=$(cd "$R/dl" && sha256sum -- *.deb | awk -v s="$sha" '$1==s && !f{print $2; f=1}')
      [ -n "$src" ] && src="$R/dl/$src"
    fi
    if [ -z "$src" ] || [ ! -f "$src" ] || [ "$(sha256sum < "$src" | cut -d' ' -f1)" != "$sha" ]; then
      echo "ERROR: $nv ($fn): missing or sha256 mismatch" >&2; fail=1; continue
    fi
    mv -f "$src" "$OUT/pool/$fn"
  done < "$NEED"
  [ $fail = 0 ] || exit 1
fi

# ---- 3. per-closure directories (hard links) -------------------------------
for p in "${PKGS[@]}"; do
  d="$OUT/closures/$p"; rm -rf "$d"; mkdir -p "$d"
  grep -v '^#' "$(cfile "$p")" | while IFS=$'\t' read -r nv fn size sha; do
    ln -f "$OUT/pool/$fn" "$d/$fn" 2>/dev/null || cp -f "$OUT/pool/$fn" "$d/$fn"
    printf '%s\t%s\n' "$nv" "$fn" >> "$d/ORDER"
  done
done
cleanup_tmp
echo "ok: $(du -sh "$OUT/pool" | cut -f1) in $OUT/pool; closures in $OUT/closures/"
