//! What is wrong with a config: each problem under its dotted key and, once located, its
//! line; and every problem of one file, printed as `file:line: key: what is wrong`.

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with a config file, located as precisely as the file allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `server.listen`; empty for syntax errors.
    pub key: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    pub message: String,
}

/// The problems of one check, each under its dotted key; sections add to it in turn.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            line: None,
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each problem as `key: message`, joined, for an error that has no file to name.
    pub fn summary(&self) -> String {
        let list: Vec<String> = self
            .0
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect();
        list.join("; ")
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl ConfigErrors {
    /// One problem that concerns the file as a whole.
    pub fn of_file(file: &Path, message: String) -> ConfigErrors {
        ConfigErrors {
            file: file.to_path_buf(),
            problems: vec![Problem {
                key: String::new(),
                line: None,
                message,
            }],
        }
    }

    /// Each problem as `file:line: key: what is wrong`.
    pub fn lines(&self) -> Vec<String> {
        self.problems
            .iter()
            .map(|p| {
                let mut line = self.file.display().to_string();
                if let Some(n) = p.line {
                    line.push_str(&format!(":{n}"));
                }
                if !p.key.is_empty() {
                    line.push_str(&format!(": {}", p.key));
                }
                line.push_str(&format!(": {}", p.message));
                line
            })
            .collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}
