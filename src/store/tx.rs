//! The one seam between units of work and the databases.
//!
//! A unit of work is an `async` function over `&mut dyn Tx`, written once. PostgreSQL runs it in
//! a sqlx transaction, awaiting each statement on the network. SQLite runs it on the writer
//! thread, where every statement completes synchronously: the thread drives the unit's future
//! with a single poll (`now_or_never`), and a unit that would ever wait is a bug reported as an
//! error. Reads are units too, on a reader thread or a pooled connection.

use futures_util::future::BoxFuture;

use super::stmt::{Row, Stmt};

/// Which database runs a unit (for the one statement that must differ: the outbox claim, and
/// PostgreSQL's advisory locks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// What a unit of work wants done with its changes.
#[derive(Debug)]
pub(crate) enum Unit<R> {
    /// Keep the changes.
    Commit(R),
    /// Roll back this unit's changes, but still return `R` (an expected refusal).
    Discard(R),
}

/// A transaction (or, for reads, a connection) of either database.
pub(crate) trait Tx: Send {
    fn backend(&self) -> Backend;

    /// Runs a statement; returns the number of rows it changed.
    fn execute(&mut self, stmt: Stmt) -> BoxFuture<'_, Result<u64, DbError>>;

    /// Runs a statement and returns every row.
    fn fetch_all(&mut self, stmt: Stmt) -> BoxFuture<'_, Result<Vec<Row>, DbError>>;
}

impl dyn Tx + '_ {
    /// The first row, if any.
    pub async fn fetch_optional(&mut self, stmt: Stmt) -> Result<Option<Row>, DbError> {
        Ok(self.fetch_all(stmt).await?.into_iter().next())
    }

    /// The one row a statement must return.
    pub async fn fetch_one(&mut self, stmt: Stmt) -> Result<Row, DbError> {
        let sql = stmt.sql;
        self.fetch_optional(stmt).await?.ok_or_else(|| DbError {
            kind: DbErrorKind::Other,
            message: format!("no row returned by {sql}"),
        })
    }
}

/// What a database error means to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// The database cannot be reached or is busy right now: 503 with Retry-After; a read may
    /// be retried.
    Unavailable,
    /// A unique constraint (an identifier already taken).
    UniqueViolation,
    Other,
}

/// An error of either driver, classified once.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    pub kind: DbErrorKind,
    pub message: String,
}

impl DbError {
    pub fn is_unique_violation(&self) -> bool {
        self.kind == DbErrorKind::UniqueViolation
    }
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        let kind = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => DbErrorKind::Unavailable,
            sqlx::Error::Database(db) if db.is_unique_violation() => DbErrorKind::UniqueViolation,
            // Connection exceptions (08…), shutdown (57P0x), database gone (3D000), and a
            // deadlock or serialization failure (the transaction can simply be retried).
            sqlx::Error::Database(db)
                if db.code().is_some_and(|c| {
                    c.starts_with("08")
                        || c.starts_with("57P0")
                        || c == "3D000"
                        || c == "40P01"
                        || c == "40001"
                }) =>
            {
                DbErrorKind::Unavailable
            }
            _ => DbErrorKind::Other,
        };
        DbError {
            kind,
            message: e.to_string(),
        }
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        let kind = match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                DbErrorKind::UniqueViolation
            }
            _ => match e.sqlite_error_code() {
                Some(
                    rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::CannotOpen,
                ) => DbErrorKind::Unavailable,
                _ => DbErrorKind::Other,
            },
        };
        DbError {
            kind,
            message: e.to_string(),
        }
    }
}

/// Whether anything in an error's chain means the database cannot serve right now (as opposed
/// to a bug or a constraint): the request gets a 503 with `Retry-After`.
pub fn is_unavailable_error(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<DbError>()
            .is_some_and(|d| d.kind == DbErrorKind::Unavailable)
            || cause.is::<super::sqlite::Overloaded>()
    })
}
