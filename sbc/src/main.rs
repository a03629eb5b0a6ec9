//! The `sbc` command line: argument parsing only; the work lives in the library.

use std::path::PathBuf;

const HELP: &str = "\
sbc: Session Border Controller

usage:
  sbc [--config FILE] [--log LEVEL]   run the SBC (no FILE: the embedded default, a loopback lab)
  sbc inspect [--json] FILE...        parse captured SIP messages and say what the SBC would do
  sbc check-config [FILE]             validate a configuration (no FILE: the embedded default)
  sbc --version
  sbc --help
";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let status = match args.first().map(String::as_str) {
        Some("inspect") => {
            quiet_pipe(sbc::inspect::run(&args[1..], &mut std::io::stdout().lock()))?
        }
        Some("check-config") => quiet_pipe(sbc::config::check_config(
            &args[1..],
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        ))?,
        Some("--version" | "-V") => {
            println!("sbc {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some("--help" | "-h") => {
            print!("{HELP}");
            0
        }
        _ => return daemon(&args),
    };
    std::process::exit(status);
}

/// A reader that stopped reading (`sbc inspect ... | head`) ends the
/// command quietly, as other command-line tools do; other errors stand.
fn quiet_pipe(result: std::io::Result<i32>) -> std::io::Result<i32> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        other => other,
    }
}

/// `sbc [--config FILE] [--log LEVEL]`.
fn daemon(args: &[String]) -> anyhow::Result<()> {
    let mut config_path: Option<PathBuf> = None;
    let mut log: Option<String> = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--config" | "-c" => config_path = rest.next().map(PathBuf::from),
            "--log" => log = rest.next().cloned(),
            other => {
                eprint!("sbc: unknown argument '{other}'\n{HELP}");
                std::process::exit(2);
            }
        }
    }
    let loaded = match &config_path {
        Some(path) => sbc::config::Config::load(path),
        None => sbc::config::Config::embedded_default(),
    };
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            // An invalid file's error lists its problems already: once each.
            eprintln!("sbc: {e}");
            std::process::exit(1);
        }
    };
    // --log, then RUST_LOG, then the config's [logging] section.
    if let Err(e) = sbc::logging::init(&config.logging, log.as_deref()) {
        eprintln!("sbc: {e}");
        std::process::exit(2);
    }
    match sbc::daemon::run(config, config_path)? {
        sbc::daemon::Exit::Stopped => Ok(()),
        sbc::daemon::Exit::Restart => std::process::exit(sbc::daemon::RESTART_EXIT_STATUS),
    }
}
