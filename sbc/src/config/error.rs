//! Configuration errors: every problem in a file, each with its place, the
//! field, what is wrong and what to do about it.

use std::fmt;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file as named by the caller.
        file: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file was read but is not a usable configuration. Holds every
    /// problem found, in file order: one for a TOML syntax or type error
    /// (serde stops at the first), all of them for validation.
    #[error("{}", Problems(problems))]
    Invalid {
        /// What is wrong, at least one.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems found (empty for a read error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems } => problems,
        }
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// One thing wrong with a configuration file.
///
/// Displays as
///
/// ```text
/// config/x.toml:12:9: trunk "pbx": field `trunk[1].realm`: unknown realm "insde" (hint: known realms: outside, inside)
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file as named by the caller.
    pub file: String,
    /// 1-based line of the offending value (or of its nearest written
    /// ancestor when the field was left out).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Dotted path of the field, e.g. `trunk[1].realm`; empty for a TOML
    /// syntax error.
    pub field: String,
    /// The named thing the field belongs to, e.g. `trunk "pbx"`, when it has
    /// a name.
    pub item: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(item) = &self.item {
            write!(f, "{item}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}
