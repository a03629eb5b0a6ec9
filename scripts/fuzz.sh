#!/usr/bin/env bash
# Bounded libFuzzer run of every target in fuzz/ (cargo-fuzz, nightly, ASan).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   seed, build once, fuzz each target SECONDS (default 60)
#   scripts/fuzz.sh --seed-only             only (re)seed fuzz/corpus/<target>/ from the fixtures
#
# Environment:
#   FUZZ_SECONDS   seconds per target when no SECONDS argument is given (default 60)
#   FUZZ_TIMEOUT   libFuzzer -timeout: one input slower than this is a failure (default 10 s;
#                  a parser that takes seconds on one message is a DoS bug at a network edge)
#
# Seeds: fuzz/corpus/<target>/ is filled from sbc/tests/fixtures/corpus/ (the RFC 4475/5118
# torture messages, RFC 3261/3665 flows, RFC 3264/4317 SDP) and from earlier regressions.
# fuzz/corpus/ is generated and git-ignored; seeding is idempotent (files are named by hash).
#
# On a failure (crash, panic, leak, timeout, OOM) the offending input is copied to
#   sbc/tests/fixtures/regress/<target>/
# and the script exits non-zero. Commit that file: sbc's regression test replays every file in
# sbc/tests/fixtures/regress/<target>/ through the same properties on stable, in plain
# `cargo test`, so the bug stays fixed without the fuzzer.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

FUZZ_DIR=$ROOT/fuzz
FIXTURES=$ROOT/sbc/tests/fixtures
CORPUS_SRC=$FIXTURES/corpus
REGRESS=$FIXTURES/regress
TARGETS_ALL=(sip_message sdp framing)
# One set of build flags for `build` and `run`, so `run` never rebuilds inside the time budget.
# -O: optimised; -a: debug assertions + overflow checks (integer overflow in a length
# computation is a bug we want to hear about). Sanitizer: cargo-fuzz default (address).
PROFILE_FLAGS=(-O -a)
BUILD_FLAGS=(--fuzz-dir "$FUZZ_DIR" "${PROFILE_FLAGS[@]}")

die() {
    echo "fuzz.sh: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------
# Seeding
# ---------------------------------------------------------------------------------------------

# add_seed TARGET < bytes: store stdin as fuzz/corpus/TARGET/<sha1> (libFuzzer's own naming).
add_seed() {
    local dir=$FUZZ_DIR/corpus/$1 tmp hash
    tmp=$(mktemp "$dir/.seed.XXXXXX")
    cat >"$tmp"
    hash=$(sha1sum <"$tmp")
    mv -f "$tmp" "$dir/${hash%% *}"
}

# The body of a SIP message file: everything after the first empty line (CRLF or LF).
sip_body() {
    sed '1,/^\r\{0,1\}$/d' "$1"
}

seed_corpora() {
    [[ -d $CORPUS_SRC ]] || die "no fixtures at $CORPUS_SRC"
    local t f body group prev seed
    for t in "${TARGETS_ALL[@]}"; do mkdir -p "$FUZZ_DIR/corpus/$t"; done

    local -a sip_files=(
        "$CORPUS_SRC"/rfc4475/*.dat
        "$CORPUS_SRC"/rfc5118/wire/*.dat
        "$CORPUS_SRC"/rfc5118/archive/*.dat # LF line ends, as published
        "$CORPUS_SRC"/flows/*/*.sip
    )
    local -a sdp_files=("$CORPUS_SRC"/sdp/*/*.sdp)

    # sip_message: every SIP message we have.
    for f in "${sip_files[@]}"; do add_seed sip_message <"$f"; done

    # sdp: the SDP examples, plus every SDP body carried by a SIP message.
    for f in "${sdp_files[@]}"; do add_seed sdp <"$f"; done
    # (Via a file: `sed | head -c3` could SIGPIPE sed and trip pipefail.)
    body=$(mktemp)
    for f in "${sip_files[@]}"; do
        sip_body "$f" >"$body"
        if [[ $(head -c 3 "$body") == "v=0" ]]; then add_seed sdp <"$body"; fi
    done
    rm -f "$body"

    # framing: first byte = chunking seed (0: byte by byte; 255: up to 64-byte chunks).
    # Single messages, and each RFC 3665/3261 call flow as one stream with a double-CRLF
    # keep-alive ping between messages (that is what a TCP connection carries).
    for f in "${sip_files[@]}"; do { printf '\x07'; cat "$f"; } | add_seed framing; done
    local -a groups=()
    while IFS= read -r group; do groups+=("$group"); done < <(
        for f in "$CORPUS_SRC"/flows/*/*.sip; do printf '%s\n' "${f%%-F[0-9]*}"; done | sort -u
    )
    for seed in '\x00' '\x2a' '\xff'; do
        for group in "${groups[@]}"; do
            {
                printf '%b' "$seed"
                prev=
                for f in "$group"-F[0-9]*.sip; do
                    [[ -n $prev ]] && printf '\r\n\r\n'
                    cat "$f"
                    prev=1
                done
            } | add_seed framing
        done
    done

    # Earlier failures of a target seed it too.
    for t in "${TARGETS_ALL[@]}"; do
        for f in "$REGRESS/$t"/*; do
            [[ -f $f ]] && add_seed "$t" <"$f"
        done
    done

    for t in "${TARGETS_ALL[@]}"; do
        echo "fuzz.sh: corpus $t: $(find "$FUZZ_DIR/corpus/$t" -type f | wc -l) inputs"
    done
}

# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

shopt -s nullglob

if [[ ${1:-} == --seed-only ]]; then
    seed_corpora
    exit 0
fi
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
fi

SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
    SECONDS_PER_TARGET=$1
    shift
fi
[[ $SECONDS_PER_TARGET =~ ^[0-9]+$ && $SECONDS_PER_TARGET -gt 0 ]] ||
    die "SECONDS must be a positive integer, got '$SECONDS_PER_TARGET'"
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${TARGETS_ALL[@]}")
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-10}

# cargo-fuzz needs nightly (-Zsanitizer). `cargo +nightly` makes rustup export
# RUSTUP_TOOLCHAIN=nightly, so the cargo that cargo-fuzz spawns is nightly too, whatever a
# rust-toolchain file says.
cargo +nightly fuzz --version >/dev/null 2>&1 ||
    die "'cargo +nightly fuzz' does not work: run ./scripts/test.sh --install-only (or: cargo install cargo-fuzz --locked)"

seed_corpora

echo "fuzz.sh: building fuzz targets (not counted in the fuzz budget)"
t0=$SECONDS
cargo +nightly fuzz build "${BUILD_FLAGS[@]}"
echo "fuzz.sh: build took $((SECONDS - t0))s"

failed=()
for t in "${TARGETS[@]}"; do
    artifacts=$FUZZ_DIR/artifacts/$t
    mkdir -p "$artifacts"
    log=$FUZZ_DIR/artifacts/$t.log
    marker=$(mktemp)
    echo "fuzz.sh: fuzzing $t for ${SECONDS_PER_TARGET}s (log: ${log#"$ROOT"/})"
    set +e
    cargo +nightly fuzz run "${BUILD_FLAGS[@]}" "$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout="$FUZZ_TIMEOUT" \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    if [[ $rc -eq 0 ]]; then
        grep -E '^(Done|#[0-9]+[[:space:]]+DONE)' "$log" | tail -n 2 | sed 's/^/    /'
        rm -f "$marker"
        continue
    fi

    # Inputs libFuzzer wrote during this run: crash-*, leak-*, timeout-*, oom-*.
    new=()
    while IFS= read -r f; do new+=("$f"); done < <(find "$artifacts" -maxdepth 1 -type f -newer "$marker" \
        \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
    rm -f "$marker"
    echo "---- last lines of $log ----" >&2
    tail -n 60 "$log" >&2
    echo "----" >&2
    if [[ ${#new[@]} -eq 0 ]]; then
        echo "fuzz.sh: $t: cargo fuzz exited with $rc and left no input (build or setup failure?)" >&2
        failed+=("$t")
        continue
    fi
    mkdir -p "$REGRESS/$t"
    for f in "${new[@]}"; do
        cp -f "$f" "$REGRESS/$t/"
        echo "fuzz.sh: $t: saved failing input sbc/tests/fixtures/regress/$t/$(basename "$f")" >&2
    done
    failed+=("$t")
done

if [[ ${#failed[@]} -gt 0 ]]; then
    cat >&2 <<EOF

fuzz.sh: FAILED targets: ${failed[*]}
Any failing input is now in sbc/tests/fixtures/regress/<target>/. Fix the bug, then commit
that file as a regression fixture (sbc's regression test replays every file there on stable).
Reproduce:  cargo +nightly fuzz run ${PROFILE_FLAGS[*]} <target> sbc/tests/fixtures/regress/<target>/<file>
Shrink:     cargo +nightly fuzz tmin ${PROFILE_FLAGS[*]} <target> sbc/tests/fixtures/regress/<target>/<file>
EOF
    exit 1
fi
echo "fuzz.sh: all targets clean (${TARGETS[*]}; ${SECONDS_PER_TARGET}s each)"
