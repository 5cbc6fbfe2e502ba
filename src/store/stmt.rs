//! Statements as data: SQL text plus owned parameters, executable through sqlx (any backend) or
//! on the SQLite writer thread (rusqlite). One definition of each write serves both.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::Any;

/// A parameter value.
#[derive(Debug, Clone)]
pub(crate) enum P {
    Text(String),
    Int(i64),
    Blob(Vec<u8>),
    Null,
    /// A NULL for an integer column (PostgreSQL types a bound NULL).
    NullInt,
}

impl From<&str> for P {
    fn from(v: &str) -> Self {
        P::Text(v.to_string())
    }
}

impl From<String> for P {
    fn from(v: String) -> Self {
        P::Text(v)
    }
}

impl From<i64> for P {
    fn from(v: i64) -> Self {
        P::Int(v)
    }
}

impl From<Option<&str>> for P {
    fn from(v: Option<&str>) -> Self {
        v.map_or(P::Null, P::from)
    }
}

impl From<Option<i64>> for P {
    fn from(v: Option<i64>) -> Self {
        v.map_or(P::NullInt, P::Int)
    }
}

impl From<&[u8]> for P {
    fn from(v: &[u8]) -> Self {
        P::Blob(v.to_vec())
    }
}

impl rusqlite::ToSql for P {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            P::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            P::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            P::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            P::Null | P::NullInt => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

/// One statement of a unit of work.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    pub sql: &'static str,
    pub params: Vec<P>,
}

impl Stmt {
    pub fn new(sql: &'static str, params: Vec<P>) -> Self {
        Self { sql, params }
    }

    /// The sqlx query with every parameter bound.
    pub fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        let mut q = sqlx::query(self.sql);
        for p in &self.params {
            q = match p {
                P::Text(s) => q.bind(s.as_str()),
                P::Int(i) => q.bind(*i),
                P::Blob(b) => q.bind(b.clone()),
                P::Null => q.bind(Option::<String>::None),
                P::NullInt => q.bind(Option::<i64>::None),
            };
        }
        q
    }

    /// Executes on a rusqlite connection (the SQLite writer thread); returns rows changed.
    pub fn execute(&self, conn: &rusqlite::Connection) -> rusqlite::Result<usize> {
        conn.prepare_cached(self.sql)?
            .execute(rusqlite::params_from_iter(self.params.iter()))
    }
}

/// Whether a rusqlite error is a unique-constraint violation.
pub(crate) fn is_unique_violation_sqlite(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// Reading a column by name, from a sqlx row or a rusqlite row, so one mapping serves both.
pub(crate) trait Columns {
    fn text(&self, name: &str) -> String;
    fn opt_text(&self, name: &str) -> Option<String>;
    fn int(&self, name: &str) -> i64;
    fn opt_int(&self, name: &str) -> Option<i64>;
}

impl Columns for sqlx::any::AnyRow {
    fn text(&self, name: &str) -> String {
        sqlx::Row::get(self, name)
    }
    fn opt_text(&self, name: &str) -> Option<String> {
        sqlx::Row::get(self, name)
    }
    fn int(&self, name: &str) -> i64 {
        sqlx::Row::get(self, name)
    }
    fn opt_int(&self, name: &str) -> Option<i64> {
        sqlx::Row::get(self, name)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, name: &str) -> String {
        self.get(name)
            .unwrap_or_else(|e| panic!("column {name}: {e}"))
    }
    fn opt_text(&self, name: &str) -> Option<String> {
        self.get(name)
            .unwrap_or_else(|e| panic!("column {name}: {e}"))
    }
    fn int(&self, name: &str) -> i64 {
        self.get(name)
            .unwrap_or_else(|e| panic!("column {name}: {e}"))
    }
    fn opt_int(&self, name: &str) -> Option<i64> {
        self.get(name)
            .unwrap_or_else(|e| panic!("column {name}: {e}"))
    }
}
