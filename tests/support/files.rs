//! Config files for gateways started from a file.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A config file with `text`, deleted when dropped.
pub(crate) fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

/// A config file in a directory of its own, rewritten between reloads.
#[derive(Debug)]
pub(crate) struct ConfigFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    pub(crate) fn new(text: &str) -> ConfigFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hubgate.toml");
        std::fs::write(&path, text).unwrap();
        ConfigFile { _dir: dir, path }
    }

    pub(crate) fn write(&self, text: &str) {
        std::fs::write(&self.path, text).unwrap();
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
