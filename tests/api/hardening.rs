//! Browser and HTTP hardening (issue 7): the security headers on every route and every kind of
//! error, generic 500s and 503s, HSTS behind https, login CSRF, planted API session cookies, and
//! a grey-box check of the real binary's debug logs and database for secrets.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{
    browser, cookie_pair, current_backend, fresh_postgres_database, location, spawn_app,
    spawn_app_with, Backend, Page, TestApp, TestSmtp, GUARD,
};

// ---------------------------------------------------------------------------------------------
// Headers

/// What one request answered.
struct Answer {
    label: String,
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("{}: not JSON ({}): {}", self.label, self.status, self.body))
    }

    /// What is wrong with this answer's security headers. Static assets may be cached; every
    /// other answer (pages, redirects, errors, the API, probes) must say `no-store`.
    fn header_problems(&self) -> Vec<String> {
        let h = &self.headers;
        let mut problems = Vec::new();
        let mut expect = |name: &str, ok: &dyn Fn(&str) -> bool| {
            let value = h.get(name).and_then(|v| v.to_str().ok());
            if !value.is_some_and(ok) {
                problems.push(format!(
                    "{} ({}): {name} is {value:?}",
                    self.label, self.status
                ));
            }
        };
        expect("content-security-policy", &|csp| {
            [
                "default-src 'self'",
                "frame-ancestors 'none'",
                "object-src 'none'",
                "base-uri 'none'",
                "form-action 'self'",
            ]
            .iter()
            .all(|d| csp.contains(d))
                && !csp.contains("unsafe-inline")
        });
        expect("x-frame-options", &|v| v == "DENY");
        expect("x-content-type-options", &|v| v == "nosniff");
        expect("referrer-policy", &|v| {
            v == "strict-origin-when-cross-origin"
        });
        if !self.label.contains(" /static/") {
            expect("cache-control", &|v| v == "no-store");
        }
        problems
    }

    /// Error answers are generic: no SQL, driver names, stack traces or source paths.
    fn internals(&self) -> Vec<&'static str> {
        let lower = self.body.to_lowercase();
        [
            "sqlx",
            "rusqlite",
            "select ",
            "insert ",
            "update ",
            "delete from",
            "no such table",
            "does not exist",
            "relation ",
            "panicked",
            "stack backtrace",
            "src/",
            ".rs:",
            "/work/",
            "anyhow",
            "error returned from database",
        ]
        .into_iter()
        .filter(|needle| lower.contains(needle))
        .collect()
    }
}

async fn answer(label: String, req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.unwrap_or_else(|e| panic!("{label}: {e}"));
    Answer {
        label,
        status: resp.status(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}

/// A request body, as a browser or a `fetch` would send it.
enum Body {
    Empty,
    Form(Vec<(String, String)>),
    Json(Value),
    Raw(&'static str, String),
}

/// Sends requests from one client and records every answer whose headers are wrong.
struct Scan<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    problems: Vec<String>,
}

impl<'a> Scan<'a> {
    fn new(app: &'a TestApp, client: reqwest::Client) -> Self {
        Self {
            app,
            client,
            problems: Vec::new(),
        }
    }

    /// `method path`, same-origin (as the site's own pages and scripts send it).
    async fn call(&mut self, method: Method, path: &str, body: Body) -> Answer {
        let mut req = self
            .client
            .request(method.clone(), self.app.url(path))
            .header("Origin", &self.app.address);
        req = match body {
            Body::Empty => req,
            Body::Form(fields) => req.form(&fields),
            Body::Json(v) => req.json(&v),
            Body::Raw(content_type, s) => req.header("Content-Type", content_type).body(s),
        };
        self.record(answer(format!("{method} {path}"), req).await)
    }

    async fn get(&mut self, path: &str) -> Answer {
        self.call(Method::GET, path, Body::Empty).await
    }

    async fn post_json(&mut self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Body::Json(body)).await
    }

    fn record(&mut self, a: Answer) -> Answer {
        self.problems.extend(a.header_problems());
        a
    }

    fn assert_clean(&self) {
        assert!(
            self.problems.is_empty(),
            "answers without the security headers:\n{}",
            self.problems.join("\n")
        );
    }
}

fn page_of(a: &Answer) -> Page {
    Page {
        status: a.status,
        html: a.body.clone(),
    }
}

/// The id after `/verify/` in a code page's URL.
fn flow_id(verify_url: &str) -> String {
    verify_url.rsplit('/').next().unwrap().to_string()
}

async fn fresh_code(app: &TestApp, email: &str, n: usize) -> String {
    app.smtp.wait_for(email, n).await.code()
}

crate::backend_tests! {
    async fn every_route_of_the_url_map_and_the_api_carries_the_security_headers() {
        let app = spawn_app().await;
        app.create_account("scan@example.com").await;
        let mut scan = Scan::new(&app, browser());
        let mut statuses = Vec::new();

        // The hosted pages, signed out.
        for path in [
            "/", "/sign-up", "/sign-in", "/user", "/sign-out", "/healthz", "/readyz",
            "/dev/outbox", "/dev/settings", "/examples/custom-flow", "/static/style.css",
            "/static/flow.js", "/static/latchkey.js", "/static/custom-flow.js", "/v1/openapi.json",
        ] {
            statuses.push(scan.get(path).await.status);
        }

        // A sign-up flow: every step, GET and POST.
        let start = scan.get("/sign-up").await;
        let form = page_of(&start).form("/sign-up").set("email_address", "new@example.com");
        let posted = scan.call(Method::POST, "/sign-up", Body::Form(form.fields)).await;
        let up_verify = location_of(&posted);
        let up = flow_id(&up_verify);
        fresh_code(&app, "new@example.com", 1).await;
        for path in [up_verify.clone(), format!("/sign-up/resend/{up}")] {
            statuses.push(scan.get(&path).await.status);
        }
        let code_page = page_of(&scan.get(&up_verify).await);
        let wrong = code_page.form(&up_verify).set("code", "000000");
        statuses.push(scan.call(Method::POST, &up_verify, Body::Form(wrong.fields)).await.status);
        let resend = code_page.form(&format!("/sign-up/resend/{up}"));
        statuses.push(scan.call(Method::POST, &format!("/sign-up/resend/{up}"), Body::Form(resend.fields)).await.status);

        // A sign-in flow: code page, resend, another factor, and the successful code.
        let start = scan.get("/sign-in").await;
        let form = page_of(&start).form("/sign-in").set("email_address", "scan@example.com");
        let posted = scan.call(Method::POST, "/sign-in", Body::Form(form.fields)).await;
        let in_verify = location_of(&posted);
        let flow = flow_id(&in_verify);
        let code = fresh_code(&app, "scan@example.com", 2).await;
        for path in [in_verify.clone(), format!("/sign-in/resend/{flow}"), format!("/sign-in/factor/{flow}")] {
            statuses.push(scan.get(&path).await.status);
        }
        let code_page = page_of(&scan.get(&in_verify).await);
        let token = code_page.input_value("csrf_token").unwrap();
        for action in [format!("/sign-in/resend/{flow}"), format!("/sign-in/factor/{flow}")] {
            let fields = vec![("csrf_token".to_string(), token.clone()), ("identifier_id".to_string(), "idn_nope".to_string())];
            statuses.push(scan.call(Method::POST, &action, Body::Form(fields)).await.status);
        }
        let right = code_page.form(&in_verify).set("code", &code);
        let signed_in = scan.call(Method::POST, &in_verify, Body::Form(right.fields)).await;
        assert_eq!(signed_in.status, StatusCode::SEE_OTHER, "{}", signed_in.body);

        // Signed in: the profile, both faces of sign-out.
        for path in ["/", "/user", "/sign-in", "/sign-up", "/v1/client"] {
            statuses.push(scan.get(path).await.status);
        }
        let profile = page_of(&scan.get("/user").await);
        assert_eq!(profile.status, StatusCode::OK);
        let out = profile.form("/sign-out");
        statuses.push(scan.call(Method::POST, "/sign-out", Body::Form(out.fields)).await.status);

        // The JSON API: every endpoint, with a sign-up and a sign-in through it.
        let su = scan.post_json("/v1/client/sign_ups", json!({"email_address": "api-scan@example.com"})).await;
        let su_id = su.json()["id"].as_str().unwrap().to_string();
        statuses.push(scan.get(&format!("/v1/client/sign_ups/{su_id}")).await.status);
        statuses.push(scan.post_json(&format!("/v1/client/sign_ups/{su_id}/prepare_verification"), json!({"strategy": "email_code"})).await.status);
        statuses.push(scan.post_json(&format!("/v1/client/sign_ups/{su_id}/attempt_verification"), json!({"strategy": "email_code", "code": "000000"})).await.status);
        let si = scan.post_json("/v1/client/sign_ins", json!({"identifier": "scan@example.com"})).await;
        let si_body = si.json();
        let si_id = si_body["id"].as_str().unwrap().to_string();
        let email_id = si_body["supported_first_factors"][0]["email_address_id"].as_str().unwrap().to_string();
        statuses.push(scan.get(&format!("/v1/client/sign_ins/{si_id}")).await.status);
        statuses.push(scan.post_json(&format!("/v1/client/sign_ins/{si_id}/prepare_first_factor"), json!({"strategy": "email_code", "email_address_id": email_id})).await.status);
        let code = fresh_code(&app, "scan@example.com", 3).await;
        let done = scan.post_json(&format!("/v1/client/sign_ins/{si_id}/attempt_first_factor"), json!({"strategy": "email_code", "code": code})).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        let me = scan.get("/v1/client").await;
        let session = me.json()["sessions"][0]["id"].as_str().unwrap().to_string();
        statuses.push(scan.call(Method::DELETE, &format!("/v1/client/sessions/{session}"), Body::Empty).await.status);
        let preflight = scan
            .client
            .request(Method::OPTIONS, app.url("/v1/client/sign_ins"))
            .header("Origin", "https://app.example.com")
            .header("Access-Control-Request-Method", "POST");
        let preflight = answer("OPTIONS /v1/client/sign_ins".into(), preflight).await;
        assert_eq!(preflight.status, StatusCode::NO_CONTENT);
        statuses.push(scan.record(preflight).status);

        scan.assert_clean();
        assert!(statuses.iter().all(|s| !s.is_server_error()), "{statuses:?}");

        // The dev-only pages, in dev mode.
        let dev = spawn_app_with(|c| {
            c.smtp_url = None;
            c.dev_mode = Some(true);
        })
        .await;
        let mut scan = Scan::new(&dev, browser());
        for path in ["/dev/outbox", "/dev/settings"] {
            assert_eq!(scan.get(path).await.status, StatusCode::OK, "{path}");
        }
        scan.assert_clean();
    }

    async fn every_kind_of_error_answer_carries_the_security_headers_and_no_internals() {
        let app = spawn_app().await;
        let mut scan = Scan::new(&app, browser());
        let sign_up = page_of(&scan.get("/sign-up").await).form("/sign-up");
        let verify = app.start_flow("/sign-up", "err@example.com").await;
        fresh_code(&app, "err@example.com", 1).await;
        let code_page = app.page(&verify).await;
        let su = scan.post_json("/v1/client/sign_ups", json!({"email_address": "err-api@example.com"})).await;
        let su_id = su.json()["id"].as_str().unwrap().to_string();
        let prepare = format!("/v1/client/sign_ups/{su_id}/prepare_verification");
        assert_eq!(scan.post_json(&prepare, json!({"strategy": "email_code"})).await.status, StatusCode::OK);

        let mut cases: Vec<(StatusCode, Answer)> = Vec::new();
        let mut expect = |status: StatusCode, a: Answer| cases.push((status, a));

        // 400: a form that cannot be read (a field twice), JSON that is not JSON.
        expect(StatusCode::BAD_REQUEST, scan.call(Method::POST, "/sign-up", Body::Raw("application/x-www-form-urlencoded", "csrf_token=a&csrf_token=b".into())).await);
        expect(StatusCode::BAD_REQUEST, scan.call(Method::POST, "/v1/client/sign_ups", Body::Raw("application/json", "{not json".into())).await);
        // 403: a cross-site form post; an API call from an origin outside the allowlist.
        let cross = scan.client.post(app.url("/sign-up")).header("Origin", "https://evil.example").header("Sec-Fetch-Site", "cross-site").form(&sign_up.fields);
        expect(StatusCode::FORBIDDEN, scan.record(answer("POST /sign-up cross-site".into(), cross).await));
        let cross = scan.client.post(app.url("/v1/client/sign_ups")).header("Origin", "https://evil.example").json(&json!({"email_address": "x@example.com"}));
        expect(StatusCode::FORBIDDEN, scan.record(answer("POST /v1/client/sign_ups cross-site".into(), cross).await));
        // 404: an unknown page, an unknown flow, an unknown API object, an unknown API path, a
        // path that is not UTF-8.
        for path in ["/no/such/page", "/sign-in/verify/flw_nope", "/v1/client/sign_ups/flw_aaaaaaaaaaaaaaaaaaaaaaaaaa", "/v1/nope", "/sign-in/verify/%FF%FE"] {
            expect(StatusCode::NOT_FOUND, scan.get(path).await);
        }
        // 405: a method no route takes.
        expect(StatusCode::METHOD_NOT_ALLOWED, scan.call(Method::PUT, "/sign-in", Body::Empty).await);
        // (A GET-only route added with `cfg.route` answers other methods with the 404 page.)
        expect(StatusCode::NOT_FOUND, scan.call(Method::POST, "/user", Body::Empty).await);
        expect(StatusCode::METHOD_NOT_ALLOWED, scan.call(Method::DELETE, "/sign-out", Body::Empty).await);
        expect(StatusCode::METHOD_NOT_ALLOWED, scan.call(Method::DELETE, "/v1/client/sign_ups", Body::Empty).await);
        expect(StatusCode::NOT_FOUND, scan.call(Method::DELETE, "/v1/nothing", Body::Empty).await);
        // 413: a form and a JSON body over max_body_bytes.
        let big = sign_up.fields.iter().cloned().chain([("email_address".to_string(), "a".repeat(app.raw.max_body_bytes + 1))]).collect();
        expect(StatusCode::PAYLOAD_TOO_LARGE, scan.call(Method::POST, "/sign-up", Body::Form(big)).await);
        expect(StatusCode::PAYLOAD_TOO_LARGE, scan.post_json("/v1/client/sign_ups", json!({"email_address": "a".repeat(app.raw.max_body_bytes + 1)})).await);
        // 415: a form post of JSON; an API post of text/plain.
        expect(StatusCode::UNSUPPORTED_MEDIA_TYPE, scan.call(Method::POST, "/sign-up", Body::Raw("application/json", r#"{"email_address":"j@example.com"}"#.into())).await);
        expect(StatusCode::UNSUPPORTED_MEDIA_TYPE, scan.call(Method::POST, "/v1/client/sign_ups", Body::Raw("text/plain", r#"{"email_address":"j@example.com"}"#.into())).await);
        // 422: a wrong code; an address that is not one.
        let wrong = app.page(&verify).await.form(&verify).set("code", "000000");
        let wrong = app.client.post(app.url(&verify)).header("Origin", &app.address).form(&wrong.fields);
        expect(StatusCode::UNPROCESSABLE_ENTITY, scan.record(answer(format!("POST {verify} wrong code"), wrong).await));
        expect(StatusCode::UNPROCESSABLE_ENTITY, scan.post_json("/v1/client/sign_ups", json!({"email_address": "not-an-address"})).await);
        // 429: a resend within the cooldown, on the page and through the API.
        let resend_action = code_page.form_action("/resend/");
        let resend = app.client.post(app.url(&resend_action)).header("Origin", &app.address).form(&code_page.form(&resend_action).fields);
        expect(StatusCode::TOO_MANY_REQUESTS, scan.record(answer(format!("POST {resend_action} in the cooldown"), resend).await));
        expect(StatusCode::TOO_MANY_REQUESTS, scan.post_json(&prepare, json!({"strategy": "email_code"})).await);

        let mut wrong_status = Vec::new();
        for (status, a) in &cases {
            if a.status != *status {
                wrong_status.push(format!("{}: {} (expected {status}): {}", a.label, a.status, a.body));
            }
            let leaked = a.internals();
            assert!(leaked.is_empty(), "{} shows internals {leaked:?}: {}", a.label, a.body);
        }
        assert!(wrong_status.is_empty(), "{}", wrong_status.join("\n"));
        for (_, a) in cases.iter().filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS) {
            assert!(a.headers.get("retry-after").is_some(), "{}", a.label);
        }
        scan.assert_clean();
    }

    async fn a_failing_query_gets_a_generic_500_naming_the_request_id_on_pages_and_the_api() {
        use sqlx::Executor;
        let app = spawn_app().await;
        app.sign_up("broken@example.com").await;
        let db = app.db().await;
        db.execute("DROP TABLE sessions").await.unwrap();
        db.close().await;
        let mut scan = Scan::new(&app, app.client.clone());

        let page = scan.get("/user").await;
        assert_eq!(page.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", page.body);
        assert!(page.headers["content-type"].to_str().unwrap().starts_with("text/html"));
        let text = page_of(&page).text();
        let id = text
            .split("Request id:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("the 500 page names the request id: {text}"));
        assert!(id.len() >= 8, "{id:?}");
        assert!(text.contains("Something went wrong"), "{text}");
        let api = scan.get("/v1/client").await;
        assert_eq!(api.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", api.body);
        let body = api.json();
        assert_eq!(body["errors"][0]["code"], "internal_error");
        let api_id = body["errors"][0]["meta"]["request_id"].as_str().unwrap_or_default();
        assert!(api_id.len() >= 8, "the API error names the request id: {body}");
        assert_ne!(api_id, id, "each request has its own id");

        for a in [&page, &api] {
            let leaked = a.internals();
            assert!(leaked.is_empty(), "{} shows internals {leaked:?}: {}", a.label, a.body);
            assert!(!a.body.contains("sessions"), "{} names the table: {}", a.label, a.body);
        }
        scan.assert_clean();
    }

    async fn hsts_is_sent_when_the_public_url_is_https_and_never_over_plain_http() {
        let https = spawn_app_with(|c| c.public_url = "https://accounts.example.com".into()).await;
        let mut scan = Scan::new(&https, browser());
        for path in ["/sign-in", "/no/such/page", "/v1/client", "/static/style.css", "/healthz"] {
            let a = scan.get(path).await;
            let hsts = a.headers.get("strict-transport-security").map(|v| v.to_str().unwrap().to_string());
            let hsts = hsts.unwrap_or_else(|| panic!("{path}: no HSTS behind an https public URL"));
            let max_age: u64 = hsts
                .split(';')
                .find_map(|d| d.trim().strip_prefix("max-age="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            assert!(max_age >= 31_536_000 && hsts.contains("includeSubDomains"), "{path}: {hsts}");
        }
        scan.assert_clean();

        let http = spawn_app().await;
        let mut scan = Scan::new(&http, browser());
        for path in ["/sign-in", "/no/such/page", "/v1/client"] {
            let a = scan.get(path).await;
            assert!(a.headers.get("strict-transport-security").is_none(), "{path}: HSTS over plain http");
        }
        scan.assert_clean();
    }
}

fn location_of(a: &Answer) -> String {
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}: {}", a.label, a.body);
    a.headers["location"].to_str().unwrap().to_string()
}

crate::postgres_tests! {
    async fn an_unreachable_postgres_database_gets_a_503_with_the_security_headers_on_pages_and_the_api() {
        let app = spawn_app_with(|c| c.database_acquire_timeout_secs = 1).await;
        app.sign_up("gone@example.com").await;
        app.drop_postgres_database().await;

        let mut scan = Scan::new(&app, app.client.clone());
        let page = scan.get("/user").await;
        let api = scan.get("/v1/client").await;
        let start = scan
            .post_json(
                "/v1/client/sign_ins",
                json!({"identifier": "gone@example.com"}),
            )
            .await;
        for a in [&page, &api, &start] {
            assert_eq!(
                a.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{}: {}",
                a.label,
                a.body
            );
            assert!(a.headers.get("retry-after").is_some(), "{}", a.label);
            let leaked = a.internals();
            assert!(
                leaked.is_empty(),
                "{} shows internals {leaked:?}: {}",
                a.label,
                a.body
            );
        }
        assert_eq!(api.json()["errors"][0]["code"], "service_unavailable");
        scan.assert_clean();
    }
}

/// Another process holds the SQLite file's write lock past the busy timeout: the server is
/// unavailable, not broken, and must say so with a 503 and `Retry-After` (S57).
#[tokio::test]
async fn a_sqlite_file_locked_by_another_process_gets_a_503_not_a_500() {
    let app = spawn_app().await;
    app.create_account("locked@example.com").await;
    let lock = rusqlite::Connection::open(&app.db_path).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let mut scan = Scan::new(&app, browser());
    let form = page_of(&scan.get("/sign-in").await)
        .form("/sign-in")
        .set("email_address", "locked@example.com");
    let page = scan
        .call(Method::POST, "/sign-in", Body::Form(form.fields))
        .await;
    let api = scan
        .post_json(
            "/v1/client/sign_ins",
            json!({"identifier": "locked@example.com"}),
        )
        .await;
    lock.execute_batch("ROLLBACK").unwrap();
    for a in [&page, &api] {
        let leaked = a.internals();
        assert!(
            leaked.is_empty(),
            "{} shows internals {leaked:?}: {}",
            a.label,
            a.body
        );
        assert_eq!(
            a.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}: {}",
            a.label,
            a.body
        );
        assert!(a.headers.get("retry-after").is_some(), "{}", a.label);
    }
    scan.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// Login CSRF and planted cookies

/// The attacker's half of a login-CSRF attack: a sign-in to the attacker's own account in the
/// attacker's browser, with the flow URL, the code mailed to the attacker, and the form (CSRF
/// token included) of the attacker's code page.
struct AttackerFlow {
    browser: reqwest::Client,
    verify: String,
    fields: Vec<(String, String)>,
}

async fn attacker_starts_a_sign_in(app: &TestApp, email: &str) -> AttackerFlow {
    app.create_account(email).await;
    let browser = browser();
    let resp = app
        .submit_identifier_with(&browser, "/sign-in", email)
        .await;
    let verify = location(&resp);
    let code = fresh_code(app, email, 2).await;
    let page = app.page_with(&browser, &verify).await;
    let form = page.form(&verify).set("code", &code);
    assert!(form
        .fields
        .iter()
        .any(|(n, v)| n == "csrf_token" && !v.is_empty()));
    AttackerFlow {
        browser,
        verify,
        fields: form.fields,
    }
}

/// Whether `client`'s browser is signed in (the profile answers instead of sending to sign-in).
async fn signed_in(app: &TestApp, client: &reqwest::Client) -> bool {
    app.get_with(client, "/user").await.status() == StatusCode::OK
}

fn sets_a_session(resp: &reqwest::Response) -> bool {
    resp.headers().get_all("set-cookie").iter().any(|c| {
        c.to_str().unwrap().starts_with("latchkey_session=")
            && !c.to_str().unwrap().starts_with("latchkey_session=;")
    })
}

crate::backend_tests! {
    async fn a_cross_site_auto_submitted_code_form_cannot_sign_the_victim_into_the_attackers_account() {
        let app = spawn_app().await;
        let attack = attacker_starts_a_sign_in(&app, "attacker@example.com").await;
        let sessions = app.count("SELECT COUNT(*) FROM sessions").await;
        let victim = browser();
        app.page_with(&victim, "/sign-in").await; // the victim has been to the site before

        // evil.example auto-submits the attacker's code form into the victim's browser.
        let resp = victim
            .post(app.url(&attack.verify))
            .header("Origin", "https://evil.example")
            .header("Sec-Fetch-Site", "cross-site")
            .header("Sec-Fetch-Mode", "navigate")
            .form(&attack.fields)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(!sets_a_session(&resp), "no session cookie for the victim");
        assert!(!signed_in(&app, &victim).await, "the victim's browser holds no session");
        assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, sessions, "no session was made");

        // The refusal was about where the form came from: the code was good all along.
        let own = app.submit_with(&attack.browser, &crate::helpers::Form { action: attack.verify.clone(), fields: attack.fields.clone() }).await;
        assert_eq!(own.status(), StatusCode::SEE_OTHER, "the attacker's own browser can use the code");
    }

    async fn the_attackers_flow_code_and_token_fail_in_another_browser_even_without_origin_headers() {
        let app = spawn_app().await;
        let attack = attacker_starts_a_sign_in(&app, "attacker@example.com").await;
        let sessions = app.count("SELECT COUNT(*) FROM sessions").await;
        let tries = "SELECT COUNT(*) FROM verifications WHERE attempts > 0";
        let tried = app.count(tries).await;
        // An older browser that sends neither Origin nor Fetch Metadata: only the binding of the
        // flow (and its token) to the browser cookie stands in the way.
        for victim in [browser(), { let b = browser(); app.page_with(&b, "/sign-in").await; b }] {
            let resp = victim
                .post(app.url(&attack.verify))
                .form(&attack.fields)
                .send()
                .await
                .unwrap();
            assert!(
                matches!(resp.status(), StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
                "{}",
                resp.status()
            );
            assert!(!sets_a_session(&resp));
            assert!(!signed_in(&app, &victim).await);
        }
        assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, sessions, "no session was made");
        assert_eq!(app.count(tries).await, tried, "refused posts use no try");
    }

    async fn a_session_cookie_planted_before_an_api_sign_in_is_replaced_and_never_accepted() {
        let app = spawn_app().await;
        app.create_account("api-fix@example.com").await;
        let planted = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let jar = Arc::new(reqwest::cookie::Jar::default());
        jar.add_cookie_str(&format!("latchkey_session={planted}"), &app.address.parse().unwrap());
        let victim = reqwest::Client::builder()
            .cookie_provider(jar)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut scan = Scan::new(&app, victim.clone());
        assert_eq!(scan.get("/v1/client").await.json()["user"], Value::Null);

        let si = scan.post_json("/v1/client/sign_ins", json!({"identifier": "api-fix@example.com"})).await;
        let body = si.json();
        let id = body["id"].as_str().unwrap().to_string();
        let email_id = body["supported_first_factors"][0]["email_address_id"].as_str().unwrap().to_string();
        let prepared = scan.post_json(&format!("/v1/client/sign_ins/{id}/prepare_first_factor"), json!({"strategy": "email_code", "email_address_id": email_id})).await;
        assert_eq!(prepared.status, StatusCode::OK, "{}", prepared.body);
        let code = fresh_code(&app, "api-fix@example.com", 2).await;
        let resp = victim
            .post(app.url(&format!("/v1/client/sign_ins/{id}/attempt_first_factor")))
            .header("Origin", &app.address)
            .json(&json!({"strategy": "email_code", "code": code}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let issued = cookie_pair(&resp, "latchkey_session");
        let issued = issued.strip_prefix("latchkey_session=").unwrap().to_string();
        assert_ne!(issued, planted, "sign-in sets a new session cookie");
        assert!(issued.len() >= 43, "{issued}");

        let with = |token: &str| {
            let token = token.to_string();
            let app = &app;
            async move {
                browser()
                    .get(app.url("/v1/client"))
                    .header("Cookie", format!("latchkey_session={token}"))
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            }
        };
        assert_eq!(with(planted).await["user"], Value::Null, "the planted token authenticates nobody");
        assert_eq!(with(&issued).await["user"]["email_addresses"][0]["email_address"], "api-fix@example.com");
        assert_eq!(scan.get("/v1/client").await.json()["sessions"].as_array().map(Vec::len), Some(1), "the victim's jar holds the new token");
        scan.assert_clean();
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets in logs and the database (grey-box, the real binary)

/// One `latchkey` process with its stdout and stderr captured to files.
struct Binary {
    child: Child,
    address: String,
    stdout: std::path::PathBuf,
    stderr: std::path::PathBuf,
}

impl Binary {
    async fn start(dir: &Path, database_url: &str, smtp: &TestSmtp) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("http://127.0.0.1:{port}");
        let stdout = dir.join("stdout.log");
        let stderr = dir.join("stderr.log");
        let secret_file = dir.join("secret");
        std::fs::write(&secret_file, format!("{SERVER_SECRET}\n")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .env("LATCHKEY_SECRET_FILE", &secret_file)
            .env("LATCHKEY_LISTEN", format!("127.0.0.1:{port}"))
            .env("LATCHKEY_PUBLIC_URL", &address)
            .env("LATCHKEY_DATABASE_URL", database_url)
            .env("LATCHKEY_SMTP_URL", smtp.url())
            .env("LATCHKEY_DEV_MODE", "false")
            .env("LATCHKEY_LOG", "debug")
            .env("LATCHKEY_OUTBOX__POLL_INTERVAL_MS", "50")
            // Ten digits: a code found in the files cannot be a coincidence.
            .env("LATCHKEY_CODES__LENGTH", "10")
            .env("LATCHKEY_LIMITS__SEND_INTERVAL_SECS", "0")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start the latchkey binary");
        let binary = Self {
            child,
            address,
            stdout,
            stderr,
        };
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + GUARD;
        loop {
            if let Ok(r) = client.get(binary.url("/readyz")).send().await {
                if r.status() == StatusCode::OK {
                    return binary;
                }
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "latchkey did not become ready within {GUARD:?}:\n{}",
                    binary.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    fn logs(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", read(&self.stdout), read(&self.stderr))
    }

    /// SIGTERM, then waits for a clean exit (killed only if it has not come within [`GUARD`]).
    async fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + GUARD;
        while std::time::Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server secret the binary reads from a file, as production does.
const SERVER_SECRET: &str = "grey-box-server-secret-0123456789abcdefXYZ";

/// Every secret a browser saw: codes from the mails, and the values of session cookies, browser
/// cookies and CSRF tokens.
#[derive(Default)]
struct Secrets {
    found: Vec<(&'static str, String)>,
}

impl Secrets {
    fn add(&mut self, kind: &'static str, value: &str) {
        assert!(!value.is_empty(), "empty {kind}");
        if !self.found.iter().any(|(_, v)| v == value) {
            self.found.push((kind, value.to_string()));
        }
    }

    fn note_response(&mut self, resp: &reqwest::Response) {
        for c in resp.headers().get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let (name, rest) = c.split_once('=').unwrap();
            let value = rest.split(';').next().unwrap();
            if value.is_empty() {
                continue;
            }
            match name {
                "latchkey_session" => self.add("session token", value),
                "latchkey_browser" => self.add("browser cookie", value),
                "latchkey_device" => {
                    // `<id>.<issued>.<mac>`: the whole value, and its id and MAC on their own.
                    self.add("device cookie", value);
                    let parts: Vec<&str> = value.split('.').collect();
                    assert_eq!(parts.len(), 3, "{value}");
                    self.add("device cookie id", parts[0]);
                    self.add("device cookie MAC", parts[2]);
                }
                other => panic!("unexpected cookie {other}"),
            }
        }
    }

    fn note_page(&mut self, page: &Page) {
        let token = page
            .input_value("csrf_token")
            .expect("a form with a CSRF token");
        self.add("CSRF token", &token);
    }

    fn of(&self, kind: &str) -> usize {
        self.found.iter().filter(|(k, _)| *k == kind).count()
    }

    /// The secrets (and their byte forms) found in `haystack`.
    fn in_bytes(&self, haystack: &[u8]) -> Vec<String> {
        use base64::Engine;
        let mut hits = Vec::new();
        for (kind, value) in &self.found {
            let mut forms = vec![value.as_bytes().to_vec()];
            if let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value) {
                if raw.len() >= 16 {
                    forms.push(hex::encode(&raw).into_bytes());
                    forms.push(raw);
                }
            }
            if forms
                .iter()
                .any(|f| haystack.windows(f.len()).any(|w| w == f.as_slice()))
            {
                hits.push(format!("{kind} {value}"));
            }
        }
        hits
    }
}

/// The 10-digit code in a mail ("0123456789 is your Acme verification code.").
fn code_of(mail: &crate::helpers::ReceivedMail) -> String {
    mail.code_of_length(10)
}

/// Opens `path` of the binary, recording the page's CSRF token and any cookies it sets.
async fn open(bin: &Binary, client: &reqwest::Client, path: &str, secrets: &mut Secrets) -> Page {
    let resp = client.get(bin.url(path)).send().await.unwrap();
    secrets.note_response(&resp);
    let page = TestApp::into_page(resp).await;
    assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.html);
    secrets.note_page(&page);
    page
}

async fn post_form(
    bin: &Binary,
    client: &reqwest::Client,
    form: &crate::helpers::Form,
    secrets: &mut Secrets,
) -> reqwest::Response {
    let resp = client
        .post(bin.url(&form.action))
        .header("Origin", &bin.address)
        .form(&form.fields)
        .send()
        .await
        .unwrap();
    secrets.note_response(&resp);
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{}", form.action);
    resp
}

/// Signs `email` up (`start` = "/sign-up") or in ("/sign-in") through the hosted pages.
async fn complete_flow(
    bin: &Binary,
    smtp: &TestSmtp,
    client: &reqwest::Client,
    start: &str,
    email: &str,
    n: usize,
    secrets: &mut Secrets,
) {
    let page = open(bin, client, start, secrets).await;
    let form = page.form(start).set("email_address", email);
    let verify = location(&post_form(bin, client, &form, secrets).await);
    let code = code_of(&smtp.wait_for(email, n).await);
    secrets.add("code", &code);
    let page = open(bin, client, &verify, secrets).await;
    let form = page.form(&verify).set("code", &code);
    post_form(bin, client, &form, secrets).await;
}

/// The contents of every column of every table, as bytes, labelled `table.column`.
async fn every_stored_value(database_url: &str) -> Vec<(String, Vec<u8>)> {
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(database_url).await.unwrap();
    let columns: Vec<(String, String, String)> = match current_backend() {
        Backend::Sqlite => sqlx::query_as(
            "SELECT m.name, p.name, p.type FROM sqlite_master m JOIN pragma_table_info(m.name) p \
             WHERE m.type = 'table'",
        ),
        Backend::Postgres => sqlx::query_as(
            "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = current_schema()",
        ),
    }
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(
        columns.iter().any(|(t, _, _)| t == "sessions"),
        "{columns:?}"
    );
    let mut values = Vec::new();
    for (table, column, data_type) in columns {
        let sql = match (current_backend(), data_type.as_str()) {
            (Backend::Sqlite, _) => format!(r#"SELECT hex("{column}") FROM "{table}""#),
            (Backend::Postgres, "bytea") => {
                format!(r#"SELECT encode("{column}", 'hex') FROM "{table}""#)
            }
            (Backend::Postgres, _) => format!(
                r#"SELECT encode(convert_to("{column}"::text, 'UTF8'), 'hex') FROM "{table}""#
            ),
        };
        let rows: Vec<Option<String>> = sqlx::query_scalar(&sql).fetch_all(&db).await.unwrap();
        for hex_value in rows.into_iter().flatten() {
            values.push((format!("{table}.{column}"), hex::decode(hex_value).unwrap()));
        }
    }
    db.close().await;
    values
}

/// The raw bytes of the SQLite database and its WAL and shared-memory files, as far as they exist.
fn sqlite_files(db: &Path) -> Vec<(String, Vec<u8>)> {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let path = format!("{}{suffix}", db.display());
            std::fs::read(&path).ok().map(|bytes| (path, bytes))
        })
        .collect()
}

fn assert_no_secret_in(secrets: &Secrets, places: &[(String, Vec<u8>)], what: &str) {
    let hits: Vec<String> = places
        .iter()
        .flat_map(|(place, bytes)| {
            secrets
                .in_bytes(bytes)
                .into_iter()
                .map(move |hit| format!("{hit} in {place}"))
        })
        .collect();
    assert!(hits.is_empty(), "secrets in {what}:\n{}", hits.join("\n"));
}

crate::backend_tests! {
    async fn no_code_token_or_cookie_reaches_the_debug_logs_or_the_database_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("latchkey.db");
        let database_url = match current_backend() {
            Backend::Sqlite => format!("sqlite://{}", db_path.display()),
            Backend::Postgres => fresh_postgres_database().await,
        };
        let smtp = TestSmtp::start();
        let mut bin = Binary::start(dir.path(), &database_url, &smtp).await;
        let client = browser();
        let mut secrets = Secrets::default();
        secrets.add("server secret", SERVER_SECRET);
        let email = "secret.keeper@example.com";

        complete_flow(&bin, &smtp, &client, "/sign-up", email, 1, &mut secrets).await;
        let profile = open(&bin, &client, "/user", &mut secrets).await;
        assert!(profile.contains(email));
        post_form(&bin, &client, &profile.form("/sign-out"), &mut secrets).await;
        complete_flow(&bin, &smtp, &client, "/sign-in", email, 2, &mut secrets).await;
        assert!(open(&bin, &client, "/user", &mut secrets).await.contains(email));
        for (kind, n) in [("code", 2), ("session token", 2), ("browser cookie", 2), ("device cookie", 2), ("CSRF token", 4)] {
            assert!(secrets.of(kind) >= n, "collected {} {kind}s", secrets.of(kind));
        }

        // While the server runs, recent writes live in the WAL; scan it before and after stopping.
        let mut files = if current_backend() == Backend::Sqlite { sqlite_files(&db_path) } else { Vec::new() };
        bin.stop().await;
        let logs = bin.logs();
        assert!(logs.contains("DEBUG"), "the log level was debug:\n{logs}");
        for event in ["\"code_sent\"", "\"code_verified\"", "\"sign_out\""] {
            assert!(logs.contains(event), "the flows were logged ({event}):\n{logs}");
        }
        assert_no_secret_in(&secrets, &[("the logs".to_string(), logs.clone().into_bytes())], "the logs");
        assert!(!logs.contains(email), "the full email address is logged (it should be masked)");

        if current_backend() == Backend::Sqlite {
            files.extend(sqlite_files(&db_path));
            assert!(!files.is_empty());
            assert_no_secret_in(&secrets, &files, "the SQLite files");
        }
        let stored = every_stored_value(&database_url).await;
        assert!(
            stored.iter().any(|(_, v)| v.windows(email.len()).any(|w| w == email.as_bytes())),
            "the scan reads the stored data (the address is there in clear)"
        );
        // Codes and session tokens are stored only as keyed hashes; browser cookies and CSRF tokens
        // are never stored as they are either.
        assert_no_secret_in(&secrets, &stored, "the database");
    }
}

crate::backend_tests! {
    async fn pages_are_compressed_for_browsers_that_ask_and_small_answers_are_not() {
        let app = crate::helpers::spawn_app().await;
        // reqwest here has no decompression: the bytes are what the server sent.
        let raw = reqwest::Client::builder().no_gzip().build().unwrap();
        let page = raw.get(app.url("/sign-in")).header("Accept-Encoding", "gzip").send().await.unwrap();
        assert_eq!(page.headers().get("content-encoding").map(|v| v.to_str().unwrap()), Some("gzip"));
        let small = raw.get(app.url("/healthz")).header("Accept-Encoding", "gzip").send().await.unwrap();
        assert!(small.headers().get("content-encoding").is_none(), "{:?}", small.headers());
        let body = small.bytes().await.unwrap();
        assert!(!body.is_empty() && body.len() < 1024);
        assert!(std::str::from_utf8(&body).is_ok(), "sent as it is");
    }
}
