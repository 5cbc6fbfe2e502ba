//! Secrets kept in files (mounted secrets): `smtp_password_file` (read in smtp.rs) and
//! `database_password_file`. A file is read once at start, without its trailing line break; an
//! unreadable or empty one stops the start with a message naming its key.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use url::Url;

/// A secret kept in a file (a mounted secret): its text without the trailing line break. An
/// unreadable or empty file stops the start with a message naming `key`.
pub(super) fn read_secret_file(key: &str, path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("`{key}`: cannot read {}", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        bail!("`{key}`: {} is empty", path.display());
    }
    Ok(secret.to_string())
}

/// `database_url` with the password of `database_password_file` (PostgreSQL only).
pub(super) fn database_url(url: &str, password_file: Option<&PathBuf>) -> anyhow::Result<String> {
    let Some(path) = password_file else {
        return Ok(url.to_string());
    };
    let mut parsed = Url::parse(url).context("`database_url`: not a URL")?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        bail!("`database_password_file`: only for postgres:// URLs (SQLite has no password)");
    }
    if parsed.password().is_some() {
        bail!("`database_url` and `database_password_file`: give the password in one of them, not both");
    }
    let password = read_secret_file("database_password_file", path)?;
    parsed
        .set_password(Some(&password))
        .map_err(|()| anyhow::anyhow!("`database_url`: cannot carry a password (no host)"))?;
    Ok(parsed.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawConfig, Settings};

    fn production() -> RawConfig {
        RawConfig {
            smtp_url: Some("smtp://127.0.0.1".into()),
            secret: Some("a-test-secret-of-at-least-32-characters".into()),
            ..RawConfig::default()
        }
    }

    fn start(raw: RawConfig) -> anyhow::Result<Settings> {
        Settings::from_raw(raw, true)
    }

    fn refusal(raw: RawConfig) -> String {
        match start(raw) {
            Ok(_) => panic!("accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    fn secret_file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_database_password_file_fills_in_the_postgres_password_and_stays_out_of_debug() {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = production();
        raw.database_url = "postgres://app@db.internal:5432/latchkey".into();
        raw.database_password_file = Some(secret_file(&dir, "pg", "s3cret/pa ss\r\n"));
        let s = start(raw).unwrap();
        let url = Url::parse(&s.database.url).unwrap();
        assert_eq!(url.username(), "app");
        assert_eq!(
            percent_encoding::percent_decode_str(url.password().unwrap())
                .decode_utf8()
                .unwrap(),
            "s3cret/pa ss"
        );
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn a_database_password_file_is_refused_for_sqlite_when_unreadable_and_beside_a_password() {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = production();
        raw.database_password_file = Some(secret_file(&dir, "pg", "pw"));
        assert!(refusal(raw).contains("`database_password_file`: only for postgres://"));

        let mut raw = production();
        raw.database_url = "postgres://app@db/latchkey".into();
        raw.database_password_file = Some(dir.path().join("missing"));
        assert!(refusal(raw).contains("`database_password_file`: cannot read"));

        let mut raw = production();
        raw.database_url = "postgres://app:inline@db/latchkey".into();
        raw.database_password_file = Some(secret_file(&dir, "pg", "pw"));
        assert!(refusal(raw).contains("not both"));
    }
}
