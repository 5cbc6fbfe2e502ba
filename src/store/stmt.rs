//! Statements and rows as data, the same for both databases: SQL text (written in the dialect
//! both accept: `$N` parameters, `RETURNING`, BIGINT millisecond timestamps) with owned
//! parameters, and rows of owned values read by column name. Decoding a column into a typed
//! value happens here, once; a missing column, a NULL where a value must be, or an unknown
//! stored word is an error naming the column, never a default.

use std::sync::Arc;

use anyhow::{anyhow, Context};
use time::OffsetDateTime;

use crate::domain::Stored;

/// A parameter or column value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Text(String),
    Int(i64),
    Blob(Vec<u8>),
    /// A NULL for a text column (PostgreSQL types every bound parameter).
    Null,
    /// A NULL for an integer column.
    NullInt,
}

/// A parameter (the same values).
pub(crate) type P = Value;

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        v.map_or(Value::Null, Value::from)
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        v.map_or(Value::Null, Value::Text)
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Value::NullInt, Value::Int)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Blob(v.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}

/// A point in time is stored as milliseconds since the Unix epoch; this encoding never leaves
/// the store.
impl From<OffsetDateTime> for Value {
    fn from(t: OffsetDateTime) -> Self {
        Value::Int(to_ms(t))
    }
}

impl From<Option<OffsetDateTime>> for Value {
    fn from(t: Option<OffsetDateTime>) -> Self {
        t.map_or(Value::NullInt, |t| Value::Int(to_ms(t)))
    }
}

/// Any stored word (flow status, channel, audit event…).
impl<T: Stored> From<T> for Value {
    fn from(v: T) -> Self {
        Value::Text(v.as_str().to_string())
    }
}

pub(crate) fn to_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn from_ms(v: i64) -> anyhow::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(v as i128 * 1_000_000)
        .map_err(|_| anyhow!("{v} ms is out of the range of a timestamp"))
}

/// One statement of a unit of work.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    pub sql: &'static str,
    pub params: Vec<Value>,
}

impl Stmt {
    pub fn new(sql: &'static str, params: Vec<Value>) -> Self {
        Self { sql, params }
    }
}

/// One row of a result, its values owned, its columns found by name.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    names: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    pub fn new(names: Arc<[String]>, values: Vec<Value>) -> Self {
        Self { names, values }
    }

    fn value(&self, name: &str) -> anyhow::Result<&Value> {
        self.names
            .iter()
            .position(|n| n == name)
            .and_then(|i| self.values.get(i))
            .ok_or_else(|| anyhow!("column {name} is not in the row"))
    }

    pub fn opt_text(&self, name: &str) -> anyhow::Result<Option<String>> {
        match self.value(name)? {
            Value::Text(s) => Ok(Some(s.clone())),
            Value::Null | Value::NullInt => Ok(None),
            other => Err(anyhow!("column {name}: expected text, found {other:?}")),
        }
    }

    pub fn text(&self, name: &str) -> anyhow::Result<String> {
        self.opt_text(name)?
            .ok_or_else(|| anyhow!("column {name}: NULL where text must be"))
    }

    pub fn opt_int(&self, name: &str) -> anyhow::Result<Option<i64>> {
        match self.value(name)? {
            Value::Int(i) => Ok(Some(*i)),
            Value::Null | Value::NullInt => Ok(None),
            other => Err(anyhow!(
                "column {name}: expected an integer, found {other:?}"
            )),
        }
    }

    pub fn int(&self, name: &str) -> anyhow::Result<i64> {
        self.opt_int(name)?
            .ok_or_else(|| anyhow!("column {name}: NULL where an integer must be"))
    }

    /// A 0/1 column.
    pub fn flag(&self, name: &str) -> anyhow::Result<bool> {
        match self.int(name)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(anyhow!("column {name}: {other} is not 0 or 1")),
        }
    }

    pub fn opt_blob(&self, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
        match self.value(name)? {
            Value::Blob(b) => Ok(Some(b.clone())),
            Value::Null | Value::NullInt => Ok(None),
            other => Err(anyhow!("column {name}: expected bytes, found {other:?}")),
        }
    }

    pub fn time(&self, name: &str) -> anyhow::Result<OffsetDateTime> {
        from_ms(self.int(name)?).with_context(|| format!("column {name}"))
    }

    pub fn opt_time(&self, name: &str) -> anyhow::Result<Option<OffsetDateTime>> {
        self.opt_int(name)?
            .map(|v| from_ms(v).with_context(|| format!("column {name}")))
            .transpose()
    }

    /// A stored word, decoded into its enum.
    pub fn word<T: Stored>(&self, name: &str) -> anyhow::Result<T> {
        let s = self.text(name)?;
        T::parse(&s).ok_or_else(|| anyhow!("column {name}: {s:?} is not a known {}", T::WHAT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CodeStatus;

    fn row(values: Vec<Value>) -> Row {
        let names: Vec<String> = (0..values.len()).map(|i| format!("c{i}")).collect();
        Row::new(names.into(), values)
    }

    #[test]
    fn a_stored_word_decodes_and_an_unknown_one_is_an_error() {
        let r = row(vec!["pending".into(), "bogus".into()]);
        assert_eq!(r.word::<CodeStatus>("c0").unwrap(), CodeStatus::Pending);
        let err = r.word::<CodeStatus>("c1").unwrap_err().to_string();
        assert!(err.contains("c1") && err.contains("bogus"), "{err}");
    }

    #[test]
    fn a_null_where_a_value_must_be_is_an_error_naming_the_column() {
        let r = row(vec![Value::Null, Value::NullInt]);
        assert!(r.text("c0").unwrap_err().to_string().contains("c0"));
        assert_eq!(r.opt_text("c0").unwrap(), None);
        assert!(r.int("c1").is_err());
        assert!(r.text("missing").is_err());
    }

    #[test]
    fn times_round_trip_through_milliseconds() {
        let t = time::macros::datetime!(2026-12-02 05:37:10.123 UTC);
        let r = row(vec![Value::from(t)]);
        assert_eq!(r.time("c0").unwrap(), t);
    }

    #[test]
    fn a_flag_is_zero_or_one_only() {
        let r = row(vec![0i64.into(), 1i64.into(), 7i64.into()]);
        assert!(!r.flag("c0").unwrap());
        assert!(r.flag("c1").unwrap());
        assert!(r.flag("c2").is_err());
    }
}
