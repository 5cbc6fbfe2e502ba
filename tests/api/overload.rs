//! Admission (issue 13, item 2): load shedding past `max_in_flight_requests` (503 + Retry-After
//! at once, pages and API, through the one error writer), slow request bodies that hold no place
//! and get 408 when their time is up, a cap on one client address's open requests, and probes
//! that are never shed. Slow clients are real sockets that send a head and then trickle a body.

use std::time::{Duration, Instant};

use sqlx::{Connection, Executor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::helpers::*;

/// A client that sends a request's head and the start of its body, then one byte every 100 ms:
/// its body (10,000 bytes declared) would take a quarter of an hour to arrive.
struct SlowClient {
    read: OwnedReadHalf,
    trickle: tokio::task::JoinHandle<()>,
}

impl SlowClient {
    /// A form post to `/sign-in` (or JSON to the API when `path` is under `/v1/`), with
    /// `headers` (e.g. `X-Forwarded-For`) added to its head.
    async fn open(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Self {
        let (content_type, start) = if path.starts_with("/v1/") {
            ("application/json", "{\"identifier\": \"")
        } else {
            ("application/x-www-form-urlencoded", "email_address=")
        };
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nOrigin: {}\r\nContent-Type: {content_type}\r\nContent-Length: 10000\r\n",
            app.address
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        head.push_str(start);
        Self::start(app, &head).await
    }

    /// A form post to `/sign-in` with a chunked body, one valid one-byte chunk every 100 ms.
    async fn open_chunked(app: &TestApp, headers: &[(&str, &str)]) -> Self {
        let mut head = format!(
            "POST /sign-in HTTP/1.1\r\nHost: localhost\r\nOrigin: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n",
            app.address
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\ne\r\nemail_address=\r\n");
        Self::start_with(app, &head, b"1\r\na\r\n").await
    }

    /// Sends `first`, then a byte every 100 ms.
    async fn start(app: &TestApp, first: &str) -> Self {
        Self::start_with(app, first, b"a").await
    }

    /// Sends `first`, then `tick` every 100 ms.
    async fn start_with(app: &TestApp, first: &str, tick: &'static [u8]) -> Self {
        let stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
            .await
            .unwrap();
        let (read, mut write) = stream.into_split();
        write.write_all(first.as_bytes()).await.unwrap();
        let trickle = tokio::spawn(trickle(write, tick));
        Self { read, trickle }
    }

    /// Waits for the server's answer (however long it takes, up to the guard), then for the
    /// server to close the connection.
    async fn answer(mut self) -> RawAnswer {
        let mut buf = Vec::new();
        let answer = tokio::time::timeout(GUARD, async {
            loop {
                if let Some(answer) = RawAnswer::parse(&buf) {
                    return answer;
                }
                let mut chunk = [0u8; 4096];
                let n = self
                    .read
                    .read(&mut chunk)
                    .await
                    .expect("reading the answer");
                assert!(
                    n > 0,
                    "closed without an answer: {}",
                    String::from_utf8_lossy(&buf)
                );
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("the server answers a slow body");
        let mut rest = [0u8; 1024];
        let closed = tokio::time::timeout(GUARD, self.read.read(&mut rest))
            .await
            .expect("the server closes the connection");
        assert!(
            matches!(closed, Ok(0) | Err(_)),
            "the connection carried on: {closed:?}"
        );
        self.trickle.abort();
        answer
    }
}

impl Drop for SlowClient {
    fn drop(&mut self) {
        self.trickle.abort();
    }
}

/// `tick` every 100 ms until the server stops reading.
async fn trickle(mut write: OwnedWriteHalf, tick: &'static [u8]) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if write.write_all(tick).await.is_err() {
            return;
        }
    }
}

/// One HTTP/1.1 answer read off a socket.
struct RawAnswer {
    status: u16,
    head: String,
    body: String,
}

impl RawAnswer {
    /// The answer, once `buf` holds its head and the `Content-Length` bytes of its body.
    fn parse(buf: &[u8]) -> Option<Self> {
        let text = String::from_utf8_lossy(buf);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut answer = Self {
            status: head.split(' ').nth(1)?.parse().ok()?,
            head: head.to_string(),
            body: String::new(),
        };
        let length: usize = answer
            .header("content-length")
            .map_or(0, |v| v.parse().unwrap());
        answer.body = body.to_string();
        (body.len() >= length).then_some(answer)
    }

    /// The value of the header `name` (lowercase).
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Opens `n` slow clients on `path` and waits until the server is receiving all their bodies.
async fn slow_clients(
    app: &TestApp,
    n: usize,
    path: &str,
    headers: &[(&str, &str)],
) -> Vec<SlowClient> {
    let before = app.admission.receiving();
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(SlowClient::open(app, path, headers).await);
    }
    until("the server receives every slow body", || async {
        app.admission.receiving() == before + n
    })
    .await;
    clients
}

/// Another connection holds the database's write lock (SQLite) or locks the flows table
/// (PostgreSQL), so a sign-in post waits in its handler: a request in flight for as long as the
/// test needs (on SQLite, up to the 5 s busy timeout).
struct WritesHeld(sqlx::AnyConnection);

impl WritesHeld {
    async fn take(app: &TestApp) -> Self {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&app.raw.database_url)
            .await
            .unwrap();
        match app.backend {
            Backend::Sqlite => {
                conn.execute("BEGIN EXCLUSIVE").await.unwrap();
            }
            Backend::Postgres => {
                conn.execute("BEGIN").await.unwrap();
                conn.execute("LOCK TABLE flows IN ACCESS EXCLUSIVE MODE")
                    .await
                    .unwrap();
            }
        }
        Self(conn)
    }

    async fn release(mut self) {
        self.0.execute("ROLLBACK").await.unwrap();
    }
}

/// A sign-in post that waits in its handler behind [`WritesHeld`]; returns once it is in flight.
async fn a_request_in_flight(
    app: &TestApp,
    email: &str,
) -> tokio::task::JoinHandle<reqwest::StatusCode> {
    let client = browser();
    let form = app
        .page_with(&client, "/sign-in")
        .await
        .form("/sign-in")
        .set("email_address", email);
    let (address, url) = (app.address.clone(), app.url("/sign-in"));
    let before = app.admission.in_flight();
    let held = tokio::spawn(async move {
        let resp = client
            .post(url)
            .header("Origin", address)
            .form(&form.fields)
            .send()
            .await
            .unwrap();
        resp.status()
    });
    until("the held request is in flight", || async {
        app.admission.in_flight() == before + 1
    })
    .await;
    held
}

fn with_forwarded_for(ip: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-forwarded-for", ip.parse().unwrap());
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .unwrap()
}

crate::backend_tests! {
    async fn beyond_the_in_flight_limit_requests_get_a_503_with_retry_after_at_once() {
        let app = spawn_app_with(|c| c.max_in_flight_requests = 1).await;
        app.create_account("held@example.com").await;
        let client = browser();
        assert_eq!(client.get(app.url("/sign-in")).send().await.unwrap().status(), 200);

        let writes = WritesHeld::take(&app).await;
        let held = a_request_in_flight(&app, "held@example.com").await;
        let page = client.get(app.url("/sign-in")).send().await.unwrap();
        assert_eq!(page.status(), 503, "a request beyond the limit is shed");
        assert_eq!(page.headers()["retry-after"], "1");
        assert_eq!(page.headers()["x-frame-options"], "DENY");
        assert!(page.headers().contains_key("content-security-policy"));
        let html = page.text().await.unwrap();
        assert!(html.contains("Nothing was lost"), "{html}");
        assert!(html.contains("Request id"), "the error page of every error: {html}");

        let api = client
            .post(app.url("/v1/client/sign_ins"))
            .header("Origin", "https://app.example.com")
            .json(&serde_json::json!({"identifier": "held@example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(api.status(), 503);
        assert_eq!(api.headers()["retry-after"], "1");
        assert_eq!(api.headers()["access-control-allow-origin"], "https://app.example.com");
        let body: serde_json::Value = api.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "service_unavailable");

        // The held request ends: its place is free again.
        writes.release().await;
        let held = held.await.unwrap();
        until("the held request ends", || async { app.admission.in_flight() == 0 }).await;
        let stored = i64::from(held == 303);
        assert_eq!(app.count("SELECT COUNT(*) FROM flows WHERE kind = 'sign_in'").await, stored, "a shed request does nothing");
        let page = client.get(app.url("/sign-in")).send().await.unwrap();
        assert_eq!(page.status(), 200, "the limit frees itself when requests finish");
    }

    async fn probes_are_answered_while_every_place_is_taken() {
        let app = spawn_app_with(|c| c.max_in_flight_requests = 1).await;
        app.create_account("held@example.com").await;
        let writes = WritesHeld::take(&app).await;
        let held = a_request_in_flight(&app, "held@example.com").await;

        assert_eq!(app.get("/sign-in").await.status(), 503, "every place is taken");
        let health = app.get("/healthz").await;
        assert_eq!(health.status(), 200, "a busy process is alive");
        assert_eq!(health.text().await.unwrap(), "ok");
        assert_eq!(app.get("/readyz").await.status(), 200, "and ready: its database answers");

        writes.release().await;
        held.await.unwrap();
    }

    async fn without_a_limit_many_requests_at_once_are_all_served() {
        let app = spawn_app_with(|c| c.max_in_flight_requests = 0).await;
        app.create_account("held@example.com").await;
        let writes = WritesHeld::take(&app).await;
        let held = a_request_in_flight(&app, "held@example.com").await;
        let client = browser();
        let all = futures_util::future::join_all(
            (0..32).map(|_| client.get(app.url("/sign-in")).send()),
        )
        .await;
        assert!(all.into_iter().all(|r| r.unwrap().status() == 200));
        writes.release().await;
        held.await.unwrap();
    }

    async fn slow_bodies_hold_no_place_so_pages_posts_and_probes_are_served_beside_them() {
        let app = spawn_app_with(|c| {
            c.max_in_flight_requests = 4;
            c.request_body_timeout_ms = 60_000;
        })
        .await;
        app.create_account("fast@example.com").await;
        let mut slow = Vec::new();
        for _ in 0..8 {
            slow.push(SlowClient::open(&app, "/sign-in", &[]).await);
        }
        let a = &app.admission;
        until("every slow request is received or holds a place", || async { a.receiving() == 8 || a.in_flight() == 4 }).await;
        assert_eq!(a.in_flight(), 0, "a request waiting for its body holds no place");

        let client = browser();
        assert_eq!(app.get_with(&client, "/sign-in").await.status(), 200);
        let started = app.submit_identifier_with(&client, "/sign-in", "fast@example.com").await;
        assert_eq!(started.status(), 303, "a whole form post is served at once");
        let api = app
            .client
            .post(app.url("/v1/client/sign_ins"))
            .header("Origin", "https://app.example.com")
            .json(&serde_json::json!({"identifier": "fast@example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(api.status(), 200);
        assert_eq!(app.get("/healthz").await.status(), 200);
        assert_eq!(app.get("/readyz").await.status(), 200);
        assert_eq!(a.receiving(), 8, "the slow bodies are still arriving");
        drop(slow);
    }

    async fn a_body_that_does_not_arrive_in_time_gets_408_and_its_connection_is_closed() {
        let app = spawn_app_with(|c| {
            c.max_in_flight_requests = 4;
            c.request_body_timeout_ms = 1000;
        })
        .await;
        let opened = Instant::now();
        let pages = slow_clients(&app, 6, "/sign-in", &[]).await;
        let api = slow_clients(&app, 1, "/v1/client/sign_ins", &[]).await;
        // A chunked body (actix would drain a dropped one to reuse the connection).
        let chunked = SlowClient::open_chunked(&app, &[]).await;
        until("the chunked body is received", || async { app.admission.receiving() == 8 }).await;

        for client in pages.into_iter().chain([chunked]) {
            let answer = client.answer().await;
            assert_eq!(answer.status, 408, "{}", answer.head);
            assert_eq!(answer.header("connection"), Some("close"));
            assert_eq!(answer.header("x-frame-options"), Some("DENY"));
            assert!(answer.body.contains("took too long") && answer.body.contains("Request id"), "{}", answer.body);
        }
        assert!(opened.elapsed() >= Duration::from_millis(1000), "not before the timeout");
        for client in api {
            let answer = client.answer().await;
            assert_eq!(answer.status, 408);
            assert_eq!(answer.header("connection"), Some("close"));
            let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
            assert_eq!(body["errors"][0]["code"], "request_timeout");
        }
        until("no body is being received", || async { app.admission.receiving() == 0 }).await;
        assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 0, "a timed-out request does nothing");

        app.create_account("after@example.com").await;
        assert_eq!(app.submit_identifier("/sign-in", "after@example.com").await.status(), 303);
    }

    async fn a_head_that_does_not_arrive_in_time_gets_408_and_its_connection_is_closed() {
        let app = spawn_app_with(|c| c.request_head_timeout_ms = 500).await;
        let opened = Instant::now();
        // The head never ends: after its first line, one byte of a header every 100 ms.
        let slow = SlowClient::start(&app, "POST /sign-in HTTP/1.1\r\nHost: localhost\r\nX-Slow: ").await;
        let answer = slow.answer().await;
        assert_eq!(answer.status, 408, "{}", answer.head);
        assert_eq!(answer.header("connection"), Some("close"));
        // actix's default is 5 s: the configured timeout is the one in force.
        // (A margin for a loaded machine: the answer comes after ~0.5 s, not after 5 s.)
        assert!(opened.elapsed() < Duration::from_millis(4500), "{:?}", opened.elapsed());
        // The server still answers whole requests. (On a machine loaded by the parallel suite an
        // ordinary request's head can itself take longer than the short timeout to be read, and
        // get a 408: a few tries.)
        // A new connection for each try: a kept-alive one idle past the 500 ms gets the
        // server's 408 unasked, which the client would read as the next answer.
        let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let status = fresh.get(app.url("/sign-in")).send().await.map(|r| r.status());
            let ok = matches!(status, Ok(s) if s == 200);
            statuses.push(status.map_err(|e| e.to_string()));
            if ok {
                break;
            }
        }
        assert!(
            matches!(statuses.last(), Some(Ok(s)) if *s == reqwest::StatusCode::OK),
            "{statuses:?}"
        );
    }

    async fn one_client_address_gets_at_most_its_cap_of_open_requests_while_others_are_served() {
        let app = spawn_app_with(|c| {
            c.max_in_flight_per_ip = 3;
            c.request_body_timeout_ms = 60_000;
            c.trusted_proxies = vec!["127.0.0.1".into()];
        })
        .await;
        app.create_account("other@example.com").await;
        // Behind the proxy, the client prepends what it likes; the proxy appends its address.
        let mut slow = Vec::new();
        for i in 0..3 {
            let chain = format!("192.0.2.{i}, 203.0.113.7");
            slow.extend(slow_clients(&app, 1, "/sign-in", &[("X-Forwarded-For", &chain)]).await);
        }

        let same = with_forwarded_for("203.0.113.7");
        let page = app.get_with(&same, "/sign-in").await;
        assert_eq!(page.status(), 429, "a fourth open request of one address is refused");
        assert_eq!(page.headers()["retry-after"], "1");
        assert_eq!(page.headers()["x-frame-options"], "DENY");
        assert!(page.text().await.unwrap().contains("Too many requests at once"));
        let api = with_forwarded_for("10.1.2.3, 203.0.113.7")
            .post(app.url("/v1/client/sign_ins"))
            .header("Origin", "https://app.example.com")
            .json(&serde_json::json!({"identifier": "other@example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(api.status(), 429);
        let body: serde_json::Value = api.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "too_many_requests");
        assert_eq!(app.get_with(&same, "/healthz").await.status(), 200, "probes are never refused");
        // A refused request's body is not read: its connection is closed after the answer.
        let refused = SlowClient::open_chunked(&app, &[("X-Forwarded-For", "203.0.113.7")]).await.answer().await;
        assert_eq!(refused.status, 429);
        assert_eq!(refused.header("connection"), Some("close"));

        let other = with_forwarded_for("198.51.100.9");
        let started = app.submit_identifier_with(&other, "/sign-in", "other@example.com").await;
        assert_eq!(started.status(), 303, "another address is served");

        // One slow request goes away: its address has a place again.
        drop(slow.pop());
        eventually("a place is free for the address again", || async {
            (app.get_with(&same, "/sign-in").await.status() == 200).then_some(())
        })
        .await;
    }
}
