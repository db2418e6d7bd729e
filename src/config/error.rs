//! Config errors: each names the file and where in it (a line, or a key path).

use std::fmt;
use std::path::PathBuf;

/// Where in a config file a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The file as a whole.
    File,
    /// A position (1-based).
    Line {
        /// Line.
        line: usize,
        /// Column.
        column: usize,
    },
    /// A dotted key path, e.g. `sinks.chat.url`.
    Key(String),
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// Where in it.
    pub location: Location,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A problem at a key path.
    pub fn at_key(file: &std::path::Path, key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { file: file.to_path_buf(), location: Location::Key(key.into()), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match &self.location {
            Location::File => write!(f, "{file}: {}", self.message),
            Location::Line { line, column } => write!(f, "{file}:{line}:{column}: {}", self.message),
            Location::Key(key) => write!(f, "{file}: `{key}`: {}", self.message),
        }
    }
}

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}
