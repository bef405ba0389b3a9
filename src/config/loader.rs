//! The loader: the files read so far, the errors found, and the helpers
//! every section's validation uses to point an error at file, line and key.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::source::{ConfigError, SourceFile};
use super::values;
use super::values::{Secret, SecretRef, Tls};

/// Where a table came from: its file and its index among that file's
/// `[[kind]]` tables, to point errors at the right lines.
pub(super) struct Origin {
    pub(super) file: usize,
    pub(super) index: usize,
}

pub(super) struct Loader {
    pub(super) files: Vec<SourceFile>,
    pub(super) errors: Vec<ConfigError>,
    /// `validate --offline`: secret references are checked for their form
    /// only; no variable or file is read.
    pub(super) offline: bool,
    /// Offline, but the `[ledger]` password is read all the same: for the
    /// commands that only read the ledger (`report`, `evidence`, `prune`),
    /// which must reach a PostgreSQL ledger.
    pub(super) ledger_secrets: bool,
}

/// What a secret holds in a config loaded offline (never used to connect).
pub const OFFLINE_SECRET: &str = "(not read: offline validation)";

impl Loader {
    pub(super) fn at(&self, origin: &Origin, array: &str, key: &str) -> (usize, Option<usize>) {
        (
            origin.file,
            self.files[origin.file].array_key_line(array, origin.index, key),
        )
    }

    pub(super) fn err(&mut self, origin: &Origin, array: &str, key: &str, message: impl Into<String>) {
        let (file, line) = self.at(origin, array, key);
        let e = self.files[file].error(line, Some(&format!("{array}.{key}")), message);
        self.errors.push(e);
    }

    /// An error in the `step`-th `[[channel.step]]` of a channel.
    pub(super) fn err_step(&mut self, origin: &Origin, step: usize, key: &str, message: impl Into<String>) {
        let line = self.files[origin.file].sub_array_key_line("channel", origin.index, "step", step, key);
        let e = self.files[origin.file].error(line, Some(&format!("channel.step[{}].{key}", step + 1)), message);
        self.errors.push(e);
    }

    /// Reads a secret, or, offline, stands in for it.
    pub(super) fn resolve(&self, r: &SecretRef, base: &Path) -> Result<Secret, String> {
        if self.offline {
            return Ok(Secret::new(OFFLINE_SECRET));
        }
        r.resolve(base)
    }

    pub(super) fn secret(&mut self, origin: &Origin, array: &str, key: &str, r: &SecretRef) -> Option<Secret> {
        let base = base_dir(&self.files[origin.file].path);
        match self.resolve(r, &base) {
            Ok(s) => Some(s),
            Err(msg) => {
                self.err(origin, array, key, msg);
                None
            }
        }
    }
}

pub(super) fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

pub(super) fn push_indexed<T>(out: &mut Vec<(Origin, T)>, file: usize, items: Vec<T>) {
    out.extend(
        items
            .into_iter()
            .enumerate()
            .map(|(index, item)| (Origin { file, index }, item)),
    );
}

pub(super) fn check_name(loader: &mut Loader, seen: &mut HashSet<String>, origin: &Origin, array: &str, name: &str) {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
        loader.err(
            origin,
            array,
            "name",
            format!("name {name:?} must be letters, digits, - and _"),
        );
    } else if !seen.insert(name.to_string()) {
        loader.err(
            origin,
            array,
            "name",
            format!("a {array} named {name:?} is already defined"),
        );
    }
}

pub(super) fn check_tls_host(loader: &mut Loader, origin: &Origin, array: &str, tls: Tls, host: &str) {
    if tls == Tls::None && !values::is_loopback_host(host) {
        loader.err(
            origin,
            array,
            "tls",
            format!("tls = \"none\" is allowed only for loopback hosts, not {host:?}"),
        );
    }
}

pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .split('-')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

pub(super) fn check_notify_list(
    loader: &mut Loader,
    origin: &Origin,
    array: &str,
    list: &[String],
    notifiers: &[String],
) {
    for n in list {
        if !notifiers.contains(n) {
            loader.err(origin, array, "notify", format!("no [[notifier]] named {n:?}"));
        }
    }
}
