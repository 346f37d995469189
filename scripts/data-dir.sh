# Sourced by scripts/run and scripts/test: if SYMOPT_DATA_DIR is unset, point it at the reference
# corpora kept beside the checkout (../shared/data) or in the development machines' shared folder,
# so that Tiny Shakespeare is found without a download. Elsewhere it is downloaded (and checksummed)
# into ~/.cache/symopt/data on first use.
if [ -z "${SYMOPT_DATA_DIR:-}" ]; then
  for candidate in "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/../shared/data" /work/shared/data; do
    if [ -f "$candidate/tinyshakespeare.txt" ]; then
      export SYMOPT_DATA_DIR="$candidate"
      break
    fi
  done
fi
