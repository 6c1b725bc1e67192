#!/usr/bin/env bash
# Fails when a tracked file over 1 MiB appears outside the folders that
# need large data, or when test binaries, profiles or test output are
# tracked. `make test` runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=$((1024 * 1024))
# Folders allowed to hold large data files (bundled datasets).
allowed='^(firmware-sim/data|shared/data)/'
bad=0
while IFS= read -r -d '' f; do
  [ -f "$f" ] || continue
  size=$(stat -c %s "$f")
  if [ "$size" -gt "$limit" ] && ! [[ $f =~ $allowed ]]; then
    echo "tracked file over 1 MiB outside the data folders: $f ($size bytes)"; bad=1
  fi
  case "$f" in
    *.test|*.out|*.prof|*.pprof) echo "tracked test binary or output: $f"; bad=1 ;;
  esac
done < <(git ls-files -z)
exit $bad
