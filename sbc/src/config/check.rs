//! `sbc check-config [FILE]`: validate a configuration without starting the
//! SBC.
//!
//! With a file: prints `FILE: ok` and a one-paragraph summary on stdout and
//! returns 0 (and a line per trunk given by DNS name saying how it will
//! be resolved), or prints every problem (one per line, `file:line:column: ...`)
//! on stderr and returns 1. Without a file it checks the embedded default,
//! the configuration `sbc` runs with when given none. A file that cannot be
//! read, or wrong arguments, return 2.

use std::io::Write;

use super::{Config, ConfigError, DEFAULT_NAME};

/// Command-line usage of the check-config subcommand.
pub const USAGE: &str = "usage: sbc check-config [FILE]   (no FILE: the embedded default)";

/// Runs `sbc check-config` with its arguments (after `check-config`); returns
/// the exit status.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> std::io::Result<i32> {
    let (name, result) = match args {
        [] => (DEFAULT_NAME.to_owned(), Config::embedded_default()),
        [file] if !file.starts_with('-') => (file.clone(), Config::load(file)),
        _ => {
            writeln!(err, "{USAGE}")?;
            return Ok(2);
        }
    };
    match result {
        Ok(config) => {
            writeln!(out, "{name}: ok")?;
            writeln!(out, "{}", config.summary())?;
            writeln!(out, "{}", config.signals_plan())?;
            for line in config
                .tls_summary()
                .into_iter()
                .chain(config.dns_plan())
                .chain(config.cluster_plan())
                .chain(config.scheduling_plan())
            {
                writeln!(out, "{line}")?;
            }
            Ok(0)
        }
        Err(error @ ConfigError::Read { .. }) => {
            writeln!(err, "{error}")?;
            Ok(2)
        }
        Err(ConfigError::Invalid { problems }) => {
            for problem in &problems {
                writeln!(err, "{problem}")?;
            }
            let n = problems.len();
            writeln!(err, "{name}: {n} problem{}", if n == 1 { "" } else { "s" })?;
            Ok(1)
        }
    }
}
