#!/usr/bin/env bash
# Checks that Lambda bootstraps run on the provided.al2023 runtime: each must
# be an arm64 (AArch64) ELF needing no glibc symbol version newer than Amazon
# Linux 2023's (2.34). A binary built against a newer glibc starts locally and
# then fails in Lambda at init with "version `GLIBC_2.3x' not found".
#
#   scripts/check-glibc.sh [BINARY...]   (default: both built by `sam build`)
#
# GLIBC_MAX=2.34 and EXPECT_MACHINE=AArch64 override the limits
# (EXPECT_MACHINE= skips the architecture check). Needs binutils' readelf,
# which reads ELF files of any architecture.
set -euo pipefail

GLIBC_MAX=${GLIBC_MAX:-2.34}
EXPECT_MACHINE=${EXPECT_MACHINE-AArch64}
if [ $# -eq 0 ]; then
  set -- .aws-sam/build/IngestFunction/bootstrap .aws-sam/build/RouterFunction/bootstrap
fi
command -v readelf >/dev/null || { echo "check-glibc: readelf not found (apt-get install binutils)" >&2; exit 2; }

# True if version $1 is newer than version $2.
newer() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -n 1)" = "$1" ]; }

failed=0
for binary in "$@"; do
  if [ ! -f "$binary" ]; then
    echo "FAIL $binary: not found (run make build)"; failed=1; continue
  fi
  machine=$(readelf -h "$binary" 2>/dev/null | sed -n 's/^ *Machine: *//p' || true)
  if [ -z "$machine" ]; then
    echo "FAIL $binary: not an ELF file"; failed=1; continue
  fi
  if [ -n "$EXPECT_MACHINE" ] && [ "$machine" != "$EXPECT_MACHINE" ]; then
    echo "FAIL $binary: built for $machine, the functions run on $EXPECT_MACHINE (arm64)"; failed=1; continue
  fi
  # The version-needs section lists every GLIBC_x.y the binary requires.
  versions=$(readelf --version-info --wide "$binary" | grep -o 'Name: GLIBC_[^ ]*' | sed 's/^Name: GLIBC_//' | sort -u -V || true)
  if [ -z "$versions" ]; then
    echo "ok   $binary: $machine, needs no versioned glibc symbols (static?)"; continue
  fi
  private=$(grep -v '^[0-9][0-9.]*$' <<<"$versions" | tr '\n' ' ' || true)
  highest=$(grep '^[0-9][0-9.]*$' <<<"$versions" | tail -n 1 || true)
  if [ -n "$private" ]; then
    echo "FAIL $binary: needs non-public glibc versions: $private"; failed=1; continue
  fi
  if newer "$highest" "$GLIBC_MAX"; then
    # Which libraries ask for the versions over the limit.
    too_new=$(readelf --version-info --wide "$binary" | awk -v max="$GLIBC_MAX" '
      /File:/ { for (i = 1; i <= NF; i++) if ($i == "File:") file = $(i + 1) }
      /Name: GLIBC_/ { for (i = 1; i <= NF; i++) if ($i == "Name:") print file " " $(i + 1) }' |
      while read -r file name; do
        if newer "${name#GLIBC_}" "$GLIBC_MAX"; then echo "$file:$name"; fi
      done | tr '\n' ' ' || true)
    echo "FAIL $binary: $machine, needs GLIBC_$highest, newer than GLIBC_MAX=$GLIBC_MAX: ${too_new% }"
    failed=1
  else
    echo "ok   $binary: $machine, highest glibc version needed GLIBC_$highest <= $GLIBC_MAX"
  fi
done
exit "$failed"
