//! The PostgreSQL connection's TLS, as the URL's `sslmode` asks (the test server has TLS on,
//! with its self-signed certificate).

use reqwest::StatusCode;

use crate::helpers::spawn_app_with;

/// The server's own connections to its database (named `latchkey` in `pg_stat_activity`),
/// with and without TLS.
const ENCRYPTED: &str =
    "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
     WHERE a.datname = current_database() AND a.application_name = 'latchkey' AND s.ssl";
const PLAIN: &str = "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
     WHERE a.datname = current_database() AND a.application_name = 'latchkey' AND NOT s.ssl";

crate::postgres_tests! {
    async fn sslmode_require_encrypts_every_connection_of_the_server() {
        let app = spawn_app_with(|c| c.database_url.push_str("?sslmode=require")).await;
        let resp = app.sign_up("tls@example.com").await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert!(app.count(ENCRYPTED).await >= 1, "the server's connections use TLS");
        assert_eq!(app.count(PLAIN).await, 0, "none is in plain text");
    }

    async fn sslmode_disable_connects_without_tls() {
        let app = spawn_app_with(|c| c.database_url.push_str("?sslmode=disable")).await;
        let resp = app.sign_up("plain@example.com").await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert!(app.count(PLAIN).await >= 1);
        assert_eq!(app.count(ENCRYPTED).await, 0);
    }
}

/// The test server's own certificate (self-signed, for the name `localhost`), as a root.
async fn server_certificate() -> String {
    let admin = sqlx::AnyPool::connect(&crate::helpers::postgres_url().unwrap())
        .await
        .unwrap();
    let path: String = sqlx::query_scalar("SHOW ssl_cert_file")
        .fetch_one(&admin)
        .await
        .unwrap();
    admin.close().await;
    path
}

/// A store on a fresh database, reached at `host`, with `tls` appended to the URL.
async fn connect(host: &str, tls: &str) -> anyhow::Result<latchkey::store::Store> {
    sqlx::any::install_default_drivers();
    let mut url = url::Url::parse(&crate::helpers::fresh_postgres_database().await).unwrap();
    url.set_host(Some(host)).unwrap();
    let options = latchkey::store::DatabaseOptions {
        url: format!("{url}?{tls}"),
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_secs(5),
        sqlite_synchronous_full: true,
    };
    latchkey::store::Store::connect(&options).await
}

crate::postgres_tests! {
    async fn verify_full_connects_to_a_certificate_of_the_named_root_that_names_the_host() {
        let cert = server_certificate().await;
        let store = connect("localhost", &format!("sslmode=verify-full&sslrootcert={cert}"))
            .await
            .unwrap();
        assert!(store.ready().await);
        store.close().await;
    }

    async fn verify_full_refuses_a_certificate_that_does_not_name_the_host() {
        let cert = server_certificate().await;
        let err = connect("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={cert}"))
            .await
            .err()
            .expect("127.0.0.1 is not a name of the certificate");
        // Refused by the server's own connections (checked first), before the migrations'.
        assert_eq!(err.to_string(), "connecting to PostgreSQL", "{err:#}");
        assert!(format!("{err:#}").contains("not valid for name"), "{err:#}");
    }

    async fn verify_full_refuses_a_certificate_of_an_untrusted_root() {
        let err = connect("localhost", "sslmode=verify-full")
            .await
            .err()
            .expect("the self-signed certificate is not under the Mozilla roots");
        assert_eq!(err.to_string(), "connecting to PostgreSQL", "{err:#}");
        assert!(format!("{err:#}").contains("UnknownIssuer"), "{err:#}");
    }
}
