//! PostgreSQL: units of work in sqlx transactions, reads on pooled connections.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Column, Postgres, Row as _, TypeInfo};

use super::stmt::{Row, Stmt, Value};
use super::tx::{Backend, DbError, DbErrorKind, Tx};

/// A unit of work's view of a PostgreSQL connection (inside a transaction for writes).
pub(crate) struct PgTx<'c> {
    pub conn: &'c mut sqlx::PgConnection,
}

fn query(stmt: Stmt) -> sqlx::query::Query<'static, Postgres, PgArguments> {
    let mut q = sqlx::query(stmt.sql);
    for p in stmt.params {
        q = match p {
            Value::Text(s) => q.bind(s),
            Value::Int(i) => q.bind(i),
            Value::Blob(b) => q.bind(b),
            Value::Null => q.bind(Option::<String>::None),
            Value::NullInt => q.bind(Option::<i64>::None),
        };
    }
    q
}

fn decode(rows: Vec<PgRow>) -> Result<Vec<Row>, DbError> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let names: Arc<[String]> = first
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect::<Vec<_>>()
        .into();
    let types: Vec<String> = first
        .columns()
        .iter()
        .map(|c| c.type_info().name().to_string())
        .collect();
    rows.iter()
        .map(|r| {
            let values = types
                .iter()
                .enumerate()
                .map(|(i, ty)| decode_value(r, i, ty))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Row::new(names.clone(), values))
        })
        .collect()
}

fn decode_value(r: &PgRow, i: usize, ty: &str) -> Result<Value, DbError> {
    Ok(match ty {
        "INT8" => r
            .try_get::<Option<i64>, _>(i)?
            .map_or(Value::Null, Value::Int),
        "INT4" => r
            .try_get::<Option<i32>, _>(i)?
            .map_or(Value::Null, |v| Value::Int(v.into())),
        "INT2" => r
            .try_get::<Option<i16>, _>(i)?
            .map_or(Value::Null, |v| Value::Int(v.into())),
        "BOOL" => r
            .try_get::<Option<bool>, _>(i)?
            .map_or(Value::Null, |v| Value::Int(v.into())),
        "TEXT" | "VARCHAR" | "NAME" | "BPCHAR" => r
            .try_get::<Option<String>, _>(i)?
            .map_or(Value::Null, Value::Text),
        "BYTEA" => r
            .try_get::<Option<Vec<u8>>, _>(i)?
            .map_or(Value::Null, Value::Blob),
        other => {
            return Err(DbError {
                kind: DbErrorKind::Other,
                message: format!("column {i}: PostgreSQL type {other} is not read by the store"),
            })
        }
    })
}

impl Tx for PgTx<'_> {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn execute(&mut self, stmt: Stmt) -> BoxFuture<'_, Result<u64, DbError>> {
        Box::pin(async move { Ok(query(stmt).execute(&mut *self.conn).await?.rows_affected()) })
    }

    fn fetch_all(&mut self, stmt: Stmt) -> BoxFuture<'_, Result<Vec<Row>, DbError>> {
        Box::pin(async move { decode(query(stmt).fetch_all(&mut *self.conn).await?) })
    }
}
