//! The changes a person makes on `/user`, driven as a browser would (forms, cookies,
//! redirects), with codes read from the real SMTP server: adding an email address, making it
//! primary, removing one, signing out other devices, deleting the account, and the
//! reverification (a fresh code) the sensitive ones ask for once the session's code is older
//! than `sessions.reverification_secs`.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{browser, location, spawn_app, spawn_app_with, TestApp};

use crate::profile::signed_in;

/// Adds `email` to the signed-in account of `b` on /user, verifying its code.
async fn add_email(app: &TestApp, b: &reqwest::Client, email: &str) -> reqwest::Response {
    let page = app.page_with(b, "/user").await;
    let resp = app
        .submit_with(
            b,
            &page
                .form("/user/identifiers")
                .set("kind", "email")
                .set("value", email),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{email}");
    let verify = location(&resp);
    assert!(verify.starts_with("/user/verify/"), "{verify}");
    let before = app.smtp.messages_to(email).len();
    let code = app.smtp.wait_for(email, before.max(1)).await.code();
    app.enter_code_with(b, &verify, &code).await
}

/// Submits the profile form posting to `action` with `fields` set.
async fn press(
    app: &TestApp,
    b: &reqwest::Client,
    action: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let page = app.page_with(b, "/user").await;
    let mut form = page.form(action);
    for (k, v) in fields {
        form = form.set(k, v);
    }
    app.submit_with(b, &form).await
}

async fn identifiers_of(app: &TestApp, email: &str) -> Vec<(String, String, i64, bool)> {
    let db = app.db().await;
    let rows: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT id, value, is_primary, verified_at FROM identifiers WHERE user_id = \
         (SELECT user_id FROM identifiers WHERE canonical = $1) ORDER BY created_at, value",
    )
    .bind(email)
    .fetch_all(&db)
    .await
    .unwrap();
    db.close().await;
    rows.into_iter()
        .map(|(id, v, p, at)| (id, v, p, at.is_some()))
        .collect()
}

/// The verify URL a reverification redirected to, its code read from `to`'s inbox.
async fn reverify(
    app: &TestApp,
    b: &reqwest::Client,
    resp: reqwest::Response,
    to: &str,
    before: usize,
) -> reqwest::Response {
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let verify = location(&resp);
    assert!(
        verify.starts_with("/user/reverify/"),
        "a fresh code is asked for: {verify}"
    );
    let page = app.page_with(b, &verify).await;
    assert!(page.contains("Confirm it is you"), "{}", page.html);
    let mail = app.smtp.wait_for(to, before + 1).await;
    assert!(mail.data.contains("confirm it is you"), "{}", mail.data);
    app.enter_code_with(b, &verify, &mail.code()).await
}

const ELEVEN_MINUTES: Duration = Duration::from_secs(11 * 60);

crate::backend_tests! {
    async fn an_added_email_joins_the_account_only_once_its_code_is_verified() {
        let app = spawn_app().await;
        let b = signed_in(&app, "ada@example.com").await;
        let page = app.page_with(&b, "/user").await;
        let resp = app
            .submit_with(&b, &page.form("/user/identifiers").set("kind", "email").set("value", "ada.work@example.com"))
            .await;
        let verify = location(&resp);
        assert_eq!(identifiers_of(&app, "ada@example.com").await.len(), 1, "not attached before its code");
        let code = app.smtp.wait_for("ada.work@example.com", 1).await.code();
        // A wrong code: 422, nothing attached.
        let wrong = if code == "000000" { "111111" } else { "000000" };
        assert_eq!(app.enter_code_with(&b, &verify, wrong).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let resp = app.enter_code_with(&b, &verify, &code).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&resp), "/user?done=added");
        let ids = identifiers_of(&app, "ada@example.com").await;
        assert_eq!(ids.len(), 2);
        let added = ids.iter().find(|i| i.1 == "ada.work@example.com").unwrap();
        assert_eq!((added.2, added.3), (0, true), "verified, not primary");
        let page = app.page_with(&b, "/user?done=added").await;
        assert!(page.contains("ada.work@example.com") && page.contains("Added and verified"));
        assert!(page.contains("Email address or phone number added"), "in the security activity");

        // Another browser (another session) cannot continue this session's flow.
        let other = signed_in(&app, "eve@example.com").await;
        assert_eq!(app.get_with(&other, &verify).await.status(), StatusCode::NOT_FOUND);
    }

    async fn a_bad_or_taken_or_own_address_is_refused_on_the_page_with_the_value_kept() {
        let app = spawn_app().await;
        app.create_account("taken@example.com").await;
        let b = signed_in(&app, "me@example.com").await;
        for (value, says) in [
            ("not an address", "email"),
            ("taken@example.com", "Another account already uses this email address"),
            ("me@EXAMPLE.com", "already part of your account"),
        ] {
            let resp = press(&app, &b, "/user/identifiers", &[("kind", "email"), ("value", value)]).await;
            assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{value}");
            let page = TestApp::into_page(resp).await;
            assert_eq!(page.input_value("value").as_deref(), Some(value));
            assert!(page.contains(says), "{value}: {}", page.html);
            let marked = page.doc().select(&scraper::Selector::parse("#add_email[aria-invalid=true]").unwrap()).count();
            assert_eq!(marked, 1);
        }
        assert_eq!(identifiers_of(&app, "me@example.com").await.len(), 1);
        // Without this session's CSRF token: refused, nothing sent.
        let page = app.page_with(&b, "/user").await;
        let forged = page.form("/user/identifiers").set("value", "new@example.com").set("csrf_token", "forged");
        assert_eq!(app.submit_with(&b, &forged).await.status(), StatusCode::FORBIDDEN);
        app.smtp.assert_count_stays("new@example.com", 0).await;
    }

    async fn make_primary_and_remove_ask_for_a_fresh_code_once_the_sessions_is_old() {
        let app = spawn_app().await;
        let b = signed_in(&app, "old@example.com").await;
        assert_eq!(add_email(&app, &b, "new@example.com").await.status(), StatusCode::SEE_OTHER);
        let ids = identifiers_of(&app, "old@example.com").await;
        let new_id = ids.iter().find(|i| i.1 == "new@example.com").unwrap().0.clone();
        let old_id = ids.iter().find(|i| i.1 == "old@example.com").unwrap().0.clone();
        // Signed in a minute ago: no code asked.
        let resp = press(&app, &b, "/user/identifiers/primary", &[("identifier_id", &new_id)]).await;
        assert_eq!(location(&resp), "/user?done=primary");
        let ids = identifiers_of(&app, "old@example.com").await;
        assert_eq!(ids.iter().find(|i| i.0 == new_id).unwrap().2, 1);
        assert_eq!(ids.iter().find(|i| i.0 == old_id).unwrap().2, 0);

        // Eleven minutes on: removing asks for a code, sent to the primary address, and is done
        // once it is verified, without asking again.
        app.clock.advance(ELEVEN_MINUTES);
        let before = app.smtp.messages_to("new@example.com").len();
        let resp = press(&app, &b, "/user/identifiers/remove", &[("identifier_id", &old_id)]).await;
        assert_eq!(identifiers_of(&app, "new@example.com").await.len(), 2, "nothing removed yet");
        let resp = reverify(&app, &b, resp, "new@example.com", before).await;
        assert_eq!(location(&resp), "/user?done=removed");
        let ids = identifiers_of(&app, "new@example.com").await;
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].1, "new@example.com");
        // The last one stays (the session's code is fresh now): 422. Sign-up requires an email
        // address here, so that is the reason given (the rules' order: auth/profile.rs tests).
        let resp = press(&app, &b, "/user/identifiers/remove", &[("identifier_id", &ids[0].0)]).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let page = TestApp::into_page(resp).await;
        assert!(page.contains("must keep an email address"), "{}", page.text());
        assert_eq!(identifiers_of(&app, "new@example.com").await.len(), 1);
        // The fresh code itself expires with the window.
        app.clock.advance(ELEVEN_MINUTES);
        let resp = press(&app, &b, "/user/identifiers/remove", &[("identifier_id", &ids[0].0)]).await;
        assert!(location(&resp).starts_with("/user/reverify/"));
        let page = app.page_with(&b, "/user").await;
        for event in ["Confirmed it was you with a fresh code", "Email address or phone number removed", "Primary email address or phone number changed"] {
            assert!(page.contains(event), "{event}: {}", page.text());
        }
    }

    async fn one_browser_signs_out_another_and_then_all_others_after_a_fresh_code() {
        let app = spawn_app().await;
        let laptop = signed_in(&app, "many@example.com").await;
        let phone = browser();
        assert_eq!(app.sign_in_with(&phone, "many@example.com").await.status(), StatusCode::SEE_OTHER);
        let phone_session: String = {
            let me: serde_json::Value = phone.get(app.url("/v1/me/sessions")).send().await.unwrap().json().await.unwrap();
            me.as_array().unwrap().iter().find(|s| s["current"] == true).unwrap()["id"].as_str().unwrap().to_string()
        };
        let resp = press(&app, &laptop, "/user/sessions/revoke", &[("session_id", &phone_session)]).await;
        assert_eq!(location(&resp), "/user?done=signed_out_device");
        // The phone's next request is signed out.
        let resp = app.get_with(&phone, "/user").await;
        assert!(location(&resp).starts_with("/sign-in"), "{}", location(&resp));
        assert_eq!(phone.get(app.url("/v1/me")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);

        // Two more devices; eleven minutes on, "sign out all other devices" asks for a code.
        let (tablet, desktop) = (browser(), browser());
        for b in [&tablet, &desktop] {
            assert_eq!(app.sign_in_with(b, "many@example.com").await.status(), StatusCode::SEE_OTHER);
        }
        app.clock.advance(ELEVEN_MINUTES);
        let before = app.smtp.messages_to("many@example.com").len();
        let resp = press(&app, &laptop, "/user/sessions/revoke-others", &[]).await;
        let resp = reverify(&app, &laptop, resp, "many@example.com", before).await;
        assert_eq!(location(&resp), "/user?done=signed_out_others");
        for b in [&tablet, &desktop] {
            assert!(location(&app.get_with(b, "/user").await).starts_with("/sign-in"));
        }
        assert_eq!(app.get_with(&laptop, "/user").await.status(), StatusCode::OK, "this device stays");
        // create_account's browser was signed out too: one session left.
        assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 1);
        let page = app.page_with(&laptop, "/user").await;
        assert!(page.contains("A device was signed out"));
    }

    async fn deleting_the_account_asks_to_confirm_then_leaves_only_the_audit_and_the_address_can_sign_up_again() {
        let app = spawn_app().await;
        let b = signed_in(&app, "leaving@example.com").await;
        assert_eq!(add_email(&app, &b, "leaving2@example.com").await.status(), StatusCode::SEE_OTHER);
        let user_id: String = {
            let db = app.db().await;
            let (id,): (String,) = sqlx::query_as("SELECT id FROM users").fetch_one(&db).await.unwrap();
            db.close().await;
            id
        };
        // The first press asks; the confirmation unticked is refused (422) and asks again.
        let resp = press(&app, &b, "/user/delete", &[]).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let page = TestApp::into_page(resp).await;
        assert!(page.contains("Yes, delete my account"));
        let resp = app.submit_with(&b, &page.form("/user/delete").without("confirm")).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
        let page = TestApp::into_page(resp).await;
        let resp = app.submit_with(&b, &page.form("/user/delete").set("confirm", "yes")).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        for table in ["users", "identifiers", "sessions", "flows", "verifications"] {
            assert_eq!(app.count(&format!("SELECT COUNT(*) FROM {table}")).await, 0, "{table}");
        }
        let deleted = app
            .count(&format!("SELECT COUNT(*) FROM audit_events WHERE user_id = '{user_id}' AND event = 'account_deleted'"))
            .await;
        assert_eq!(deleted, 1, "kept for the operator");
        assert!(location(&app.get_with(&b, "/user").await).starts_with("/sign-in"), "signed out");
        // The address signs up afresh: a new account.
        assert_eq!(app.sign_up("leaving@example.com").await.status(), StatusCode::SEE_OTHER);
        let db = app.db().await;
        let (id,): (String,) = sqlx::query_as("SELECT id FROM users").fetch_one(&db).await.unwrap();
        db.close().await;
        assert_ne!(id, user_id);
    }

    async fn account_deletion_can_be_turned_off() {
        let app = spawn_app_with(|raw| raw.sessions.allow_account_deletion = false).await;
        let b = signed_in(&app, "stays@example.com").await;
        let page = app.page_with(&b, "/user").await;
        assert!(!page.contains("Delete account"));
        let form = crate::helpers::Form {
            action: "/user/delete".into(),
            fields: vec![
                ("csrf_token".into(), page.input_value("csrf_token").unwrap()),
                ("confirm".into(), "yes".into()),
            ],
        };
        assert_eq!(app.submit_with(&b, &form).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    }
}

#[tokio::test]
async fn in_strict_mode_a_taken_address_gets_a_code_page_that_never_works_and_its_owner_a_notice() {
    let app = spawn_app_with(|raw| raw.enumeration_protection = "strict".into()).await;
    app.create_account("owner@example.com").await;
    let b = signed_in(&app, "claimer@example.com").await;
    let resp = press(
        &app,
        &b,
        "/user/identifiers",
        &[("kind", "email"), ("value", "owner@example.com")],
    )
    .await;
    assert_eq!(
        resp.status(),
        StatusCode::SEE_OTHER,
        "looks like any other address"
    );
    let verify = location(&resp);
    let notice = app.smtp.wait_for("owner@example.com", 2).await;
    assert!(notice.data.contains("another"), "{}", notice.data);
    for code in ["000000", "123456"] {
        assert_eq!(
            app.enter_code_with(&b, &verify, code).await.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    assert_eq!(identifiers_of(&app, "claimer@example.com").await.len(), 1);
    assert_eq!(identifiers_of(&app, "owner@example.com").await.len(), 1);
}

async fn api(
    app: &TestApp,
    client: &reqwest::Client,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let mut req = client
        .request(method, app.url(path))
        .header("Origin", &app.address);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

crate::backend_tests! {
    async fn the_api_revokes_sessions_and_deletes_the_account_after_a_reverification() {
        use reqwest::Method;
        let app = spawn_app().await;
        let laptop = signed_in(&app, "api@example.com").await;
        let phone = browser();
        assert_eq!(app.sign_in_with(&phone, "api@example.com").await.status(), StatusCode::SEE_OTHER);
        let (_, sessions) = api(&app, &phone, Method::GET, "/v1/me/sessions", None).await;
        let phone_id = sessions.as_array().unwrap().iter().find(|s| s["current"] == true).unwrap()["id"].as_str().unwrap().to_string();

        // Eleven minutes on: 403 with the stable code, nothing revoked.
        app.clock.advance(ELEVEN_MINUTES);
        let revoke = format!("/v1/me/sessions/{phone_id}/revoke");
        let (status, body) = api(&app, &laptop, Method::POST, &revoke, None).await;
        assert_eq!((status, body["errors"][0]["code"].as_str()), (StatusCode::FORBIDDEN, Some("session_reverification_required")), "{body}");
        assert_eq!(app.get_with(&phone, "/user").await.status(), StatusCode::OK);

        // A reverification: a code to the primary address; a wrong code counts; the right one
        // allows the change.
        let before = app.smtp.messages_to("api@example.com").len();
        let (status, started) = api(&app, &laptop, Method::POST, "/v1/me/reverification", Some(serde_json::json!({}))).await;
        assert_eq!(status, StatusCode::OK, "{started}");
        assert_eq!((started["status"].as_str(), started["strategy"].as_str()), (Some("needs_first_factor"), Some("email_code")));
        let id = started["id"].as_str().unwrap().to_string();
        let code = app.smtp.wait_for("api@example.com", before + 1).await.code();
        let attempt = format!("/v1/me/reverification/{id}/attempt");
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let (status, body) = api(&app, &laptop, Method::POST, &attempt, Some(serde_json::json!({"code": wrong}))).await;
        assert_eq!((status, body["errors"][0]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("form_code_incorrect")), "{body}");
        // Another session cannot use this session's reverification.
        let (status, _) = api(&app, &phone, Method::POST, &attempt, Some(serde_json::json!({"code": code}))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, done) = api(&app, &laptop, Method::POST, &attempt, Some(serde_json::json!({"code": code}))).await;
        assert_eq!((status, done["status"].as_str()), (StatusCode::OK, Some("complete")), "{done}");

        let (status, body) = api(&app, &laptop, Method::POST, &revoke, None).await;
        assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("revoked")), "{body}");
        assert_eq!(api(&app, &phone, Method::GET, "/v1/me", None).await.0, StatusCode::UNAUTHORIZED);
        let (status, _) = api(&app, &laptop, Method::POST, &revoke, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "already gone");

        // Deleting the account: allowed within the window; everything goes.
        let (status, body) = api(&app, &laptop, Method::DELETE, "/v1/me", None).await;
        assert_eq!((status, body["deleted"].as_bool()), (StatusCode::OK, Some(true)), "{body}");
        assert_eq!(api(&app, &laptop, Method::GET, "/v1/me", None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0);
        assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 0);
        // Without Origin (a cross-site form cannot set JSON): refused before anything.
        let resp = browser().delete(app.url("/v1/me")).send().await.unwrap();
        assert!(resp.status().is_client_error());
    }
}

crate::backend_tests! {
    async fn every_profile_form_refuses_a_post_without_the_sessions_token_and_changes_nothing() {
        let app = spawn_app().await;
        let b = signed_in(&app, "csrf@example.com").await;
        let other = browser();
        assert_eq!(app.sign_in_with(&other, "csrf@example.com").await.status(), StatusCode::SEE_OTHER);
        assert_eq!(add_email(&app, &b, "csrf2@example.com").await.status(), StatusCode::SEE_OTHER);
        let ids = identifiers_of(&app, "csrf@example.com").await;
        let second = ids.iter().find(|i| i.1 == "csrf2@example.com").unwrap().0.clone();
        let page = app.page_with(&b, "/user").await;
        let other_session = page
            .doc()
            .select(&scraper::Selector::parse("input[name=session_id]").unwrap())
            .next()
            .unwrap()
            .value()
            .attr("value")
            .unwrap()
            .to_string();
        let before = (
            app.count("SELECT COUNT(*) FROM identifiers").await,
            app.count("SELECT COUNT(*) FROM sessions").await,
            app.count("SELECT COUNT(*) FROM identifiers WHERE is_primary = 1").await,
        );
        for (action, fields) in [
            ("/user/identifiers", vec![("kind", "email"), ("value", "x@example.com")]),
            ("/user/identifiers/primary", vec![("identifier_id", second.as_str())]),
            ("/user/identifiers/remove", vec![("identifier_id", second.as_str())]),
            ("/user/sessions/revoke", vec![("session_id", other_session.as_str())]),
            ("/user/sessions/revoke-others", vec![]),
            ("/user/delete", vec![("confirm", "yes"), ("step", "")]),
        ] {
            for token in ["forged", ""] {
                let mut form = crate::helpers::Form { action: action.into(), fields: vec![("csrf_token".into(), token.into())] };
                for (k, v) in &fields {
                    form = form.set(k, v);
                }
                assert_eq!(app.submit_with(&b, &form).await.status(), StatusCode::FORBIDDEN, "{action} with {token:?}");
            }
            // The real token works for the same form (the refusal was the token's).
            assert!(page.form(action).fields.iter().any(|(n, _)| n == "csrf_token"), "{action}");
        }
        let after = (
            app.count("SELECT COUNT(*) FROM identifiers").await,
            app.count("SELECT COUNT(*) FROM sessions").await,
            app.count("SELECT COUNT(*) FROM identifiers WHERE is_primary = 1").await,
        );
        assert_eq!(before, after);
        app.smtp.assert_count_stays("x@example.com", 0).await;
        assert_eq!(app.get_with(&other, "/user").await.status(), StatusCode::OK);
    }

    async fn a_reverification_can_go_to_another_verified_address_and_still_does_what_was_asked() {
        let app = spawn_app().await;
        let b = signed_in(&app, "first@example.com").await;
        assert_eq!(add_email(&app, &b, "second@example.com").await.status(), StatusCode::SEE_OTHER);
        let other = browser();
        assert_eq!(app.sign_in_with(&other, "first@example.com").await.status(), StatusCode::SEE_OTHER);
        app.clock.advance(ELEVEN_MINUTES);
        let resp = press(&app, &b, "/user/sessions/revoke-others", &[]).await;
        let verify = location(&resp);
        let page = app.page_with(&b, &verify).await;
        let factor = page.form_action("/user/reverify-factor/");
        let second_id = identifiers_of(&app, "first@example.com").await.into_iter().find(|i| i.1 == "second@example.com").unwrap().0;
        // Another account's identifier is no choice: back to the same code step, nothing sent.
        app.create_account("stranger@example.com").await;
        let stranger = identifiers_of(&app, "stranger@example.com").await[0].0.clone();
        let resp = app.submit_with(&b, &page.form(&factor).set("identifier_id", &stranger)).await;
        assert_eq!(location(&resp), verify);
        app.smtp.assert_count_stays("stranger@example.com", 1).await;
        let before = app.smtp.messages_to("second@example.com").len();
        let resp = app.submit_with(&b, &page.form(&factor).set("identifier_id", &second_id)).await;
        let resp = reverify(&app, &b, resp, "second@example.com", before).await;
        assert_eq!(location(&resp), "/user?done=signed_out_others");
        assert!(location(&app.get_with(&other, "/user").await).starts_with("/sign-in"));
    }
}

crate::backend_tests! {
    async fn the_api_adds_an_email_address_makes_it_primary_and_removes_the_old_one() {
        use reqwest::Method;
        use serde_json::json;
        let app = spawn_app().await;
        app.create_account("someone.else@example.com").await;
        let b = signed_in(&app, "api.old@example.com").await;

        // Create: unverified, nothing sent yet; bad and taken values are refused.
        let (status, created) = api(&app, &b, Method::POST, "/v1/me/email_addresses", Some(json!({"email_address": "api.new@example.com"}))).await;
        assert_eq!(status, StatusCode::OK, "{created}");
        assert_eq!((created["object"].as_str(), created["verification"]["status"].as_str()), (Some("email_address"), Some("unverified")));
        let id = created["id"].as_str().unwrap().to_string();
        app.smtp.assert_count_stays("api.new@example.com", 0).await;
        for (body, code) in [
            (json!({"email_address": "nope"}), "form_param_format_invalid"),
            (json!({"email_address": "someone.else@example.com"}), "form_identifier_exists"),
            (json!({"email_address": "API.old@example.com"}), "form_identifier_exists"),
            (json!({}), "form_param_missing"),
        ] {
            let (status, err) = api(&app, &b, Method::POST, "/v1/me/email_addresses", Some(body.clone())).await;
            assert_eq!((status, err["errors"][0]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(code)), "{body}: {err}");
        }

        // Prepare, a wrong code, the right one: it joins the account.
        let prepare = format!("/v1/me/email_addresses/{id}/prepare_verification");
        let (status, _) = api(&app, &b, Method::POST, &prepare, None).await;
        assert_eq!(status, StatusCode::OK);
        let code = app.smtp.wait_for("api.new@example.com", 1).await.code();
        let attempt = format!("/v1/me/email_addresses/{id}/attempt_verification");
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let (status, err) = api(&app, &b, Method::POST, &attempt, Some(json!({"code": wrong}))).await;
        assert_eq!((status, err["errors"][0]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("form_code_incorrect")));
        // Another session cannot touch this session's pending address.
        let other = browser();
        assert_eq!(app.sign_in_with(&other, "api.old@example.com").await.status(), StatusCode::SEE_OTHER);
        assert_eq!(api(&app, &other, Method::POST, &attempt, Some(json!({"code": code}))).await.0, StatusCode::NOT_FOUND);
        let (status, verified) = api(&app, &b, Method::POST, &attempt, Some(json!({"code": code}))).await;
        assert_eq!((status, verified["verification"]["status"].as_str(), verified["id"].as_str()), (StatusCode::OK, Some("verified"), Some(id.as_str())), "{verified}");
        let (_, me) = api(&app, &b, Method::GET, "/v1/me", None).await;
        assert_eq!(me["email_addresses"].as_array().unwrap().len(), 2, "{me}");
        let old_id = me["primary_email_address_id"].as_str().unwrap().to_string();
        assert_ne!(old_id, id);

        // Primary, within the window; a phone id or a stranger's id is refused.
        let (status, me) = api(&app, &b, Method::PATCH, "/v1/me", Some(json!({"primary_email_address_id": id}))).await;
        assert_eq!((status, me["primary_email_address_id"].as_str()), (StatusCode::OK, Some(id.as_str())), "{me}");
        let (status, err) = api(&app, &b, Method::PATCH, "/v1/me", Some(json!({"primary_phone_number_id": id}))).await;
        assert_eq!((status, err["errors"][0]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("form_param_value_invalid")), "{err}");

        // Eleven minutes on: removing needs a fresh code, and nothing changes until then.
        app.clock.advance(ELEVEN_MINUTES);
        let old = format!("/v1/me/email_addresses/{old_id}");
        let (status, err) = api(&app, &b, Method::DELETE, &old, None).await;
        assert_eq!((status, err["errors"][0]["code"].as_str()), (StatusCode::FORBIDDEN, Some("session_reverification_required")));
        let (status, err) = api(&app, &b, Method::PATCH, "/v1/me", Some(json!({"first_name": "Changed", "primary_email_address_id": old_id}))).await;
        assert_eq!((status, err["errors"][0]["code"].as_str()), (StatusCode::FORBIDDEN, Some("session_reverification_required")));
        let (_, me) = api(&app, &b, Method::GET, "/v1/me", None).await;
        assert_eq!(me["first_name"], serde_json::Value::Null, "a refused PATCH changes nothing");
        let before = app.smtp.messages_to("api.new@example.com").len();
        let (_, started) = api(&app, &b, Method::POST, "/v1/me/reverification", Some(json!({}))).await;
        let code = app.smtp.wait_for("api.new@example.com", before + 1).await.code();
        let done = format!("/v1/me/reverification/{}/attempt", started["id"].as_str().unwrap());
        assert_eq!(api(&app, &b, Method::POST, &done, Some(json!({"code": code}))).await.0, StatusCode::OK);
        let (status, deleted) = api(&app, &b, Method::DELETE, &old, None).await;
        assert_eq!((status, deleted["deleted"].as_bool()), (StatusCode::OK, Some(true)), "{deleted}");
        // The last one stays: 422 (the instance requires an email address).
        let (status, err) = api(&app, &b, Method::DELETE, &format!("/v1/me/email_addresses/{id}"), None).await;
        assert_eq!((status, err["errors"][0]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("identifier_required")), "{err}");
        let (_, me) = api(&app, &b, Method::GET, "/v1/me", None).await;
        assert_eq!(me["email_addresses"].as_array().unwrap().len(), 1);
        assert_eq!(me["email_addresses"][0]["email_address"], "api.new@example.com");
        // Not a collection of identifiers: the structured 404.
        assert_eq!(api(&app, &b, Method::POST, "/v1/me/usernames", Some(json!({}))).await.0, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn a_phone_number_is_added_on_the_page_with_an_sms_code_through_the_twilio_receiver() {
    let sms = crate::sms_server::TestSms::start();
    let receiver = sms.clone();
    let app = spawn_app_with(move |raw| crate::phone::with_twilio(&receiver, raw)).await;
    let b = signed_in(&app, "phoneless@example.com").await;
    let page = app.page_with(&b, "/user").await;
    assert!(page.contains("Add a phone number"));
    let resp = app
        .submit_with(
            &b,
            &page
                .form_with_field("/user/identifiers", "kind", "phone")
                .set("value", "(201) 555-0199"),
        )
        .await;
    let verify = location(&resp);
    assert!(verify.starts_with("/user/verify/"), "{verify}");
    let code = sms.wait_for("+12015550199", 1).await.code();
    let resp = app.enter_code_with(&b, &verify, &code).await;
    assert_eq!(location(&resp), "/user?done=added");
    let ids = identifiers_of(&app, "phoneless@example.com").await;
    let phone = ids
        .iter()
        .find(|i| i.1.contains("555"))
        .expect("the phone number is attached");
    assert_eq!(
        (phone.2, phone.3),
        (1, true),
        "the account's first phone number is its primary one"
    );
}
