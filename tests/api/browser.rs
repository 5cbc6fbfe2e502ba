//! Latchkey in a real browser: headless Chromium driven over WebDriver (chromedriver). The hosted
//! pages run with JavaScript disabled, so the flow must work with plain HTML forms and the real
//! headers a browser sends on a form post (`Origin`, `Sec-Fetch-Site`, cookies); the custom-flow
//! example runs with JavaScript enabled, through the SDK (`static/latchkey.js`) and the JSON API.
//!
//! `#[ignore]`d, so a plain `cargo test` lists them as ignored rather than passing them untried
//! where Chromium is missing; `cargo test --test api -- --ignored browser::` runs them, and then a
//! missing Chromium or chromedriver is a failure.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp, GUARD};
use crate::phone::{phone_only, with_twilio};
use crate::sms_server::TestSms;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// A narrow phone.
const WIDTH: u64 = 360;
const HEIGHT: u64 = 740;

/// A browser test was asked for (`--ignored`): a missing browser fails it, never passes it.
fn require_browser() {
    let missing: Vec<&str> = [CHROMEDRIVER, CHROMIUM]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "this browser test was run, but {} not installed (apt-get install chromium chromium-driver)",
        missing.join(" and ")
    );
}

/// A minimal W3C WebDriver client: one chromedriver process and one browser session.
struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    driver_port: u16,
    session_id: String,
    driver: Child,
    quit: bool,
    _profile: tempfile::TempDir,
}

/// How to start the browser: JavaScript is off unless asked for.
#[derive(Default)]
struct BrowserBuilder {
    javascript: bool,
}

impl BrowserBuilder {
    fn javascript(mut self, enabled: bool) -> Self {
        self.javascript = enabled;
        self
    }

    async fn start(self) -> Browser {
        Browser::launch(self).await
    }
}

impl Browser {
    fn builder() -> BrowserBuilder {
        BrowserBuilder::default()
    }

    /// Starts chromedriver on a free port and opens a headless Chromium session with JavaScript
    /// disabled, a fresh profile and a `WIDTH`×`HEIGHT` window.
    async fn start() -> Self {
        Self::builder().start().await
    }

    async fn launch(options: BrowserBuilder) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");

        let deadline = Instant::now() + GUARD;
        loop {
            if let Some(status) = driver.try_wait().unwrap() {
                panic!("chromedriver exited at start: {status}");
            }
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(resp) => resp
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            if Instant::now() > deadline {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("chromedriver on port {port} not ready after {GUARD:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let profile = tempfile::tempdir().unwrap();
        // 1 allows, 2 blocks.
        let javascript = if options.javascript { 1 } else { 2 };
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    format!("--window-size={WIDTH},{HEIGHT}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                "prefs": {"profile.managed_default_content_settings.javascript": javascript},
            },
        }}});
        let resp = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("POST /session");
        let status = resp.status();
        let body: Value = resp.json().await.expect("session JSON");
        let Some(session_id) = body["value"]["sessionId"].as_str().map(str::to_string) else {
            let _ = driver.kill();
            let _ = driver.wait();
            panic!("chromedriver refused the session ({status}): {body}");
        };
        Self {
            http,
            session: format!("{base}/session/{session_id}"),
            driver_port: port,
            session_id,
            driver,
            quit: false,
            _profile: profile,
        }
    }

    /// Sends one command; panics with the WebDriver error if it fails.
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status();
        let value: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON: {e}"));
        assert!(
            status.is_success(),
            "WebDriver {method} {path} failed ({status}): {value}"
        );
        value["value"].clone()
    }

    async fn get(&self, path: &str) -> Value {
        self.command(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    /// Resizes the window. Chromium clamps `--window-size` to a minimum width at start-up
    /// (500 px in headless mode), but a WebDriver resize goes below it.
    async fn set_window_size(&self, width: u64, height: u64) {
        let rect = self
            .post("/window/rect", json!({"width": width, "height": height}))
            .await;
        assert_eq!(rect["width"], width, "window rect: {rect}");
    }

    async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    async fn url(&self) -> String {
        self.get("/url").await.as_str().unwrap().to_string()
    }

    async fn title(&self) -> String {
        self.get("/title").await.as_str().unwrap().to_string()
    }

    async fn source(&self) -> String {
        self.get("/source").await.as_str().unwrap().to_string()
    }

    /// The id of the first element matching a CSS selector.
    async fn find(&self, css: &str) -> String {
        let url = format!("{}/element", self.session);
        let resp = self
            .http
            .post(&url)
            .json(&json!({"using": "css selector", "value": css}))
            .send()
            .await
            .expect("POST /element");
        let status = resp.status();
        let value: Value = resp.json().await.unwrap();
        if !status.is_success() {
            panic!(
                "no element {css:?} ({status}: {}) on {} titled {:?}:\n{}",
                value["value"]["error"],
                self.url().await,
                self.title().await,
                self.source().await
            );
        }
        value["value"][ELEMENT_KEY].as_str().unwrap().to_string()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.post(&format!("/element/{id}/value"), json!({ "text": text }))
            .await;
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let id = self.find(css).await;
        self.get(&format!("/element/{id}/attribute/{name}"))
            .await
            .as_str()
            .map(str::to_string)
    }

    async fn property(&self, css: &str, name: &str) -> Value {
        let id = self.find(css).await;
        self.get(&format!("/element/{id}/property/{name}")).await
    }

    /// The rendered text of the page.
    async fn text(&self) -> String {
        let id = self.find("body").await;
        self.get(&format!("/element/{id}/text"))
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn clear(&self, css: &str) {
        let id = self.find(css).await;
        self.post(&format!("/element/{id}/clear"), json!({})).await;
    }

    /// The rendered text of one element ("" when it is hidden).
    async fn element_text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.get(&format!("/element/{id}/text"))
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The console messages logged since the last call (Chromium's `goog:loggingPrefs`), for
    /// failure reports: a CSP violation or a module that failed to load shows up here.
    async fn console(&self) -> String {
        let url = format!("{}/se/log", self.session);
        let Ok(resp) = self
            .http
            .post(&url)
            .json(&json!({"type": "browser"}))
            .send()
            .await
        else {
            return String::new();
        };
        let Ok(logs) = resp.json::<Value>().await else {
            return String::new();
        };
        logs["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| format!("{} {}", e["level"], e["message"]))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }

    /// Waits (up to [`GUARD`]) until the text of `css` satisfies `done`; returns it. On timeout,
    /// fails with the page's text and the browser console.
    async fn wait_for_text(&self, css: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + GUARD;
        loop {
            let text = self.element_text(css).await;
            if done(&text) {
                return text;
            }
            if Instant::now() > deadline {
                panic!(
                    "{css} never showed {what}; it shows {text:?}. Page on {}:\n{}\nConsole:\n{}",
                    self.url().await,
                    self.text().await,
                    self.console().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to [`GUARD`]) until an element matches `css`.
    async fn wait_for(&self, css: &str) {
        let deadline = Instant::now() + GUARD;
        while !self.exists(css).await {
            if Instant::now() > deadline {
                panic!(
                    "no element {css:?} appeared on {}:\n{}\nConsole:\n{}",
                    self.url().await,
                    self.text().await,
                    self.console().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether any element matches a CSS selector.
    async fn exists(&self, css: &str) -> bool {
        let found = self
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await;
        found.as_array().is_some_and(|a| !a.is_empty())
    }

    /// Waits (up to [`GUARD`]) until the current URL contains `part`; returns it. Fails at once on
    /// one of the server's error pages (they carry `p.status`, e.g. "Error 403").
    async fn wait_for_url(&self, part: &str) -> String {
        let deadline = Instant::now() + GUARD;
        loop {
            let url = self.url().await;
            if url.contains(part) {
                return url;
            }
            if Instant::now() > deadline || self.exists("main p.status").await {
                panic!(
                    "the browser never reached a URL containing {part:?}; it is on {url} titled {:?}:\n{}",
                    self.title().await,
                    self.text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The width and height of a viewport screenshot, read from the PNG header.
    async fn screenshot_size(&self) -> (u32, u32) {
        let b64 = self.get("/screenshot").await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .expect("screenshot is base64");
        assert!(
            png.len() > 24 && png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR",
            "screenshot is not a PNG"
        );
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
        (width, height)
    }

    /// Asserts the page fits a `WIDTH`-px viewport: the viewport meta tag is there, the
    /// viewport really is `WIDTH` px wide, and nothing overflows it horizontally.
    async fn assert_fits_narrow_screen(&self) {
        let url = self.url().await;
        let viewport = self
            .attribute("meta[name=viewport]", "content")
            .await
            .unwrap_or_default();
        assert!(
            viewport.contains("width=device-width"),
            "{url}: viewport meta {viewport:?}"
        );
        let (width, _) = self.screenshot_size().await;
        assert_eq!(u64::from(width), WIDTH, "{url}: screenshot width");
        let scroll_width = self.property("html", "scrollWidth").await;
        let client_width = self.property("html", "clientWidth").await;
        assert!(
            scroll_width.as_u64().is_some_and(|w| w <= WIDTH)
                && scroll_width.as_u64() <= client_width.as_u64(),
            "{url}: horizontal scroll at {WIDTH} px: scrollWidth {scroll_width}, clientWidth {client_width}"
        );
    }

    /// Ends the session (closing Chromium) and stops chromedriver.
    async fn quit(mut self) {
        self.command(reqwest::Method::DELETE, "", None).await;
        self.quit = true;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.quit {
            // After a panic: end the session synchronously so Chromium does not outlive the
            // test (killing chromedriver alone may leave it running).
            let _ = delete_session_blocking(self.driver_port, &self.session_id);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `DELETE /session/{id}` over a plain socket, for use in `Drop`.
fn delete_session_blocking(port: u16, session_id: &str) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "DELETE /session/{session_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    // chromedriver answers once the browser is closed; the first bytes are enough (it may keep
    // the connection open, so do not read to the end).
    let mut response = [0u8; 12];
    stream.read_exact(&mut response)?; // "HTTP/1.1 200"
    Ok(())
}

#[tokio::test]
#[ignore = "browser: needs Chromium and chromedriver; run with --ignored browser::"]
async fn a_person_signs_up_in_real_chromium_with_javascript_disabled() {
    require_browser();
    let app = spawn_app().await;
    let browser = Browser::start().await;
    browser.set_window_size(WIDTH, HEIGHT).await;
    let email = "chromium.person@example.com";

    // The sign-up page, with JavaScript off.
    browser.goto(&format!("{}/sign-up", app.address)).await;
    assert!(
        browser.title().await.contains("Acme"),
        "sign-up page title: {:?}",
        browser.title().await
    );
    browser.assert_fits_narrow_screen().await;
    browser.type_into("#email_address", email).await;
    browser
        .click("form[action=\"/sign-up\"] button[type=submit]")
        .await;

    // The code page.
    let verify = browser.wait_for_url("/sign-up/verify/").await;
    assert!(
        verify.starts_with(&format!("{}/sign-up/verify/flw_", app.address)),
        "{verify}"
    );
    let text = browser.text().await;
    assert!(
        text.contains("Check your email") && text.contains(email),
        "code page: {text}"
    );
    browser.assert_fits_narrow_screen().await;
    let code = app.smtp.wait_for(email, 1).await.code();
    browser.type_into("#code", &code).await;
    browser
        .click(&format!(
            "form[action=\"{}\"] button[type=submit]",
            verify.strip_prefix(&app.address).unwrap()
        ))
        .await;

    // Signed in, on the profile page.
    browser.wait_for_url("/user").await;
    assert_eq!(browser.url().await, format!("{}/user", app.address));
    let text = browser.text().await;
    assert!(
        text.contains("Your account") && text.contains(email),
        "profile page: {text}"
    );
    browser.assert_fits_narrow_screen().await;

    browser.quit().await;
}

/// `code` with its first digit changed: certainly wrong.
fn wrong_code(code: &str) -> String {
    let mut chars: Vec<char> = code.chars().collect();
    let first = chars[0].to_digit(10).expect("codes are digits");
    chars[0] = char::from_digit((first + 1) % 10, 10).unwrap();
    chars.into_iter().collect()
}

/// What the JSON API itself answers to a first wrong sign-up code (a separate client and
/// address), to compare with what the page shows.
async fn api_message_for_a_wrong_code(app: &TestApp) -> String {
    let email = "api.reference@example.com";
    let client = crate::helpers::browser();
    let post = |path: String, body: Value| {
        let client = client.clone();
        let url = format!("{}{path}", app.address);
        async move {
            let resp = client.post(url).json(&body).send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (status, sign_up) = post(
        "/v1/client/sign_ups".into(),
        json!({"email_address": email}),
    )
    .await;
    assert!(status.is_success(), "create: {status} {sign_up}");
    let id = sign_up["id"].as_str().unwrap().to_string();
    let (status, body) = post(
        format!("/v1/client/sign_ups/{id}/prepare_verification"),
        json!({"strategy": "email_code"}),
    )
    .await;
    assert!(status.is_success(), "prepare: {status} {body}");
    let code = app.smtp.wait_for(email, 1).await.code();
    let (status, body) = post(
        format!("/v1/client/sign_ups/{id}/attempt_verification"),
        json!({"strategy": "email_code", "code": wrong_code(&code)}),
    )
    .await;
    assert_eq!(status, 422, "attempt with a wrong code: {body}");
    assert_eq!(body["errors"][0]["code"], "form_code_incorrect", "{body}");
    body["errors"][0]["message"].as_str().unwrap().to_string()
}

impl Browser {
    /// Types `identifier` into the example page, sends the code and waits for the code step.
    async fn custom_flow_send(&self, identifier: &str) {
        self.clear("#identifier").await;
        self.type_into("#identifier", identifier).await;
        self.click("#send").await;
        self.wait_for("#code-form:not([hidden])").await;
    }

    /// Types `code` into the example page and submits it.
    async fn custom_flow_verify(&self, code: &str) {
        self.clear("#code").await;
        self.type_into("#code", code).await;
        self.click("#verify").await;
    }
}

#[tokio::test]
#[ignore = "browser: needs Chromium and chromedriver; run with --ignored browser::"]
async fn a_person_signs_up_signs_out_and_signs_in_through_the_sdk_in_real_chromium() {
    require_browser();
    let app = spawn_app().await;
    let browser = Browser::builder().javascript(true).start().await;
    browser.set_window_size(WIDTH, HEIGHT).await;
    let email = "sdk.person@example.com";
    let page = format!("{}/examples/custom-flow", app.address);

    browser.goto(&page).await;
    browser.wait_for("body[data-ready=true]").await;
    browser.assert_fits_narrow_screen().await;

    // Sign up. A wrong code first: the API's message shows inline.
    browser.click("#mode-sign-up").await;
    browser.custom_flow_send(email).await;
    let code = app.smtp.wait_for(email, 1).await.code();
    browser.custom_flow_verify(&wrong_code(&code)).await;
    let shown = browser
        .wait_for_text("#error", "an error", |t| !t.is_empty())
        .await;
    assert_eq!(
        browser.attribute("#error", "data-code").await.as_deref(),
        Some("form_code_incorrect")
    );
    assert_eq!(shown, api_message_for_a_wrong_code(&app).await);

    browser.custom_flow_verify(&code).await;
    browser
        .wait_for_text("#user", "the new account's address", |t| t.contains(email))
        .await;
    assert_eq!(browser.element_text("#error").await, "", "error cleared");
    browser.assert_fits_narrow_screen().await;

    // Sign out.
    browser.click("#sign-out").await;
    browser
        .wait_for_text("#status", "the signed-out status", |t| t == "Signed out.")
        .await;
    assert_eq!(browser.element_text("#user").await, "");

    // Sign in with the same address.
    browser.click("#mode-sign-in").await;
    browser.custom_flow_send(email).await;
    let code = app.smtp.wait_for(email, 2).await.code();
    browser.custom_flow_verify(&code).await;
    browser
        .wait_for_text("#user", "the signed-in address", |t| t.contains(email))
        .await;

    // The session is a real one: a fresh load of the page finds it.
    browser.goto(&page).await;
    browser.wait_for("body[data-ready=true]").await;
    browser
        .wait_for_text("#user", "the address after a reload", |t| t.contains(email))
        .await;

    browser.quit().await;
}

#[tokio::test]
#[ignore = "browser: needs Chromium and chromedriver; run with --ignored browser::"]
async fn a_person_signs_up_and_in_with_a_phone_number_through_the_sdk_in_real_chromium() {
    require_browser();
    let sms = TestSms::start();
    let app = {
        let sms = sms.clone();
        spawn_app_with(move |raw| {
            with_twilio(&sms, raw);
            phone_only(raw);
        })
        .await
    };
    let browser = Browser::builder().javascript(true).start().await;
    let number = "+12015550123";

    browser
        .goto(&format!("{}/examples/custom-flow", app.address))
        .await;
    browser.wait_for("body[data-ready=true]").await;

    browser.custom_flow_send("+1 (201) 555-0123").await;
    let code = sms.wait_for(number, 1).await.code();
    browser.custom_flow_verify(&code).await;
    browser
        .wait_for_text("#user", "the new account's number", |t| t.contains(number))
        .await;

    browser.click("#sign-out").await;
    browser
        .wait_for_text("#status", "the signed-out status", |t| t == "Signed out.")
        .await;
    browser.custom_flow_send(number).await;
    let code = sms.wait_for(number, 2).await.code();
    browser.custom_flow_verify(&code).await;
    browser
        .wait_for_text("#user", "the signed-in number", |t| t.contains(number))
        .await;

    browser.quit().await;
}

#[tokio::test]
#[ignore = "browser: needs Chromium and chromedriver; run with --ignored browser::"]
async fn the_sdk_sends_a_person_to_the_hosted_pages_and_they_come_back_signed_in_in_real_chromium()
{
    require_browser();
    let app = spawn_app().await;
    let browser = Browser::builder().javascript(true).start().await;
    let email = "hosted.person@example.com";
    let page = format!("{}/examples/custom-flow", app.address);
    app.create_account(email).await;

    // redirectToSignIn(): the hosted sign-in page, with a way back to this page.
    browser.goto(&page).await;
    browser.wait_for("body[data-ready=true]").await;
    browser.click("#hosted-sign-in").await;
    let sign_in = browser.wait_for_url("/sign-in").await;
    let expected = format!(
        "{}/sign-in?redirect_url={}",
        app.address,
        url::form_urlencoded::byte_serialize(page.as_bytes()).collect::<String>()
    );
    assert_eq!(sign_in, expected);

    // The hosted pages, then straight back to the app's page, signed in.
    browser.type_into("#email_address", email).await;
    browser
        .click("form[action=\"/sign-in\"] button[type=submit]")
        .await;
    let verify = browser.wait_for_url("/sign-in/verify/").await;
    let code = app.smtp.wait_for(email, 2).await.code();
    browser.type_into("#code", &code).await;
    browser
        .click(&format!(
            "form[action=\"{}\"] button[type=submit]",
            verify.strip_prefix(&app.address).unwrap()
        ))
        .await;
    browser.wait_for_url("/examples/custom-flow").await;
    browser.wait_for("body[data-ready=true]").await;
    browser
        .wait_for_text("#user", "the signed-in address", |t| t.contains(email))
        .await;

    // user.update(): the name, through PATCH /v1/me, read back by the SDK.
    let updated = browser
        .post(
            "/execute/sync",
            json!({
                "script": "return import('/static/latchkey.js').then(async m => { const l = await m.Latchkey.load({frontendApi: location.origin}); const u = await l.user.update({firstName: 'Hosted', lastName: 'Person'}); return [u.firstName, u.lastName, l.user.firstName]; });",
                "args": []
            }),
        )
        .await;
    assert_eq!(updated, json!(["Hosted", "Person", "Hosted"]), "{updated}");

    // The example's profile section: add an address with its code; the devices are listed.
    browser
        .wait_for_text("#devices", "the device list", |t| {
            t.contains("(this device)")
        })
        .await;
    browser
        .type_into("#new-email", "hosted.second@example.com")
        .await;
    browser.click("#add-email-form button[type=submit]").await;
    browser.wait_for("#profile-code-form:not([hidden])").await;
    let code = app
        .smtp
        .wait_for("hosted.second@example.com", 1)
        .await
        .code();
    browser.type_into("#profile-code", &code).await;
    browser
        .click("#profile-code-form button[type=submit]")
        .await;
    browser
        .wait_for_text("#user", "the added address", |t| {
            t.contains("hosted.second@example.com")
        })
        .await;

    // redirectToUserProfile(): the profile offers the way back, and signing out there comes back.
    browser.click("#manage-account").await;
    browser.wait_for_url("/user").await;
    let text = browser.text().await;
    assert!(
        text.contains("Your account") && text.contains("Continue to 127.0.0.1"),
        "{text}"
    );
    browser
        .click("form[action=\"/sign-out\"] button[type=submit]")
        .await;
    browser.wait_for_url("/examples/custom-flow").await;
    browser.wait_for("body[data-ready=true]").await;
    browser
        .wait_for_text("#status", "the signed-out status", |t| t == "Ready.")
        .await;
    assert_eq!(browser.element_text("#user").await, "");

    // signIn.create() without an identifier: needs_identifier, and no factor can be prepared.
    let needs = browser
        .post(
            "/execute/sync",
            json!({
                "script": "return import('/static/latchkey.js').then(async m => { const l = await m.Latchkey.load({frontendApi: location.origin}); const s = await l.signIn.create({}); const refused = await s.prepareFirstFactor({strategy: 'email_code'}).then(() => 'prepared', e => e.errors[0].code); return [s.status, s.id, refused]; });",
                "args": []
            }),
        )
        .await;
    assert_eq!(
        needs,
        json!(["needs_identifier", null, "sign_in_needs_identifier"]),
        "{needs}"
    );

    // buildSignUpUrl() with prefilled values, read from the SDK itself.
    let built = browser
        .post(
            "/execute/sync",
            json!({
                "script": "return import('/static/latchkey.js').then(m => new m.Latchkey(location.origin).buildSignUpUrl({redirectUrl: '/user', initialValues: {emailAddress: 'new@example.com'}}));",
                "args": []
            }),
        )
        .await;
    assert_eq!(
        built,
        format!(
            "{}/sign-up?redirect_url=%2Fuser&email_address=new%40example.com",
            app.address
        )
    );
    browser.quit().await;
}

/// A relying party's callback on loopback: answers every GET with a small page, so the browser
/// visibly arrives there (with the code in its address).
fn start_callback_server() -> (u16, actix_web::dev::ServerHandle) {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(|| {
        App::new().route(
            "/callback",
            web::get().to(|| async {
                HttpResponse::Ok()
                    .content_type("text/html")
                    .body("<!doctype html><title>Relying party</title><p>Back at the app.</p>")
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (port, handle)
}

#[tokio::test]
#[ignore = "browser: needs Chromium and chromedriver; run with --ignored browser::"]
async fn an_app_signs_a_person_in_with_openid_connect_in_real_chromium() {
    require_browser();
    let (rp_port, rp) = start_callback_server();
    let callback = format!("http://127.0.0.1:{rp_port}/callback");
    let redirect = callback.clone();
    let app = spawn_app_with(move |raw| {
        raw.oidc.clients = vec![latchkey::config::OidcClientConfig {
            id: "rp".into(),
            name: "Relying Party".into(),
            secret: Some("relying-party-secret-0123456789abcdef0123".into()),
            redirect_uris: vec![redirect],
            require_consent: true,
            ..latchkey::config::OidcClientConfig::default()
        }];
    })
    .await;
    let email = "oidc.person@example.com";
    app.create_account(email).await;
    let browser = Browser::builder().javascript(true).start().await;
    // RFC 7636 appendix B.
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    browser
        .goto(&format!(
            "{}/oauth/authorize?client_id=rp&redirect_uri={}&response_type=code&scope=openid+email&state=st8&nonce=n0&code_challenge={challenge}&code_challenge_method=S256",
            app.address,
            enc(&callback)
        ))
        .await;

    // The hosted sign-in, then the consent page: every form post ends in a redirect that the
    // page's Content-Security-Policy (form-action) must allow, up to the app's callback.
    browser.wait_for_url("/sign-in").await;
    browser.type_into("#email_address", email).await;
    browser
        .click("form[action=\"/sign-in\"] button[type=submit]")
        .await;
    let verify = browser.wait_for_url("/sign-in/verify/").await;
    let code = app.smtp.wait_for(email, 2).await.code();
    browser.type_into("#code", &code).await;
    browser
        .click(&format!(
            "form[action=\"{}\"] button[type=submit]",
            verify.strip_prefix(&app.address).unwrap()
        ))
        .await;
    browser.wait_for_url("/oauth/authorize").await;
    let text = browser.text().await;
    assert!(text.contains("Allow Relying Party?"), "{text}");
    browser.click("button[value=allow]").await;
    let landed = browser.wait_for_url("/callback").await;
    assert!(landed.starts_with(&callback), "{landed}");
    let params: std::collections::HashMap<String, String> = url::Url::parse(&landed)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(params.get("state").map(String::as_str), Some("st8"));
    assert_eq!(params.get("iss"), Some(&app.address));

    // The app's server exchanges the code.
    let tokens: Value = reqwest::Client::new()
        .post(format!("{}/oauth/token", app.address))
        .basic_auth("rp", Some("relying-party-secret-0123456789abcdef0123"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", params["code"].as_str()),
            ("redirect_uri", callback.as_str()),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(tokens["id_token"].as_str().is_some(), "{tokens}");
    let console = browser.console().await;
    assert!(!console.contains("Content Security Policy"), "{console}");
    browser.quit().await;
    rp.stop(false).await;
}

/// Runs `script` (the body of an async function of `args`, with `l` a loaded Latchkey) in the
/// page and answers its result.
async fn sdk(browser: &Browser, script: &str, args: Value) -> Value {
    browser
        .post(
            "/execute/sync",
            json!({
                "script": format!("return import('/static/latchkey.js').then(async m => {{ const l = await m.Latchkey.load({{frontendApi: location.origin}}); {script} }});"),
                "args": args,
            }),
        )
        .await
}

#[tokio::test]
#[ignore = "browser: needs Chromium and chromedriver; run with --ignored browser::"]
async fn the_sdk_adds_an_address_lists_devices_reverifies_and_deletes_the_account_in_real_chromium()
{
    require_browser();
    let app = spawn_app().await;
    let browser = Browser::builder().javascript(true).start().await;
    let email = "sdk.profile@example.com";
    app.create_account(email).await;
    browser.goto(&format!("{}/sign-in", app.address)).await;
    browser.type_into("#email_address", email).await;
    browser
        .click("form[action=\"/sign-in\"] button[type=submit]")
        .await;
    let verify = browser.wait_for_url("/sign-in/verify/").await;
    let code = app.smtp.wait_for(email, 2).await.code();
    browser.type_into("#code", &code).await;
    browser
        .click(&format!(
            "form[action=\"{}\"] button[type=submit]",
            verify.strip_prefix(&app.address).unwrap()
        ))
        .await;
    browser.wait_for_url("/user").await;

    // createEmailAddress → prepareVerification → attemptVerification.
    let created = sdk(&browser, "const e = await l.user.createEmailAddress({email: 'sdk.second@example.com'}); window.pending = await e.prepareVerification(); return [e.verification.status, window.pending.id === e.id];", json!([])).await;
    assert_eq!(created, json!(["unverified", true]), "{created}");
    let code = app.smtp.wait_for("sdk.second@example.com", 1).await.code();
    let verified = sdk(&browser, "const v = await window.pending.attemptVerification({code: arguments[0]}); return [v.verification.status, (await m.Latchkey.load({frontendApi: location.origin})).user.emailAddresses.length];", json!([code])).await;
    assert_eq!(verified, json!(["verified", 2]), "{verified}");

    // getSessions: this device (and create_account's browser).
    let sessions = sdk(
        &browser,
        "const s = await l.user.getSessions(); return [s.length, s.filter(x => x.current).length];",
        json!([]),
    )
    .await;
    assert_eq!(sessions, json!([2, 1]), "{sessions}");

    // Eleven minutes on: destroy needs a fresh code; reverify() gets one; then it works.
    app.clock.advance(Duration::from_secs(11 * 60));
    let refused = sdk(&browser, "const e = l.user.emailAddresses.find(x => x.emailAddress === 'sdk.second@example.com'); return e.destroy().then(() => 'removed', err => err.errors[0].code);", json!([])).await;
    assert_eq!(refused, json!("session_reverification_required"));
    let before = app.smtp.messages_to(email).len();
    let started = sdk(
        &browser,
        "window.reverification = await l.user.reverify(); return window.reverification.status;",
        json!([]),
    )
    .await;
    assert_eq!(started, json!("needs_first_factor"));
    let code = app.smtp.wait_for(email, before + 1).await.code();
    let done = sdk(&browser, "const r = await window.reverification.attemptVerification({code: arguments[0]}); const e = l.user.emailAddresses.find(x => x.emailAddress === 'sdk.second@example.com'); await e.destroy(); return [r.status, l.user.emailAddresses.length];", json!([code])).await;
    assert_eq!(done, json!(["complete", 1]), "{done}");

    // Revoking the other device, then deleting the account: signed out, nothing left.
    let revoked = sdk(&browser, "const other = (await l.user.getSessions()).find(x => !x.current); return (await other.revoke()).status;", json!([])).await;
    assert_eq!(revoked, json!("revoked"));
    let deleted = sdk(
        &browser,
        "await l.user.delete(); return [l.user, l.session];",
        json!([]),
    )
    .await;
    assert_eq!(deleted, json!([null, null]), "{deleted}");
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0);
    browser.quit().await;
}
