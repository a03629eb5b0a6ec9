#!/usr/bin/env bash
# Instructions per operation of the SIP/SDP hot paths, counted by callgrind:
# repeatable whatever else the machine is doing (wall time is not). Each
# operation runs 1 and 1+N times; the difference divided by N removes start-up.
# Reported next to the baseline measured in the same run (copying the same
# datagram), as a ratio.
#
#   ./scripts/icount.sh [N]      (default N=2000)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
N=${1:-2000}
command -v valgrind >/dev/null || { echo "icount.sh: valgrind is required (apt-get install valgrind)" >&2; exit 1; }
cargo build --release -q -p benches --bin icount
BIN=target/release/icount
count() { # operation iterations -> instructions
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$1" "$2" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
ops=(copy/invite_carrier parse/invite_carrier parse/invite_rfc3665 parse/ok_200 parse/longreq
    print/invite_carrier sdp_anchor/carrier_offer)
base=""
printf '%-28s %14s %10s\n' operation instructions "x copy"
for op in "${ops[@]}"; do
    one=$(count "$op" 1)
    many=$(count "$op" $((N + 1)))
    per=$(((many - one) / N))
    [ -n "$base" ] || base=$per
    awk -v op="$op" -v per="$per" -v base="$base" 'BEGIN { printf "%-28s %14d %10.1f\n", op, per, per / base }'
done
