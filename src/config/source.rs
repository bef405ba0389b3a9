//! Config errors and the source text they point into.
//!
//! Every error names the file, the line and the key. Serde errors carry a
//! byte span; validation errors find the line of a key inside the n-th
//! `[[array]]` table of a file. Error text is built here, never from the TOML
//! library's own rendering, because that quotes the source line — which may
//! hold a pasted password.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in the config, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All problems found in one load; loading reports every one it can.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// The text of one config file, kept to turn spans and keys into lines.
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    pub fn read(path: &Path) -> Result<SourceFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: None,
            message: format!("cannot read config file: {e}"),
        })?;
        Ok(SourceFile {
            path: path.to_path_buf(),
            text,
        })
    }

    pub fn error(&self, line: Option<usize>, key: Option<&str>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            line,
            key: key.map(str::to_string),
            message: message.into(),
        }
    }

    /// Parses the whole file into `T`, turning a TOML or serde error into a
    /// `ConfigError` with line and key.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| self.toml_error(&e))
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let message = e.message().trim().to_string();
        let Some(span) = e.span() else {
            return self.error(None, None, message);
        };
        let line = self.line_of(span.start);
        let mut key = self.key_on_line(line);
        // serde names the offending field in "unknown field `x`" / "missing field `x`".
        if let Some(name) = backticked(&message) {
            if message.starts_with("unknown field") || message.starts_with("missing field") {
                key = Some(name);
            }
        }
        let key = key.map(|k| match self.section_before(line) {
            Some(section) => format!("{section}.{k}"),
            None => k,
        });
        self.error(Some(line), key.as_deref(), message)
    }

    /// 1-based line number of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    fn line_text(&self, line: usize) -> Option<&str> {
        self.text.lines().nth(line.checked_sub(1)?)
    }

    /// The key assigned on a line (`key = ...`), if any.
    fn key_on_line(&self, line: usize) -> Option<String> {
        key_of(self.line_text(line)?)
    }

    /// The name of the table a line belongs to, e.g. `channel` or `defaults`.
    fn section_before(&self, line: usize) -> Option<String> {
        self.text
            .lines()
            .take(line)
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .find_map(|l| header_of(l))
    }

    /// Line of the header of the `index`-th (0-based) `[[array]]` table.
    pub fn array_header_line(&self, array: &str, index: usize) -> Option<usize> {
        self.text
            .lines()
            .enumerate()
            .filter(|(_, l)| {
                let t = l.trim();
                t.starts_with("[[") && header_of(t).as_deref() == Some(array)
            })
            .nth(index)
            .map(|(i, _)| i + 1)
    }

    /// Line where `key` is set inside the `index`-th `[[array]]` table, or the
    /// table's header line when the key is not written there (a default).
    pub fn array_key_line(&self, array: &str, index: usize, key: &str) -> Option<usize> {
        let header = self.array_header_line(array, index)?;
        self.key_line_after(header, key).or(Some(header))
    }

    /// Line where `key` is set inside the `sub_index`-th `[[array.sub]]` table
    /// of the `index`-th `[[array]]`, or that sub-table's header line.
    pub fn sub_array_key_line(
        &self,
        array: &str,
        index: usize,
        sub: &str,
        sub_index: usize,
        key: &str,
    ) -> Option<usize> {
        let header = self.array_header_line(array, index)?;
        let full = format!("{array}.{sub}");
        let sub_header = self
            .text
            .lines()
            .enumerate()
            .skip(header)
            .take_while(|(_, l)| {
                let t = l.trim();
                !(t.starts_with("[[") && header_of(t).as_deref() == Some(array))
            })
            .filter(|(_, l)| {
                let t = l.trim();
                t.starts_with("[[") && header_of(t).as_deref() == Some(full.as_str())
            })
            .nth(sub_index)
            .map(|(i, _)| i + 1);
        match sub_header {
            Some(h) => self.key_line_after(h, key).or(Some(h)),
            None => Some(header),
        }
    }

    /// Line where `key` is set in the `[array.sub]` table of the `index`-th
    /// `[[array]]` (None when that table or key is not written there).
    pub fn sub_table_key_line(&self, array: &str, index: usize, sub: &str, key: &str) -> Option<usize> {
        let header = self.array_header_line(array, index)?;
        let full = format!("{array}.{sub}");
        let sub_header = self
            .text
            .lines()
            .enumerate()
            .skip(header)
            .take_while(|(_, l)| {
                let t = l.trim();
                !(t.starts_with("[[") && header_of(t).as_deref() == Some(array))
            })
            .find(|(_, l)| {
                let t = l.trim();
                t.starts_with('[') && !t.starts_with("[[") && header_of(t).as_deref() == Some(full.as_str())
            })
            .map(|(i, _)| i + 1)?;
        self.key_line_after(sub_header, key).or(Some(sub_header))
    }

    /// Line where `key` is set in the single `[table]`.
    pub fn table_key_line(&self, table: &str, key: &str) -> Option<usize> {
        let header = self.text.lines().position(|l| {
            let t = l.trim();
            t.starts_with('[') && !t.starts_with("[[") && header_of(t).as_deref() == Some(table)
        })? + 1;
        self.key_line_after(header, key).or(Some(header))
    }

    /// Line where a top-level `key` (before any table header) is set.
    pub fn top_key_line(&self, key: &str) -> Option<usize> {
        self.key_line_after(0, key)
    }

    fn key_line_after(&self, header: usize, key: &str) -> Option<usize> {
        for (i, l) in self.text.lines().enumerate().skip(header) {
            if l.trim_start().starts_with('[') {
                return None;
            }
            if key_of(l).as_deref() == Some(key) {
                return Some(i + 1);
            }
        }
        None
    }
}

fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

fn key_of(line: &str) -> Option<String> {
    let t = line.trim_start();
    if t.starts_with('#') || t.starts_with('[') {
        return None;
    }
    let eq = t.find('=')?;
    let key = t[..eq].trim().trim_matches('"');
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
        return None;
    }
    Some(key.to_string())
}

fn header_of(line: &str) -> Option<String> {
    let t = line.trim();
    let inner = t
        .strip_prefix("[[")
        .and_then(|r| r.split("]]").next())
        .or_else(|| t.strip_prefix('[').and_then(|r| r.split(']').next()))?;
    let name = inner.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> SourceFile {
        SourceFile {
            path: "t.toml".into(),
            text: text.into(),
        }
    }

    #[test]
    fn finds_keys_in_array_tables() {
        let s =
            src("[defaults]\ndeadline = \"1m\"\n\n[[channel]]\nid = \"a\"\n\n[[channel]]\nid = \"b\"\nvia = \"x\"\n");
        assert_eq!(s.array_header_line("channel", 1), Some(7));
        assert_eq!(s.array_key_line("channel", 1, "via"), Some(9));
        assert_eq!(s.array_key_line("channel", 0, "via"), Some(4));
        assert_eq!(s.table_key_line("defaults", "deadline"), Some(2));
    }

    #[test]
    fn finds_keys_in_nested_array_tables() {
        let s = src("[[channel]]\nid = \"a\"\n[[channel.step]]\nget = \"x\"\n[[channel]]\nid = \"b\"\n[[channel.step]]\nget = \"y\"\n[[channel.step]]\nsubmit = \"form\"\n");
        assert_eq!(s.sub_array_key_line("channel", 1, "step", 1, "submit"), Some(10));
        assert_eq!(s.sub_array_key_line("channel", 1, "step", 0, "get"), Some(8));
        assert_eq!(s.sub_array_key_line("channel", 0, "step", 0, "get"), Some(4));
        assert_eq!(s.sub_array_key_line("channel", 0, "step", 0, "fields"), Some(3));
    }

    #[test]
    fn display_names_file_line_key() {
        let e = src("").error(Some(3), Some("channel.via"), "no such sender");
        assert_eq!(e.to_string(), "t.toml:3: key `channel.via`: no such sender");
    }
}
