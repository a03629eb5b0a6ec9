//! End-to-end tests of the SBC as users run it: the real `sbc` binary, real
//! SIPp peers on loopback, and network-namespace labs for NAT and XDP.
//!
//! This library holds what the tests share: where the binary and the fixtures
//! are, and how to run the binary with a bounded wait. Tests panic with a
//! message on failure rather than returning `Result`, so a failure has a
//! backtrace.

pub mod baresip;
pub mod corpus;
pub mod kamailio;
pub mod lab;
pub mod netns;
pub mod pki;
pub mod rtcp;
pub mod sipp;
pub mod tls_peer;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// The test corpus shipped with the repository (`sbc/tests/fixtures/corpus`).
pub fn corpus() -> PathBuf {
    workspace().join("sbc/tests/fixtures/corpus")
}

/// The `sbc` binary of this build profile, brought up to date once per test
/// process: `cargo test -p tests` builds the `sbc` library the tests link,
/// not the binary they run, so an existing binary may predate the source.
/// (`cargo build` is a no-op when it is fresh.)
///
/// `SBC_BINARY=/path/to/sbc` runs the tests against that binary instead,
/// unbuilt: a build from before a fix shows which tests catch the bug.
pub fn sbc_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("SBC_BINARY") {
                return PathBuf::from(path);
            }
            // target/<profile>/deps/<test-binary> -> target/<profile>/sbc
            let exe = std::env::current_exe().expect("test binary path");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("test binary lives in target/<profile>/deps");
            let mut build = Command::new(env!("CARGO"));
            build.args(["build", "-p", "sbc", "--bin", "sbc"]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            let status = build
                .current_dir(workspace())
                .status()
                .expect("run cargo build");
            assert!(status.success(), "cargo build -p sbc failed");
            profile_dir.join("sbc")
        })
        .clone()
}

/// Runs `sbc` with these arguments and returns its output.
pub fn run_sbc<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(sbc_binary())
        .args(args)
        .output()
        .expect("run the sbc binary")
}
