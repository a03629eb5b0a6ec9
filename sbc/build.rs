//! Builds the XDP program (`relay-ebpf`) and hands its object to `sbc::media::xdp`.
//!
//! The recipe (DESIGN "Building the XDP program"): the nightly toolchain with
//! `rust-src` compiles relay-ebpf for `bpfel-unknown-none` with
//! `-Z build-std=core` into fat-LTO LLVM bitcode, and the nightly sysroot's
//! `llc` turns that into a BPF object. No bpf-linker needed.
//!
//! `SBC_EBPF_TOOLCHAIN` names another toolchain than `nightly` for it.
//!
//! Success: `SBC_XDP_OBJECT` (rustc env) names the object for `include_bytes!`.
//! Where the nightly toolchain or a component is missing the build still
//! succeeds: it sets `cfg(sbc_xdp_missing)` and `SBC_XDP_MISSING` (why), and
//! prints a `cargo:warning`; the daemon then says so at start and in a metric.
//! A broken relay-ebpf (it does not compile) is a missing fast path too, with
//! the compiler's output in the warning, so a userspace-only build never
//! depends on the eBPF code; the test suite, which requires the fast path in
//! CI, catches it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn main() {
    println!("cargo:rustc-check-cfg=cfg(sbc_xdp_missing)");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("sbc/ lives in the workspace root")
        .to_path_buf();
    let ebpf_dir = root.join("relay-ebpf");
    for p in [
        "relay-ebpf/src",
        "relay-ebpf/Cargo.toml",
        "relay-ebpf/Cargo.lock",
        "relay-common/src",
        "relay-common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }

    // The toolchain for the eBPF build: `nightly` unless pinned (e.g. to a
    // dated nightly) or pointed at a missing one to check the fallback.
    println!("cargo:rerun-if-env-changed=SBC_EBPF_TOOLCHAIN");
    let toolchain = format!(
        "+{}",
        env::var("SBC_EBPF_TOOLCHAIN").unwrap_or_else(|_| "nightly".into())
    );

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let host = env::var("HOST").expect("set by cargo");
    match build(&toolchain, &ebpf_dir, &out_dir, &host) {
        Ok(object) => println!("cargo:rustc-env=SBC_XDP_OBJECT={}", object.display()),
        Err(why) => {
            // rustc-env values are one line; the warning may carry the detail.
            let first = why.lines().next().unwrap_or("unknown reason").to_string();
            println!(
                "cargo:warning=XDP fast path not built in: {}",
                why.replace('\n', " | ")
            );
            println!("cargo:rustc-cfg=sbc_xdp_missing");
            println!("cargo:rustc-env=SBC_XDP_MISSING={first}");
        }
    }
}

/// A command for the nested build: the environment of this build script,
/// less everything that would steer the nested cargo/rustc into the outer
/// build's toolchain, target, flags or target dir.
fn clean_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let outer = (key.starts_with("CARGO") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTDOC")
            || key == "RUSTFLAGS"
            || key == "RUSTUP_TOOLCHAIN"
            // Keeps a failure's message to the point (rustup prints its own
            // backtrace otherwise).
            || key == "RUST_BACKTRACE";
        if outer {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn output_of(mut cmd: Command, what: &str) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if !out.status.success() {
        // The end of a compiler's output says what went wrong.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.trim().lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        return Err(format!("{what} failed ({}):\n{tail}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn build(toolchain: &str, ebpf_dir: &Path, out_dir: &Path, host: &str) -> Result<PathBuf, String> {
    let mut sysroot = clean_command("rustc");
    sysroot.args([toolchain, "--print", "sysroot"]);
    let sysroot = PathBuf::from(output_of(
        sysroot,
        &format!("rustc {toolchain} (`rustup toolchain install nightly`)"),
    )?);
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Err(
            "the nightly rust-src component is missing (`rustup component add rust-src --toolchain nightly`)"
                .into(),
        );
    }
    let llc = sysroot.join("lib/rustlib").join(host).join("bin/llc");
    if !llc.is_file() {
        return Err(format!(
            "{} is missing: add the nightly llvm-tools component (`rustup component add llvm-tools --toolchain nightly`)",
            llc.display()
        ));
    }

    let target_dir = out_dir.join("relay-ebpf-target");
    let bitcode = out_dir.join("relay-ebpf.bc");
    let object = out_dir.join("relay-ebpf.o");
    let mut cargo = clean_command("cargo");
    cargo
        .current_dir(ebpf_dir)
        .args([
            toolchain,
            "rustc",
            "--locked",
            "--release",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(&target_dir)
        .arg("--")
        .arg(format!("--emit=llvm-bc={}", bitcode.display()));
    output_of(cargo, &format!("cargo {toolchain} rustc (relay-ebpf)"))?;

    let mut llc_cmd = Command::new(&llc);
    llc_cmd
        .args(["-march=bpfel", "-mcpu=v3", "-O2", "-filetype=obj"])
        .arg(&bitcode)
        .arg("-o")
        .arg(&object);
    output_of(llc_cmd, "llc (relay-ebpf bitcode to BPF object)")?;
    Ok(object)
}
