//! The one seam between units of work and the databases.
//!
//! A unit of work is an `async` function over `&mut dyn Tx`, written once. PostgreSQL runs it in
//! a transaction on a pooled tokio-postgres connection: the statements of one [`Tx::run`] are
//! sent together and answered in one network round trip (pipelined), and `BEGIN` goes out with
//! the unit's first statements. SQLite runs it on the writer thread, where every statement
//! completes synchronously: the thread drives the unit's future with a single poll
//! (`now_or_never`), and a unit that would ever wait is a bug reported as an error. Reads are
//! units too, on a reader thread or a pooled connection.

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

/// What one statement did: the rows it changed (for a `SELECT`, the rows it returned) and the
/// rows it returned.
#[derive(Debug, Clone, Default)]
pub(crate) struct Done {
    pub changed: u64,
    pub rows: Vec<Row>,
}

/// A batch stopped at its first failing statement: what ran before it, and its error.
#[derive(Debug, thiserror::Error)]
#[error("statement {at} of a batch")]
pub(crate) struct Failed {
    /// The position of the failing statement in the batch.
    pub at: usize,
    /// What the statements before it did (they are not committed unless the unit commits).
    pub done: Vec<Done>,
    #[source]
    pub error: DbError,
}

impl From<Failed> for DbError {
    fn from(f: Failed) -> Self {
        f.error
    }
}

/// A transaction (or, for reads, a connection) of either database.
pub(crate) trait Tx: Send {
    fn backend(&self) -> Backend;

    /// Runs statements in order and returns what each did. The statements are sent before any
    /// answer is read (PostgreSQL: one round trip for the batch), so none may depend on
    /// another's result; the database still runs them one after another, in this order (a lock
    /// taken by one holds for the next). The first failing statement ends the batch: PostgreSQL
    /// aborts the transaction at an error anyway, and SQLite stops there too, so both backends
    /// report the same [`Failed`]. A unit that uses the results to decide whether to keep the
    /// later statements' writes returns [`Unit::Discard`] to undo them.
    fn run(&mut self, stmts: Vec<Stmt>) -> BoxFuture<'_, Result<Vec<Done>, Failed>>;
}

impl dyn Tx + '_ {
    /// Runs one statement; returns the number of rows it changed.
    pub async fn execute(&mut self, stmt: Stmt) -> Result<u64, DbError> {
        Ok(self.one(stmt).await?.changed)
    }

    /// Runs one statement and returns every row.
    pub async fn fetch_all(&mut self, stmt: Stmt) -> Result<Vec<Row>, DbError> {
        Ok(self.one(stmt).await?.rows)
    }

    async fn one(&mut self, stmt: Stmt) -> Result<Done, DbError> {
        let mut done = self.run(vec![stmt]).await?;
        Ok(done.pop().unwrap_or_default())
    }

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

impl DbErrorKind {
    /// PostgreSQL's SQLSTATE codes: connection exceptions (08…), shutdown (57P0x), the
    /// database gone (3D000), a deadlock or a serialization failure (the transaction can
    /// simply be tried again) mean "unavailable"; 23505 is a unique violation.
    pub(crate) fn of_sqlstate(code: &str) -> Self {
        if code == "23505" {
            DbErrorKind::UniqueViolation
        } else if code.starts_with("08")
            || code.starts_with("57P0")
            || code == "3D000"
            || code == "40P01"
            || code == "40001"
        {
            DbErrorKind::Unavailable
        } else {
            DbErrorKind::Other
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
