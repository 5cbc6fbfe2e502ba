//! PostgreSQL: units of work on pooled tokio-postgres connections.
//!
//! Why tokio-postgres: it pipelines. Every statement of a [`Tx::run`] batch is sent before any
//! answer is read, so a batch costs one network round trip however many statements it holds,
//! and a write unit's `BEGIN` travels with its first batch. On loopback, half of PostgreSQL's
//! CPU went into waking up for one statement at a time (BENCHMARKS.md). The server still runs
//! the statements one after another, in order, so a lock taken by one holds for the next.
//!
//! Statements are prepared once per connection (the cache of `deadpool-postgres`), with the
//! parameter types of the values bound (text, `BIGINT`, `BYTEA`), as sqlx did before.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tokio_postgres::types::{IsNull, ToSql, Type};

use super::stmt::{Row, Stmt, Value};
use super::tx::{Backend, DbError, DbErrorKind, Done, Failed, Tx};
use super::DatabaseOptions;

pub(crate) type Pool = deadpool_postgres::Pool;

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Int(i) => i.to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
            Value::Null | Value::NullInt => Ok(IsNull::Yes),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::TEXT | Type::INT8 | Type::BYTEA)
    }

    tokio_postgres::types::to_sql_checked!();
}

impl Value {
    /// The type a parameter is declared with when its statement is prepared.
    fn pg_type(&self) -> Type {
        match self {
            Value::Text(_) | Value::Null => Type::TEXT,
            Value::Int(_) | Value::NullInt => Type::INT8,
            Value::Blob(_) => Type::BYTEA,
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    /// A database's error is classified by its SQLSTATE. Every other error of the driver is
    /// about the connection (I/O, TLS, a closed connection, a timeout, an unexpected message):
    /// the values and rows it converts are this module's own, converted here.
    fn from(e: tokio_postgres::Error) -> Self {
        let kind = match e.code() {
            Some(code) => DbErrorKind::of_sqlstate(code.code()),
            None => DbErrorKind::Unavailable,
        };
        // The driver's own text names only the kind ("db error"); the cause says what happened.
        let mut message = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            message.push_str(": ");
            message.push_str(&c.to_string());
            cause = c.source();
        }
        DbError { kind, message }
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match e {
            PoolError::Backend(e) => e.into(),
            PoolError::Timeout(_) | PoolError::Closed => DbError {
                kind: DbErrorKind::Unavailable,
                message: format!("no PostgreSQL connection available: {e}"),
            },
            other => DbError {
                kind: DbErrorKind::Other,
                message: other.to_string(),
            },
        }
    }
}

/// How the connection is encrypted, from the URL's `sslmode` (libpq's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it (libpq's and sqlx's default); the certificate is not checked.
    Prefer,
    /// TLS or no connection; the certificate is not checked (as libpq without a root
    /// certificate file, and as sqlx did).
    Require,
    /// TLS with a certificate issued by a trusted root (`sslrootcert`, else the Mozilla roots)
    /// that names the host. (`verify-ca` means the same here: sqlx, which applies the
    /// migrations, checks the name in both modes, and so did the server before.)
    Verify,
}

/// The connection settings of a `postgres://` URL: tokio-postgres reads everything but the TLS
/// choice, which is ours (it knows `disable`, `prefer` and `require` only).
fn parse_url(url: &str) -> anyhow::Result<(tokio_postgres::Config, SslMode, Option<String>)> {
    let mut parsed = url::Url::parse(url).context("`database_url`: not a PostgreSQL URL")?;
    let mut mode = SslMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for (key, value) in parsed.query_pairs() {
        match key.as_ref() {
            "sslmode" => {
                mode = match value.as_ref() {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" | "verify-full" => SslMode::Verify,
                    other => anyhow::bail!(
                        "`database_url`: sslmode={other} is not supported (disable, prefer, require, verify-ca or verify-full)"
                    ),
                }
            }
            "sslrootcert" => root_cert = Some(value.into_owned()),
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    let mut config: tokio_postgres::Config = parsed
        .as_str()
        .parse()
        .context("`database_url`: not a PostgreSQL URL")?;
    config.ssl_mode(match mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    Ok((config, mode, root_cert))
}

/// Accepts any certificate (sslmode `prefer` and `require`: encryption against a passive
/// eavesdropper, no authentication of the server, as libpq without a root certificate); the
/// handshake's signatures are still checked.
#[derive(Debug)]
struct Unverified {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS connector for a mode (rustls with the *ring* provider).
fn tls_connector(
    mode: SslMode,
    root_cert: Option<&str>,
) -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS for PostgreSQL")?;
    let config = if mode == SslMode::Verify {
        let mut roots = rustls::RootCertStore::empty();
        match root_cert {
            Some(path) => {
                for cert in rustls::pki_types::CertificateDer::pem_file_iter(path)
                    .with_context(|| format!("`database_url`: reading sslrootcert {path}"))?
                {
                    let cert = cert
                        .with_context(|| format!("`database_url`: reading sslrootcert {path}"))?;
                    roots
                        .add(cert)
                        .with_context(|| format!("`database_url`: a certificate of {path}"))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified { provider }))
            .with_no_client_auth()
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The pool of a `postgres://` URL: at most `max_connections` (at least 2), connections made
/// as needed and kept; a connection found closed is replaced. Connects nothing yet.
pub(crate) fn pool(options: &DatabaseOptions) -> anyhow::Result<Pool> {
    let (mut config, mode, root_cert) = parse_url(&options.url)?;
    config.connect_timeout(options.acquire_timeout);
    if config.get_application_name().is_none() {
        // How an operator tells the server's connections apart in `pg_stat_activity`.
        config.application_name("latchkey");
    }
    let manager_config = deadpool_postgres::ManagerConfig {
        recycling_method: deadpool_postgres::RecyclingMethod::Fast,
    };
    let manager = match mode {
        SslMode::Disable => {
            deadpool_postgres::Manager::from_config(config, tokio_postgres::NoTls, manager_config)
        }
        _ => deadpool_postgres::Manager::from_config(
            config,
            tls_connector(mode, root_cert.as_deref())?,
            manager_config,
        ),
    };
    deadpool_postgres::Pool::builder(manager)
        .max_size(options.max_connections.max(2) as usize)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(options.acquire_timeout))
        .create_timeout(Some(options.acquire_timeout))
        .recycle_timeout(Some(options.acquire_timeout))
        .build()
        .context("building the PostgreSQL connection pool")
}

/// Where a unit's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A read: no transaction.
    Read,
    /// A write whose `BEGIN` goes out with its first statements.
    NotBegun,
    /// `BEGIN` was sent; `COMMIT` or `ROLLBACK` must follow.
    Open,
    /// The transaction ended (or never began).
    Closed,
}

/// A unit of work's connection: a read's, or a write's transaction.
pub(crate) struct PgTx {
    conn: Option<deadpool_postgres::Client>,
    state: State,
}

impl PgTx {
    /// A pooled connection, within `timeout` (then an "unavailable" error: a 503, never a hang).
    async fn acquire(pool: &Pool, timeout: Duration, state: State) -> Result<Self, DbError> {
        let conn = match tokio::time::timeout(timeout, pool.get()).await {
            Ok(conn) => conn?,
            Err(_) => {
                return Err(DbError {
                    kind: DbErrorKind::Unavailable,
                    message: format!("no PostgreSQL connection within {timeout:?}"),
                })
            }
        };
        Ok(Self {
            conn: Some(conn),
            state,
        })
    }

    pub async fn read(pool: &Pool, timeout: Duration) -> Result<Self, DbError> {
        Self::acquire(pool, timeout, State::Read).await
    }

    pub async fn write(pool: &Pool, timeout: Duration) -> Result<Self, DbError> {
        Self::acquire(pool, timeout, State::NotBegun).await
    }

    fn client(&self) -> &deadpool_postgres::ClientWrapper {
        self.conn
            .as_ref()
            .expect("a PgTx holds its connection until dropped")
    }

    /// Ends the transaction with `COMMIT` or `ROLLBACK` (nothing to send for a unit that ran no
    /// statement).
    async fn end(&mut self, how: &str) -> Result<(), DbError> {
        if self.state != State::Open {
            self.state = State::Closed;
            return Ok(());
        }
        self.client().batch_execute(how).await?;
        self.state = State::Closed;
        Ok(())
    }

    pub async fn commit(mut self) -> Result<(), DbError> {
        self.end("COMMIT").await
    }

    pub async fn rollback(mut self) -> Result<(), DbError> {
        self.end("ROLLBACK").await
    }
}

impl Drop for PgTx {
    /// A transaction left open (a unit abandoned half-way, or a `ROLLBACK` that failed) must not
    /// reach the next unit: its connection leaves the pool and closes, and PostgreSQL rolls the
    /// transaction back.
    fn drop(&mut self) {
        if self.state == State::Open {
            if let Some(conn) = self.conn.take() {
                drop(deadpool_postgres::Object::take(conn));
            }
        }
    }
}

/// Polls every future in order at each wake-up until all are done: each request goes out
/// when its future is first polled, so the requests leave in the order given.
async fn join_in_order<'a, T>(mut futures: Vec<BoxFuture<'a, T>>) -> Vec<T> {
    let mut results: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, result) in futures.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match Pin::new(future).poll(cx) {
                    Poll::Ready(r) => *result = Some(r),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results
        .into_iter()
        .map(|r| r.expect("every future is done"))
        .collect()
}

/// Runs one prepared statement and reads its rows and its count.
async fn run_one(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    params: &[Value],
) -> Result<Done, DbError> {
    let stream = client.query_raw(statement, params.iter()).await?;
    futures_util::pin_mut!(stream);
    let mut rows = Vec::new();
    while let Some(row) = stream.next().await {
        rows.push(row?);
    }
    let changed = stream.rows_affected().unwrap_or(0);
    Ok(Done {
        changed,
        rows: decode(statement, &rows)?,
    })
}

fn decode(
    statement: &tokio_postgres::Statement,
    rows: &[tokio_postgres::Row],
) -> Result<Vec<Row>, DbError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let columns = statement.columns();
    let names: Arc<[String]> = columns
        .iter()
        .map(|c| c.name().to_string())
        .collect::<Vec<_>>()
        .into();
    rows.iter()
        .map(|r| {
            let values = columns
                .iter()
                .enumerate()
                .map(|(i, c)| decode_value(r, i, c.type_()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| DbError {
                    kind: DbErrorKind::Other,
                    message: format!("reading a row: {e}"),
                })?;
            Ok(Row::new(names.clone(), values))
        })
        .collect()
}

fn decode_value(
    r: &tokio_postgres::Row,
    i: usize,
    ty: &Type,
) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    Ok(match *ty {
        Type::INT8 => r
            .try_get::<_, Option<i64>>(i)?
            .map_or(Value::Null, Value::Int),
        Type::INT4 => r
            .try_get::<_, Option<i32>>(i)?
            .map_or(Value::Null, |v| Value::Int(v.into())),
        Type::INT2 => r
            .try_get::<_, Option<i16>>(i)?
            .map_or(Value::Null, |v| Value::Int(v.into())),
        Type::BOOL => r
            .try_get::<_, Option<bool>>(i)?
            .map_or(Value::Null, |v| Value::Int(v.into())),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => r
            .try_get::<_, Option<String>>(i)?
            .map_or(Value::Null, Value::Text),
        Type::BYTEA => r
            .try_get::<_, Option<Vec<u8>>>(i)?
            .map_or(Value::Null, Value::Blob),
        // `SELECT pg_advisory_xact_lock(…)`: the lock is the point, the value is nothing.
        Type::VOID => Value::Null,
        ref other => {
            return Err(
                format!("column {i}: PostgreSQL type {other} is not read by the store").into(),
            )
        }
    })
}

impl Tx for PgTx {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn run(&mut self, stmts: Vec<Stmt>) -> BoxFuture<'_, Result<Vec<Done>, Failed>> {
        Box::pin(async move {
            if stmts.is_empty() {
                return Ok(Vec::new());
            }
            let client = self.conn.as_ref().expect("a PgTx holds its connection");
            // Prepared once per connection; the statements this connection has not seen yet are
            // prepared together (one round trip, the first time only).
            let types: Vec<Vec<Type>> = stmts
                .iter()
                .map(|s| s.params.iter().map(Value::pg_type).collect())
                .collect();
            let prepared: Vec<Result<tokio_postgres::Statement, tokio_postgres::Error>> =
                join_in_order(
                    stmts
                        .iter()
                        .zip(&types)
                        .map(|(s, t)| {
                            Box::pin(client.prepare_typed_cached(s.sql, t)) as BoxFuture<'_, _>
                        })
                        .collect(),
                )
                .await;
            let mut statements = Vec::with_capacity(prepared.len());
            for (at, p) in prepared.into_iter().enumerate() {
                match p {
                    Ok(s) => statements.push(s),
                    Err(e) => {
                        return Err(Failed {
                            at,
                            done: Vec::new(),
                            error: e.into(),
                        })
                    }
                }
            }
            let begin = self.state == State::NotBegun;
            if begin {
                // From the moment BEGIN may have been sent, the connection is in a transaction.
                self.state = State::Open;
            }
            let client: &tokio_postgres::Client = client;
            let mut requests: Vec<BoxFuture<'_, Result<Done, DbError>>> =
                Vec::with_capacity(stmts.len() + 1);
            if begin {
                requests.push(Box::pin(async move {
                    client.batch_execute("BEGIN").await?;
                    Ok(Done::default())
                }));
            }
            for (statement, stmt) in statements.iter().zip(&stmts) {
                requests.push(Box::pin(run_one(client, statement, &stmt.params)));
            }
            let mut results = join_in_order(requests).await.into_iter();
            if begin {
                if let Some(Err(error)) = results.next() {
                    return Err(Failed {
                        at: 0,
                        done: Vec::new(),
                        error,
                    });
                }
            }
            let mut done = Vec::with_capacity(stmts.len());
            for (at, result) in results.enumerate() {
                match result {
                    Ok(d) => done.push(d),
                    Err(error) => return Err(Failed { at, done, error }),
                }
            }
            Ok(done)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_takes_libpq_words_and_verify_modes_are_ours() {
        for (url, mode, tp) in [
            (
                "postgres://u@db/x",
                SslMode::Prefer,
                tokio_postgres::config::SslMode::Prefer,
            ),
            (
                "postgres://u@db/x?sslmode=disable",
                SslMode::Disable,
                tokio_postgres::config::SslMode::Disable,
            ),
            (
                "postgres://u@db/x?sslmode=require",
                SslMode::Require,
                tokio_postgres::config::SslMode::Require,
            ),
            (
                "postgres://u@db/x?sslmode=verify-ca",
                SslMode::Verify,
                tokio_postgres::config::SslMode::Require,
            ),
            (
                "postgresql://u@db/x?sslmode=verify-full",
                SslMode::Verify,
                tokio_postgres::config::SslMode::Require,
            ),
        ] {
            let (config, parsed, root) = parse_url(url).unwrap();
            assert_eq!(parsed, mode, "{url}");
            assert_eq!(config.get_ssl_mode(), tp, "{url}");
            assert_eq!(root, None);
        }
    }

    #[test]
    fn other_settings_of_the_url_reach_the_driver() {
        let (config, mode, root) = parse_url(
            "postgres://app:s%40cret@db.internal:6543/accounts?sslrootcert=/etc/ca.pem&application_name=edge&sslmode=verify-full",
        )
        .unwrap();
        assert_eq!(mode, SslMode::Verify);
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(config.get_user(), Some("app"));
        assert_eq!(config.get_password(), Some(&b"s@cret"[..]));
        assert_eq!(config.get_dbname(), Some("accounts"));
        assert_eq!(config.get_ports(), &[6543]);
        assert_eq!(config.get_application_name(), Some("edge"));
    }

    #[test]
    fn an_unknown_sslmode_is_refused_naming_the_setting() {
        let err = parse_url("postgres://u@db/x?sslmode=allow-anything")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`database_url`") && err.contains("allow-anything"),
            "{err}"
        );
    }

    #[test]
    fn parameters_are_declared_with_the_type_of_their_value() {
        assert_eq!(Value::Text("a".into()).pg_type(), Type::TEXT);
        assert_eq!(Value::Null.pg_type(), Type::TEXT);
        assert_eq!(Value::Int(1).pg_type(), Type::INT8);
        assert_eq!(Value::NullInt.pg_type(), Type::INT8);
        assert_eq!(Value::Blob(vec![1]).pg_type(), Type::BYTEA);
    }

    #[tokio::test]
    async fn requests_leave_in_the_order_given_whatever_order_they_finish_in() {
        let order = std::sync::Mutex::new(Vec::new());
        let order = &order;
        let futures: Vec<BoxFuture<'_, usize>> = (0..5usize)
            .map(|i| {
                Box::pin(async move {
                    order.lock().unwrap().push(i);
                    // Later requests finish first.
                    tokio::time::sleep(Duration::from_millis(5 * (5 - i) as u64)).await;
                    i
                }) as BoxFuture<'_, usize>
            })
            .collect();
        assert_eq!(join_in_order(futures).await, [0, 1, 2, 3, 4]);
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
    }
}
