//! A mutation sweep over the shipped configurations, as hickory-dns sweeps
//! its zone parser: every value of every line is replaced by values of the
//! wrong type, out of range, empty or absurd, and every line removed or
//! doubled. Whatever the result, the loader must not panic, and a refusal
//! must name the file, a line inside it and (but for syntax errors) the
//! field; an accepted file must still validate as itself.

use super::{Config, ConfigError};

const SHIPPED: [(&str, &str); 3] = [
    ("default.toml", include_str!("../../../config/default.toml")),
    (
        "carrier-and-pbx.toml",
        include_str!("../../../config/examples/carrier-and-pbx.toml"),
    ),
    (
        "dual-stack-access.toml",
        include_str!("../../../config/examples/dual-stack-access.toml"),
    ),
];

/// Values put in place of a `key = value` line's value.
const VALUES: [&str; 14] = [
    "0",
    "-1",
    "4294967296",
    "18446744073709551616",
    "1.5",
    "\"\"",
    "\"x\"",
    "\"999.999.999.999:99999\"",
    "true",
    "[]",
    "[\"\", \"\"]",
    "{}",
    "{ x = 1 }",
    "\"\\u0000\"",
];

fn mutants(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    // The file with line `i` replaced by `with` (none: removed).
    let edited = |i: usize, with: &[String]| {
        let mut m = String::with_capacity(text.len() + 64);
        for (j, line) in lines.iter().enumerate() {
            if j == i {
                for w in with {
                    m.push_str(w);
                    m.push('\n');
                }
            } else {
                m.push_str(line);
                m.push('\n');
            }
        }
        m
    };
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        out.push(edited(i, &[]));
        out.push(edited(i, &[(*line).to_owned(), (*line).to_owned()]));
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.starts_with('[') {
            continue;
        }
        if let Some((key, _)) = line.split_once('=') {
            for value in VALUES {
                out.push(edited(i, &[format!("{key}= {value}")]));
            }
        }
    }
    out
}

#[test]
fn no_mutation_of_a_shipped_file_panics_and_every_refusal_names_its_place() {
    let mut accepted = 0;
    let mut refused = 0;
    for (name, text) in SHIPPED {
        assert!(
            Config::from_str_named(text, name).is_ok(),
            "{name} as shipped"
        );
        for mutant in mutants(text) {
            let lines = mutant.lines().count().max(1);
            match Config::from_str_named(&mutant, name) {
                Ok(config) => {
                    accepted += 1;
                    // What loads is a configuration the daemon can take:
                    // its own restart comparison finds nothing to report.
                    assert!(config.restart_only_changes(&config).is_empty());
                }
                Err(ConfigError::Invalid { problems }) => {
                    refused += 1;
                    assert!(!problems.is_empty());
                    for p in &problems {
                        assert_eq!(p.file, name);
                        assert!(
                            (1..=lines + 1).contains(&p.line),
                            "{p}: line {} of {lines}\n{mutant}",
                            p.line
                        );
                        assert!(!p.message.is_empty(), "{p}");
                    }
                }
                Err(e) => panic!("{name}: not an Invalid error: {e}"),
            }
        }
    }
    // The sweep must exercise both sides, or it tests nothing.
    assert!(
        accepted > 50 && refused > 500,
        "accepted {accepted}, refused {refused}"
    );
}
