//! Why a config file is refused, and where: every error names the file,
//! and a value's error the line, column and field.

use serde_saphyr::Location;
use std::path::{Path, PathBuf};

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// YAML syntax, an unknown key, a wrong type (with line and column).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with location and snippet.
        message: String,
    },
    /// A value that parses but makes no sense.
    #[error("config file {path}: {field}: {message}")]
    Value {
        /// The file.
        path: PathBuf,
        /// Where in the file, e.g. `ports[2].remote`.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// Makes [`ConfigError::Value`]s for one file.
pub(super) struct Blame<'a> {
    /// The file.
    pub(super) path: &'a Path,
}

impl Blame<'_> {
    /// The value at `at` (the `field`) is wrong: `message`.
    pub(super) fn at(&self, at: Location, field: String, message: String) -> ConfigError {
        self.at_place(Some((at.line(), at.column())), field, message)
    }

    /// The same, from a line and column.
    pub(super) fn at_place(
        &self,
        at: Option<(u64, u64)>,
        field: String,
        message: String,
    ) -> ConfigError {
        ConfigError::Value {
            path: self.path.to_path_buf(),
            field: match at {
                Some((line, column)) if line > 0 => {
                    format!("line {line} column {column}: {field}")
                }
                _ => field,
            },
            message,
        }
    }
}
