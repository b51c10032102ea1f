//! How to open a SQLite store: the file, the durability policy, the pool size.

use std::{fmt, path::PathBuf, str::FromStr};

/// SQLite's `synchronous` setting: when a commit waits for the disk.
///
/// The default is [`Full`](Synchronous::Full) because natter acks a send only
/// once it is committed, and the protocol promises that an acked message is
/// never lost. In WAL mode, `FULL` fsyncs the log on every commit, so a
/// committed transaction survives a power loss or OS crash. Group commit (one
/// transaction per batch of sends) is what keeps that affordable.
///
/// [`Normal`](Synchronous::Normal) fsyncs only at checkpoints: a commit
/// survives a crash of natter, but the last commits may be lost on power
/// loss. [`Off`](Synchronous::Off) never fsyncs; for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    Off,
    Normal,
    #[default]
    Full,
}

impl Synchronous {
    /// The value for `PRAGMA synchronous`.
    pub(crate) fn pragma_value(self) -> &'static str {
        match self {
            Self::Off => "OFF",
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

impl FromStr for Synchronous {
    type Err = String;

    /// `off`, `normal` or `full`, in any case.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Ok(Self::Off),
            "normal" => Ok(Self::Normal),
            "full" => Ok(Self::Full),
            _ => Err(format!(
                "synchronous must be off, normal or full, not {s:?}"
            )),
        }
    }
}

impl fmt::Display for Synchronous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pragma_value().to_ascii_lowercase())
    }
}

/// Where and how to open a [`SqliteStore`](crate::SqliteStore).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// The database file; created if missing (its directory must exist).
    pub path: PathBuf,
    /// When a commit waits for the disk; see [`Synchronous`].
    pub synchronous: Synchronous,
    /// How many read-only connections serve reads concurrently (at least 1).
    pub read_connections: usize,
}

impl SqliteConfig {
    /// The defaults for a file: `synchronous = FULL`, 4 read connections.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            synchronous: Synchronous::default(),
            read_connections: 4,
        }
    }

    /// Reads a `sqlite:` URL such as `sqlite://natter.db`,
    /// `sqlite:///var/lib/natter.db?synchronous=normal` or `sqlite:x.db`.
    ///
    /// Query parameters: `synchronous=off|normal|full` and
    /// `read_connections=N`. Returns `None` for anything else: another
    /// scheme, an empty path, an in-memory database (each connection would
    /// see its own), an unknown parameter or a bad value, so that a typo in a
    /// deployment's configuration is refused rather than ignored. The path is
    /// taken literally (no percent-decoding).
    pub fn from_url(url: &str) -> Option<Self> {
        let (path, query) = split_url(url)?;
        let mut config = Self::new(path);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=')?;
            match key {
                "synchronous" => config.synchronous = value.parse().ok()?,
                "read_connections" => config.read_connections = value.parse().ok()?,
                _ => return None,
            }
        }
        Some(config)
    }
}

/// The file path of a `sqlite:` URL, ignoring its query string; see
/// [`SqliteConfig::from_url`] for the accepted forms.
pub fn parse_sqlite_url(url: &str) -> Option<PathBuf> {
    split_url(url).map(|(path, _)| PathBuf::from(path))
}

/// Splits `sqlite:[//]PATH[?QUERY]` into its path and query.
fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some((path, query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let p = |u| parse_sqlite_url(u);
        assert_eq!(p("sqlite://natter.db"), Some("natter.db".into()));
        assert_eq!(p("sqlite:///abs/x.db"), Some("/abs/x.db".into()));
        assert_eq!(p("sqlite:x.db"), Some("x.db".into()));
        assert_eq!(p("sqlite://x.db?synchronous=normal"), Some("x.db".into()));
        assert_eq!(p("postgres://x"), None);
        assert_eq!(p("sqlite://"), None);
        assert_eq!(p("sqlite::memory:"), None);
    }

    #[test]
    fn url_parameters() {
        let c = SqliteConfig::from_url("sqlite:///d/n.db?synchronous=normal&read_connections=2");
        assert_eq!(
            c,
            Some(SqliteConfig {
                path: "/d/n.db".into(),
                synchronous: Synchronous::Normal,
                read_connections: 2,
            })
        );
        let c = SqliteConfig::from_url("sqlite://n.db");
        assert_eq!(c, Some(SqliteConfig::new("n.db")));
        assert_eq!(c.map(|c| c.synchronous), Some(Synchronous::Full));
        assert_eq!(
            SqliteConfig::from_url("sqlite://n.db?synchronous=OFF").map(|c| c.synchronous),
            Some(Synchronous::Off)
        );
        assert_eq!(
            SqliteConfig::from_url("sqlite://n.db?synchronous=fast"),
            None
        );
        assert_eq!(SqliteConfig::from_url("sqlite://n.db?journal=wal"), None);
        assert_eq!(SqliteConfig::from_url("sqlite://n.db?synchronous"), None);
    }
}
