//! The `sbc` command line: argument parsing only; the work lives in the library.

const HELP: &str = "\
sbc: Session Border Controller

usage:
  sbc inspect [--json] FILE...   parse captured SIP messages and say what the SBC would do
  sbc check-config [FILE]        validate a configuration (no FILE: the embedded default)
  sbc --version
  sbc --help
";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let status = match args.first().map(String::as_str) {
        Some("inspect") => sbc::inspect::run(&args[1..], &mut std::io::stdout().lock())?,
        Some("check-config") => sbc::config::check_config(
            &args[1..],
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )?,
        Some("--version" | "-V") => {
            println!("sbc {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some("--help" | "-h") => {
            print!("{HELP}");
            0
        }
        _ => {
            eprint!("{HELP}");
            2
        }
    };
    std::process::exit(status);
}
