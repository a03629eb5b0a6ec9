#!/usr/bin/env bash
# The project's test command. Run from anywhere:   ./scripts/test.sh
#
#   ./scripts/test.sh                  install what is missing, then run every check
#   ./scripts/test.sh --install-only   only the (idempotent) install step
#   ./scripts/test.sh --no-install     skip the install step (it is a fast no-op anyway)
#
# Steps, in order, stopping at the first failure:
#   install   Debian packages (sip-tester = SIPp, iproute2, ethtool, prometheus = promtool,
#             valgrind, nftables = the NAT of the access lab, kamailio and baresip = the interop lab,
#             dnsmasq-base = the DNS server of the RFC 3263 trunk lab, redis-server = the pair lab
#             and, with kamailio-redis-modules, Kamailio's topos on Redis in the comparison bench;
#             rtpengine-daemon = rtpengine 10.5, the other media server of the ng comparison bench;
#             Debian's kamailio, redis-server and rtpengine-daemon system services are stopped and
#             disabled: the labs run their own),
#             nightly rust-src + llvm-tools (XDP build), cargo-fuzz
#   fmt       cargo fmt --all -- --check   (+ rustfmt --check on fuzz/fuzz_targets)
#   clippy    cargo clippy --workspace --all-targets -- -D warnings
#   test      cargo nextest run --workspace (cargo test if nextest is absent)
#   doctest   cargo test --workspace --doc (nextest does not run doctests)
#   benches   cargo test --workspace --benches --no-run (benches keep compiling)
#   bench-smoke  cargo test -p benches --bench kamailio --bench ng (the smoke loads of the
#             comparisons with Kamailio and, under the same Kamailio, with rtpengine)
#   fuzz      scripts/fuzz.sh $FUZZ_SECONDS (bounded libFuzzer run of each target)
#
# Environment:
#   CI=true          suites needing root / network namespaces / XDP must run, not skip:
#                    exported to tests as SBC_REQUIRE_PRIVILEGED=1
#   FUZZ_SECONDS     seconds per fuzz target (default 60; 0 skips fuzzing, refused when CI=true)
#
# Installing needs root (it runs apt-get); when everything is present nothing is installed
# and no root is needed. Budget: well under 90 minutes on a 2-core machine.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

APT_PACKAGES=(sip-tester iproute2 ethtool prometheus valgrind sipvicious nftables kamailio baresip dnsmasq-base redis-server kamailio-redis-modules rtpengine-daemon)
NIGHTLY_COMPONENTS=(rust-src llvm-tools)
CARGO_FUZZ_VERSION=0.13.2 # known to work with the machine's stable (cargo install) and nightly

DO_INSTALL=1
DO_CHECKS=1
for arg in "$@"; do
    case $arg in
    --install-only) DO_CHECKS=0 ;;
    --no-install) DO_INSTALL=0 ;;
    -h | --help)
        sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "test.sh: unknown argument '$arg' (try --help)" >&2
        exit 2
        ;;
    esac
done

export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
if [[ ${CI:-} == true ]]; then
    # Read by the privileged suites (netns/XDP/SIPp labs): in CI a missing capability is a
    # failure, not a skip.
    export SBC_REQUIRE_PRIVILEGED=1
fi

# ---------------------------------------------------------------------------------------------
# Step bookkeeping: a banner per step, per-step timings, a summary on exit (pass or fail).
# ---------------------------------------------------------------------------------------------
START=$SECONDS
STEP=""
STEP_START=0
TIMINGS=()

fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

begin() {
    STEP=$1
    STEP_START=$SECONDS
    printf '\n\033[1m==> [%s] %s\033[0m\n' "$STEP" "${2:-}"
}

end() {
    TIMINGS+=("$(printf '%-9s %s' "$STEP" "$(fmt_secs $((SECONDS - STEP_START)))")")
    STEP=""
}

summary() {
    local rc=$?
    echo
    echo "---- timings ----"
    local line
    for line in "${TIMINGS[@]}"; do echo "  $line"; done
    if [[ $rc -ne 0 && -n $STEP ]]; then
        printf '  %-9s %s  <- FAILED (exit %d)\n' "$STEP" "$(fmt_secs $((SECONDS - STEP_START)))" "$rc"
    fi
    echo "  total     $(fmt_secs $((SECONDS - START)))"
    if [[ $rc -ne 0 ]]; then
        local where=""
        [[ -z $STEP ]] || where=" in step '$STEP'"
        printf '\033[1;31mtest.sh: FAILED%s\033[0m\n' "$where" >&2
    else
        printf '\033[1;32mtest.sh: OK\033[0m\n'
    fi
}
trap summary EXIT

die() {
    echo "test.sh: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------
# Install (idempotent: only checks when everything is present)
# ---------------------------------------------------------------------------------------------
# (No `cmd | grep -q` here: with pipefail, grep quitting early can SIGPIPE the writer.)
apt_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

NIGHTLY_INSTALLED=""
nightly_has_component() {
    [[ -n $NIGHTLY_INSTALLED ]] ||
        NIGHTLY_INSTALLED=$(rustup component list --toolchain nightly --installed 2>/dev/null || true)
    # rust-src is listed bare, llvm-tools with the host triple appended.
    local host
    host=$(rustc -vV | sed -n 's/^host: //p')
    [[ $'\n'$NIGHTLY_INSTALLED$'\n' =~ $'\n'$1(-$host)?$'\n' ]]
}

# A cargo-fuzz install may already be running (e.g. started by hand on this machine):
# wait for it instead of racing it with a second one.
wait_for_running_cargo_fuzz_install() {
    local waited=0
    while pgrep -f 'cargo install.* cargo-fuzz' >/dev/null 2>&1; do
        [[ $waited -eq 0 ]] && echo "test.sh: a 'cargo install cargo-fuzz' is already running; waiting for it"
        sleep 5
        waited=$((waited + 5))
        [[ $waited -lt 900 ]] || die "the running 'cargo install cargo-fuzz' did not finish in 15 minutes"
    done
}

install_deps() {
    local missing_apt=() missing_comp=() p need_fuzz=0 need_rust_comp=()

    for p in "${APT_PACKAGES[@]}"; do apt_installed "$p" || missing_apt+=("$p"); done
    if [[ ${#missing_apt[@]} -gt 0 && $(id -u) -ne 0 ]]; then
        die "missing Debian packages: ${missing_apt[*]}. Installing them needs root: run this script as root, or install them first (apt-get install -y ${missing_apt[*]})."
    fi

    command -v rustup >/dev/null || die "rustup not found: this machine kind ships Rust via rustup"
    rustup run nightly rustc --version >/dev/null 2>&1 ||
        die "the nightly toolchain is not installed (this machine kind ships one; the XDP build and cargo-fuzz need it)"
    for p in "${NIGHTLY_COMPONENTS[@]}"; do nightly_has_component "$p" || missing_comp+=("$p"); done
    cargo fmt --version >/dev/null 2>&1 || need_rust_comp+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || need_rust_comp+=(clippy)

    if ! cargo fuzz --version >/dev/null 2>&1; then
        wait_for_running_cargo_fuzz_install
        cargo fuzz --version >/dev/null 2>&1 || need_fuzz=1
    fi

    if [[ ${#missing_apt[@]} -eq 0 && ${#missing_comp[@]} -eq 0 && ${#need_rust_comp[@]} -eq 0 && $need_fuzz -eq 0 ]]; then
        echo "everything present: ${APT_PACKAGES[*]}; nightly ${NIGHTLY_COMPONENTS[*]}; $(cargo fuzz --version)"
        return 0
    fi

    if [[ ${#missing_apt[@]} -gt 0 ]]; then
        echo "installing Debian packages: ${missing_apt[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing_apt[@]}"
    fi
    if [[ ${#missing_comp[@]} -gt 0 ]]; then
        echo "adding nightly components: ${missing_comp[*]}"
        rustup component add "${NIGHTLY_COMPONENTS[@]}" --toolchain nightly
    fi
    if [[ ${#need_rust_comp[@]} -gt 0 ]]; then
        echo "adding stable components: ${need_rust_comp[*]}"
        rustup component add "${need_rust_comp[@]}"
    fi
    if [[ $need_fuzz -eq 1 ]]; then
        echo "installing cargo-fuzz $CARGO_FUZZ_VERSION (about a minute on 2 cores)"
        cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
    fi

    # Re-check, so a half-done install fails here and not three steps later.
    for p in "${APT_PACKAGES[@]}"; do apt_installed "$p" || die "package $p still missing after install"; done
    NIGHTLY_INSTALLED=""
    for p in "${NIGHTLY_COMPONENTS[@]}"; do nightly_has_component "$p" || die "nightly component $p still missing"; done
    cargo +nightly fuzz --version >/dev/null || die "cargo +nightly fuzz still does not run"
    for p in sipp promtool ip ethtool valgrind; do
        command -v "$p" >/dev/null || die "$p not on PATH after install"
    done
}

# Debian enables kamailio.service and redis-server.service when the packages are installed: on a
# machine that runs systemd Kamailio would listen on port 5060 of every local address, the port the
# loopback labs use, and Redis on 6379. The tests start their own, in namespaces they make, and
# never use the system ones.
quiet_system_service() {
    local service=$1
    [[ -d /run/systemd/system ]] || return 0
    systemctl is-enabled --quiet "$service" 2>/dev/null || systemctl is-active --quiet "$service" 2>/dev/null || return 0
    if [[ $(id -u) -ne 0 ]]; then
        echo "test.sh: warning: the $service system service is enabled; as root: systemctl disable --now $service" >&2
        return 0
    fi
    echo "test.sh: stopping and disabling the $service system service (the labs run their own)"
    systemctl disable --now "$service"
}

# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------
[[ ${CI:-} == true ]] && echo "test.sh: CI=true: privileged suites must run (SBC_REQUIRE_PRIVILEGED=1)"

if [[ $DO_INSTALL -eq 1 ]]; then
    begin install "packages, toolchain components, cargo-fuzz"
    install_deps
    quiet_system_service kamailio
    quiet_system_service redis-server
    quiet_system_service rtpengine-daemon
    end
fi
[[ $DO_CHECKS -eq 1 ]] || exit 0

begin fmt "cargo fmt --all -- --check"
cargo fmt --all -- --check
# The fuzz crate is outside the workspace; check its targets directly.
rustfmt --edition 2024 --check fuzz/fuzz_targets/*.rs
end

begin clippy "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
end

NEXTEST_ARGS=(--workspace --no-tests=warn)
[[ ${CI:-} == true ]] && NEXTEST_ARGS+=(--no-fail-fast) # report every failing test in CI
if cargo nextest --version >/dev/null 2>&1; then
    begin test "cargo nextest run ${NEXTEST_ARGS[*]}"
    cargo nextest run "${NEXTEST_ARGS[@]}"
else
    begin test "cargo test --workspace (cargo-nextest not installed)"
    cargo test --workspace
fi
end

begin doctest "cargo test --workspace --doc"
cargo test --workspace --doc
end

# Compile (not run) every bench target. Test profile on purpose: it reuses the build of the
# `test` step instead of a second, optimised build of the whole dependency graph; clippy
# --all-targets has already type-checked them. (criterion/load harnesses are run on purpose,
# by hand, with `cargo bench -p benches`.)
begin benches "cargo test --workspace --benches --no-run"
cargo test --workspace --benches --no-run
end

# The signaling comparison with Kamailio (proxy, and topos on Redis) in its smoke mode: a few
# calls through each system, each in its own network namespace, so the harness keeps working
# (the full comparison is `cargo bench -p benches --bench kamailio`). Then the media comparison
# with rtpengine under the same Kamailio (`--bench ng`): 4 calls with audio through each. Needs
# root; under CI a missing privilege or package fails it (SBC_REQUIRE_PRIVILEGED=1), elsewhere it
# says why it skips.
begin bench-smoke "cargo test -p benches --bench kamailio --bench ng"
cargo test -p benches --bench kamailio --bench ng
end

if [[ $FUZZ_SECONDS == 0 ]]; then
    [[ ${CI:-} != true ]] || die "FUZZ_SECONDS=0 (skip fuzzing) is not allowed when CI=true"
    echo "test.sh: FUZZ_SECONDS=0: fuzzing skipped"
else
    begin fuzz "scripts/fuzz.sh $FUZZ_SECONDS  (per target; build not counted)"
    ./scripts/fuzz.sh "$FUZZ_SECONDS"
    end
fi
