#!/bin/sh
# Prints, one per line, the Debian/Ubuntu packages that own the shared libraries the given
# binaries load (ldd, then dpkg -S). Used by the Dockerfile's build stage to decide what the
# runtime stage installs. Libraries no package owns (the CUDA driver, injected at run time by
# the NVIDIA container toolkit) are skipped, with a note on stderr.
set -eu
for bin in "$@"; do
  ldd "$bin" | awk '/=> \// {print $3} /not found/ {print "NOTFOUND:" $1}'
done | sort -u | while read -r lib; do
  case "$lib" in
    NOTFOUND:*) echo "runtime-packages: ${lib#NOTFOUND:} not found (skipped)" >&2; continue ;;
  esac
  # usrmerge: dpkg may know the file as /lib/... or /usr/lib/...; alternatives (libopenblas)
  # resolve to the real provider's path.
  real=$(readlink -f "$lib")
  pkg=""
  for path in "$real" "$lib" "${lib#/usr}" "/usr$lib" "${real#/usr}"; do
    pkg=$(dpkg -S "$path" 2>/dev/null | head -n 1 | cut -d: -f1) && [ -n "$pkg" ] && break
  done
  if [ -n "$pkg" ]; then
    echo "$pkg"
  else
    echo "runtime-packages: no package owns $lib (skipped)" >&2
  fi
done | sort -u
