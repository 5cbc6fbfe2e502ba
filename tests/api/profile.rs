//! The profile's editable parts: the name, on the `/user` page (a plain form) and through
//! `GET`/`PATCH /v1/me`; it reaches OpenID Connect's `profile` claims (tests/api/oidc.rs).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{browser, location, spawn_app, TestApp};

/// A browser signed in to a new account of `email`.
pub async fn signed_in(app: &TestApp, email: &str) -> reqwest::Client {
    let client = browser();
    app.create_account(email).await;
    assert_eq!(
        app.sign_in_with(&client, email).await.status(),
        StatusCode::SEE_OTHER
    );
    client
}

async fn names_in_db(app: &TestApp) -> (Option<String>, Option<String>) {
    let db = app.db().await;
    let row: (Option<String>, Option<String>) =
        sqlx::query_as("SELECT first_name, last_name FROM users")
            .fetch_one(&db)
            .await
            .unwrap();
    db.close().await;
    row
}

async fn patch_me(app: &TestApp, client: &reqwest::Client, body: Value) -> (StatusCode, Value) {
    let resp = client
        .patch(app.url("/v1/me"))
        .header("Origin", &app.address)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

crate::backend_tests! {
    async fn a_person_edits_their_name_on_the_profile_page_and_a_bad_value_is_kept_with_its_error() {
        let app = spawn_app().await;
        let b = signed_in(&app, "ada@example.com").await;
        let page = app.page_with(&b, "/user").await;
        assert_eq!(page.input_value("first_name").as_deref(), Some(""));
        let resp = app
            .submit_with(&b, &page.form("/user/name").set("first_name", "  Ada ").set("last_name", "Lovelace"))
            .await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&resp), "/user?done=name");
        assert_eq!(names_in_db(&app).await, (Some("Ada".into()), Some("Lovelace".into())));
        let page = app.page_with(&b, "/user").await;
        assert_eq!(page.input_value("first_name").as_deref(), Some("Ada"));
        assert!(page.contains("Name changed"), "the change is in the security activity");

        // A line break (a header-injection attempt) and an overlong name: 422, typed values kept.
        for (first, last, field) in [
            ("Ada\nBcc: x@evil.test", "Lovelace", "first_name"),
            ("Ada", &*"L".repeat(101), "last_name"),
        ] {
            let resp = app
                .submit_with(&b, &page.form("/user/name").set("first_name", first).set("last_name", last))
                .await;
            assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
            let refused = TestApp::into_page(resp).await;
            assert_eq!(refused.input_value("first_name").as_deref(), Some(first));
            assert_eq!(refused.input_value("last_name").as_deref(), Some(last));
            let invalid = refused.doc().select(&scraper::Selector::parse(&format!("#{field}[aria-invalid=true]")).unwrap()).count();
            assert_eq!(invalid, 1, "{field} is marked: {}", refused.html);
            assert!(refused.contains("one line") || refused.contains("at most 100"), "{}", refused.html);
        }
        assert_eq!(names_in_db(&app).await, (Some("Ada".into()), Some("Lovelace".into())), "nothing saved");

        // Cleared; a form without this session's token is refused.
        let resp = app.submit_with(&b, &page.form("/user/name").set("first_name", "").set("last_name", "")).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(names_in_db(&app).await, (None, None));
        let forged = page.form("/user/name").set("first_name", "Mallory").set("csrf_token", "forged");
        assert_eq!(app.submit_with(&b, &forged).await.status(), StatusCode::FORBIDDEN);
        assert_eq!(names_in_db(&app).await, (None, None));
    }

    async fn the_api_reads_and_patches_the_signed_in_persons_name() {
        let app = spawn_app().await;
        let b = signed_in(&app, "grace@example.com").await;
        let me: Value = b.get(app.url("/v1/me")).send().await.unwrap().json().await.unwrap();
        assert_eq!((me["object"].as_str(), me["first_name"].clone()), (Some("user"), Value::Null));
        let (status, me) = patch_me(&app, &b, json!({"first_name": "Grace", "last_name": "Hopper"})).await;
        assert_eq!(status, StatusCode::OK, "{me}");
        assert_eq!((me["first_name"].as_str(), me["last_name"].as_str()), (Some("Grace"), Some("Hopper")));
        // A field left out stays; "" clears.
        let (_, me) = patch_me(&app, &b, json!({"last_name": ""})).await;
        assert_eq!((me["first_name"].as_str(), me["last_name"].clone()), (Some("Grace"), Value::Null));
        let client: Value = b.get(app.url("/v1/client")).send().await.unwrap().json().await.unwrap();
        assert_eq!(client["user"]["first_name"], "Grace");
        let (status, body) = patch_me(&app, &b, json!({"first_name": "G\u{202E}race"})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["errors"][0]["code"], "form_param_format_invalid");
        assert_eq!(body["errors"][0]["meta"]["param_name"], "first_name");
        let (status, body) = patch_me(&app, &b, json!({"nickname": "x"})).await;
        assert_eq!((status, body["errors"][0]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("form_param_unknown")));
        assert_eq!(names_in_db(&app).await, (Some("Grace".into()), None));
        // Signed out: 401.
        let (status, body) = patch_me(&app, &browser(), json!({"first_name": "X"})).await;
        assert_eq!((status, body["errors"][0]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("signed_out")));
    }
}

fn browser_as(user_agent: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent)
        .build()
        .unwrap()
}

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

crate::backend_tests! {
    async fn the_profile_lists_every_device_signed_in_with_this_one_marked() {
        let app = spawn_app().await;
        app.create_account("devices@example.com").await;
        let laptop = browser_as(FIREFOX);
        let phone = browser_as(IPHONE);
        for b in [&laptop, &phone] {
            assert_eq!(app.sign_in_with(b, "devices@example.com").await.status(), StatusCode::SEE_OTHER);
        }
        let page = app.page_with(&laptop, "/user").await;
        let text = page.text();
        assert!(text.contains("Firefox on Linux") && text.contains("Safari on iPhone"), "{text}");
        let rows: Vec<String> = page
            .doc()
            .select(&scraper::Selector::parse(".device-list li").unwrap())
            .map(|li| li.text().collect::<String>())
            .collect();
        // create_account's own browser signed in too: three sessions, this one marked once.
        assert_eq!(rows.len(), 3, "{rows:?}");
        let marked: Vec<&String> = rows.iter().filter(|r| r.contains("This device")).collect();
        assert_eq!(marked.len(), 1);
        assert!(marked[0].contains("Firefox on Linux"));

        let sessions: Value = phone.get(app.url("/v1/me/sessions")).send().await.unwrap().json().await.unwrap();
        let list = sessions.as_array().unwrap();
        assert_eq!(list.len(), 3);
        let current: Vec<&Value> = list.iter().filter(|s| s["current"] == true).collect();
        assert_eq!(current.len(), 1);
        assert_eq!(current[0]["latest_activity"]["device"], "Safari on iPhone");
        assert_eq!(current[0]["latest_activity"]["ip_address"], "127.0.0.1");
    }

    async fn last_active_is_written_once_a_minute_and_an_idle_session_ends_after_the_timeout() {
        let app = crate::helpers::spawn_app_with(|raw| raw.sessions.inactivity_timeout_secs = 600).await;
        let b = signed_in(&app, "idle@example.com").await;
        let last_active = || async {
            app.count("SELECT MAX(last_active_at) FROM sessions").await
        };
        let signed_in_at = last_active().await;
        // Within the minute: reads stay reads.
        app.clock.advance(std::time::Duration::from_secs(30));
        assert_eq!(app.get_with(&b, "/user").await.status(), StatusCode::OK);
        assert_eq!(last_active().await, signed_in_at);
        // After it: written.
        app.clock.advance(std::time::Duration::from_secs(40));
        assert_eq!(app.get_with(&b, "/user").await.status(), StatusCode::OK);
        assert_eq!(last_active().await, signed_in_at + 70_000);
        // In use every 9 minutes, it lives on; 10 minutes unused, it ends.
        app.clock.advance(std::time::Duration::from_secs(9 * 60));
        assert_eq!(app.get_with(&b, "/user").await.status(), StatusCode::OK);
        app.clock.advance(std::time::Duration::from_secs(10 * 60));
        let resp = app.get_with(&b, "/user").await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert!(location(&resp).starts_with("/sign-in"), "signed out by inactivity");
        let me = b.get(app.url("/v1/me")).send().await.unwrap();
        assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    }
}

crate::backend_tests! {
    async fn sign_up_asks_for_a_name_when_the_instance_wants_one_and_keeps_it_on_the_account() {
        let app = crate::helpers::spawn_app_with(|raw| {
            raw.identifiers.name.enabled = true;
            raw.identifiers.name.required = true;
        })
        .await;
        let page = app.page("/sign-up").await;
        assert!(page.html.contains(r#"id="first_name" name="first_name" type="text" inputmode="text" autocomplete="given-name""#), "{}", page.html);
        assert!(page.contains("Last name") && !page.contains("Last name (optional)"));
        // A missing last name: 422, everything typed kept, the field marked.
        let resp = app
            .submit(&page.form("/sign-up").set("first_name", "Ada").set("email_address", "named@example.com"))
            .await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let refused = TestApp::into_page(resp).await;
        assert!(refused.contains("Enter your last name."), "{}", refused.html);
        assert_eq!(refused.input_value("first_name").as_deref(), Some("Ada"));
        assert_eq!(refused.input_value("email_address").as_deref(), Some("named@example.com"));
        assert_eq!(refused.doc().select(&scraper::Selector::parse("#last_name[aria-invalid=true]").unwrap()).count(), 1);
        app.smtp.assert_count_stays("named@example.com", 0).await;
        // A line break in a name: refused the same way.
        let resp = app
            .submit(&refused.form("/sign-up").set("last_name", "Love\nlace"))
            .await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        // Complete: the account has the name.
        let resp = app
            .submit(&refused.form("/sign-up").set("last_name", " Lovelace "))
            .await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let code = app.smtp.wait_for("named@example.com", 1).await.code();
        assert_eq!(app.enter_code(&location(&resp), &code).await.status(), StatusCode::SEE_OTHER);
        assert_eq!(names_in_db(&app).await, (Some("Ada".into()), Some("Lovelace".into())));

        // The API: the same rules.
        let api = |body: Value| {
            let app = &app;
            async move {
                let resp = browser()
                    .post(app.url("/v1/client/sign_ups"))
                    .header("Origin", &app.address)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                (resp.status(), resp.json::<Value>().await.unwrap())
            }
        };
        let (status, body) = api(json!({"email_address": "api.named@example.com", "first_name": "Grace"})).await;
        assert_eq!((status, body["errors"][0]["code"].as_str(), body["errors"][0]["meta"]["param_name"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("form_param_missing"), Some("last_name")), "{body}");
        let (status, body) = api(json!({"email_address": "api.named@example.com", "first_name": "Grace", "last_name": "Hopper"})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn without_name_settings_sign_up_has_no_name_fields_and_the_api_refuses_a_name() {
        let app = spawn_app().await;
        let page = app.page("/sign-up").await;
        assert!(page.input_value("first_name").is_none());
        let resp = browser()
            .post(app.url("/v1/client/sign_ups"))
            .header("Origin", &app.address)
            .json(&json!({"email_address": "plain@example.com", "first_name": "Ada"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "form_param_value_invalid");
    }
}
