//! The custom-flow JSON API (`/v1/client`), over real HTTP, with real SMTP and the local SMS
//! receiver: every endpoint, its objects, statuses and stable error codes.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{browser, spawn_app, spawn_app_with, TestApp};
use crate::sms_server::TestSms;

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["errors"][0]["code"].as_str().unwrap_or_default()
    }
}

async fn read(resp: reqwest::Response) -> Answer {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    Answer {
        status,
        headers,
        body,
    }
}

/// A same-origin browser `fetch` with cookies.
async fn post(app: &TestApp, client: &reqwest::Client, path: &str, body: Value) -> Answer {
    read(
        client
            .post(app.url(path))
            .header("Origin", &app.address)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn get(app: &TestApp, client: &reqwest::Client, path: &str) -> Answer {
    read(client.get(app.url(path)).send().await.unwrap()).await
}

crate::backend_tests! {
    async fn a_sign_up_through_the_api_has_clerks_shape_and_signs_the_browser_in() {
        let app = spawn_app().await;
        let client = browser();
        let su = post(&app, &client, "/v1/client/sign_ups", json!({"email_address": "Api@Example.com"})).await;
        assert_eq!(su.status, StatusCode::OK, "{}", su.body);
        let b = &su.body;
        assert_eq!(b["object"], "sign_up");
        assert_eq!(b["status"], "missing_requirements");
        assert_eq!(b["email_address"], "Api@example.com");
        assert_eq!(b["required_fields"], json!(["email_address"]));
        assert_eq!(b["unverified_fields"], json!(["email_address"]));
        assert_eq!(b["missing_fields"], json!([]));
        assert_eq!(b["verifications"]["email_address"]["status"], "unverified");
        assert_eq!(b["verifications"]["email_address"]["expire_at"], Value::Null, "no code before prepare");
        assert_eq!(b["verifications"]["phone_number"], Value::Null);
        assert!(b["created_session_id"].is_null());
        app.smtp.assert_count_stays("Api@example.com", 0).await;

        let id = b["id"].as_str().unwrap();
        let prepared = post(&app, &client, &format!("/v1/client/sign_ups/{id}/prepare_verification"), json!({"strategy": "email_code"})).await;
        let v = &prepared.body["verifications"]["email_address"];
        assert_eq!(v["strategy"], "email_code");
        assert_eq!(v["attempts_remaining"], 3);
        let now = (latchkey::clock::Clock::now(&app.clock).unix_timestamp_nanos() / 1_000_000) as i64;
        assert!((v["expire_at"].as_i64().unwrap() - (now + 600_000)).abs() < 2000, "{v}");
        assert!((v["resend_available_at"].as_i64().unwrap() - (now + 30_000)).abs() < 2000, "{v}");
        let code = app.smtp.wait_for("Api@example.com", 1).await.code();

        let wrong = if code == "000000" { "111111" } else { "000000" };
        let bad = post(&app, &client, &format!("/v1/client/sign_ups/{id}/attempt_verification"), json!({"strategy": "email_code", "code": wrong})).await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(bad.code(), "form_code_incorrect");
        assert_eq!(bad.body["errors"][0]["meta"]["attempts_remaining"], 2);
        assert_eq!(bad.body["errors"][0]["meta"]["param_name"], "code");
        let read_back = get(&app, &client, &format!("/v1/client/sign_ups/{id}")).await;
        assert_eq!(read_back.body["verifications"]["email_address"]["attempts"], 1);
        assert_eq!(read_back.body["verifications"]["email_address"]["attempts_remaining"], 2);

        let done = post(&app, &client, &format!("/v1/client/sign_ups/{id}/attempt_verification"), json!({"strategy": "email_code", "code": code})).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        assert_eq!(done.body["status"], "complete");
        assert_eq!(done.body["verifications"]["email_address"]["status"], "verified");
        assert!(done.body["created_user_id"].as_str().unwrap().starts_with("usr_"));
        let session_id = done.body["created_session_id"].as_str().unwrap().to_string();
        assert!(done.headers.get_all("set-cookie").iter().count() >= 2, "session cookie and a fresh browser cookie");

        let outcome = get(&app, &client, &format!("/v1/client/sign_ups/{id}")).await;
        assert_eq!((outcome.status, &outcome.body["status"]), (StatusCode::OK, &json!("complete")), "{}", outcome.body);
        assert_eq!(outcome.body["created_session_id"], session_id.as_str());

        let me = get(&app, &client, "/v1/client").await;
        assert_eq!(me.body["object"], "client");
        assert_eq!(me.body["sessions"][0]["id"], session_id.as_str());
        assert_eq!(me.body["last_active_session_id"], session_id.as_str());
        assert_eq!(me.body["user"]["email_addresses"][0]["email_address"], "Api@example.com");
        assert_eq!(me.body["user"]["primary_email_address_id"], me.body["user"]["email_addresses"][0]["id"]);
        // The same cookie works on the hosted pages.
        assert!(app.page_with(&client, "/user").await.contains("Api@example.com"));
    }

    async fn a_sign_in_lists_its_factors_and_completes_with_the_code() {
        let app = spawn_app().await;
        app.create_account("ann@example.com").await;
        let client = browser();
        let si = post(&app, &client, "/v1/client/sign_ins", json!({"identifier": "ANN@example.com"})).await;
        assert_eq!(si.status, StatusCode::OK, "{}", si.body);
        assert_eq!(si.body["object"], "sign_in");
        assert_eq!(si.body["status"], "needs_first_factor");
        assert_eq!(si.body["identifier"], "ANN@example.com");
        assert_eq!(si.body["first_factor_verification"], Value::Null);
        let factor = &si.body["supported_first_factors"][0];
        assert_eq!(factor["strategy"], "email_code");
        assert_eq!(factor["safe_identifier"], "a•••@example.com");
        let email_id = factor["email_address_id"].as_str().unwrap().to_string();
        let id = si.body["id"].as_str().unwrap().to_string();
        app.smtp.assert_count_stays("ann@example.com", 1).await;

        let wrong_kind = post(&app, &client, &format!("/v1/client/sign_ins/{id}/prepare_first_factor"), json!({"strategy": "phone_code", "phone_number_id": email_id})).await;
        assert_eq!(wrong_kind.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(wrong_kind.code(), "form_param_value_invalid");
        let missing = post(&app, &client, &format!("/v1/client/sign_ins/{id}/prepare_first_factor"), json!({"strategy": "email_code"})).await;
        assert_eq!(missing.code(), "form_param_missing");
        let not_prepared = post(&app, &client, &format!("/v1/client/sign_ins/{id}/attempt_first_factor"), json!({"strategy": "email_code", "code": "123456"})).await;
        assert_eq!(not_prepared.code(), "verification_not_prepared");

        let prepared = post(&app, &client, &format!("/v1/client/sign_ins/{id}/prepare_first_factor"), json!({"strategy": "email_code", "email_address_id": email_id})).await;
        assert_eq!(prepared.status, StatusCode::OK, "{}", prepared.body);
        assert_eq!(prepared.body["first_factor_verification"]["status"], "unverified");
        let again = post(&app, &client, &format!("/v1/client/sign_ins/{id}/prepare_first_factor"), json!({"strategy": "email_code", "email_address_id": email_id})).await;
        assert_eq!(again.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(again.code(), "too_many_requests");
        assert!(again.headers.get("retry-after").is_some());
        let code = app.smtp.wait_for("ann@example.com", 2).await.code();
        let done = post(&app, &client, &format!("/v1/client/sign_ins/{id}/attempt_first_factor"), json!({"strategy": "email_code", "code": code})).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        assert_eq!(done.body["status"], "complete");
        assert!(done.body["created_session_id"].as_str().unwrap().starts_with("ses_"));
        // The browser cookie the flow was bound to is replaced at sign-in: the finished flow is
        // gone for this browser (a parallel submit gets 409, see the race test).
        let used = post(&app, &client, &format!("/v1/client/sign_ins/{id}/attempt_first_factor"), json!({"strategy": "email_code", "code": code})).await;
        assert_eq!((used.status, used.code()), (StatusCode::NOT_FOUND, "resource_not_found"));
        // But the client that finished it can read the outcome back (a lost answer), without
        // being handed anything new; another client cannot.
        let outcome = get(&app, &client, &format!("/v1/client/sign_ins/{id}")).await;
        assert_eq!(outcome.status, StatusCode::OK, "{}", outcome.body);
        assert_eq!(outcome.body["status"], "complete");
        assert_eq!(outcome.body["created_session_id"], done.body["created_session_id"]);
        assert!(outcome.headers.get("set-cookie").is_none(), "the read hands out no cookie");
        let stranger = get(&app, &browser(), &format!("/v1/client/sign_ins/{id}")).await;
        assert_eq!((stranger.status, stranger.code()), (StatusCode::NOT_FOUND, "resource_not_found"));

        let me = get(&app, &client, "/v1/client").await;
        let session = me.body["sessions"][0]["id"].as_str().unwrap().to_string();
        let out = read(client.delete(app.url(&format!("/v1/client/sessions/{session}"))).header("Origin", &app.address).send().await.unwrap()).await;
        assert_eq!(out.status, StatusCode::OK);
        assert_eq!(out.body["sessions"], json!([]));
        assert_eq!(get(&app, &client, "/v1/client").await.body["user"], Value::Null);
        let gone = read(client.delete(app.url(&format!("/v1/client/sessions/{session}"))).header("Origin", &app.address).send().await.unwrap()).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
        assert_eq!(gone.code(), "resource_not_found");
    }

    async fn both_strategies_work_end_to_end_with_real_smtp_and_sms() {
        let sms = TestSms::start();
        let app = spawn_app_with({
            let sms = sms.clone();
            move |raw| {
                raw.phone.allowed_countries = Some(vec!["US".into()]);
                raw.identifiers.phone.required = true;
                raw.sms.provider = "twilio".into();
                raw.sms.twilio.base_url = sms.twilio_base_url();
                raw.sms.twilio.account_sid = Some(sms.account_sid());
                raw.sms.twilio.auth_token = Some(sms.auth_token());
                raw.sms.twilio.from = Some("+15005550006".into());
            }
        })
        .await;
        let client = browser();
        let phone = "+12015550234";
        let only_phone = post(&app, &client, "/v1/client/sign_ups", json!({"phone_number": "(201) 555-0234"})).await;
        assert_eq!(only_phone.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", only_phone.body);
        assert_eq!(only_phone.code(), "form_param_format_invalid", "no default region: needs +1");
        // Every required identifier up front: there is no call to add one later.
        let missing = post(&app, &client, "/v1/client/sign_ups", json!({"phone_number": "+1 (201) 555-0234"})).await;
        assert_eq!((missing.status, missing.code()), (StatusCode::UNPROCESSABLE_ENTITY, "form_param_missing"));
        assert_eq!(missing.body["errors"][0]["meta"]["param_name"], "email_address");

        let su = post(&app, &client, "/v1/client/sign_ups", json!({"email_address": "duo@example.com", "phone_number": phone})).await;
        let id = su.body["id"].as_str().unwrap().to_string();
        assert_eq!(su.body["unverified_fields"], json!(["email_address", "phone_number"]));
        post(&app, &client, &format!("/v1/client/sign_ups/{id}/prepare_verification"), json!({"strategy": "phone_code"})).await;
        let code = sms.wait_for(phone, 1).await.code();
        let step = post(&app, &client, &format!("/v1/client/sign_ups/{id}/attempt_verification"), json!({"strategy": "phone_code", "code": code})).await;
        assert_eq!(step.body["unverified_fields"], json!(["email_address"]), "any order: the phone first");
        post(&app, &client, &format!("/v1/client/sign_ups/{id}/prepare_verification"), json!({"strategy": "email_code"})).await;
        let code = app.smtp.wait_for("duo@example.com", 1).await.code();
        let done = post(&app, &client, &format!("/v1/client/sign_ups/{id}/attempt_verification"), json!({"strategy": "email_code", "code": code})).await;
        assert_eq!(done.body["status"], "complete", "{}", done.body);

        let other = browser();
        let si = post(&app, &other, "/v1/client/sign_ins", json!({"identifier": "duo@example.com"})).await;
        let factors = si.body["supported_first_factors"].as_array().unwrap().clone();
        assert_eq!(factors.len(), 2, "{}", si.body);
        let phone_factor = factors.iter().find(|f| f["strategy"] == "phone_code").unwrap();
        assert_eq!(phone_factor["safe_identifier"], "+1 ••• ••• •234");
        let id = si.body["id"].as_str().unwrap().to_string();
        let prepared = post(&app, &other, &format!("/v1/client/sign_ins/{id}/prepare_first_factor"), json!({"strategy": "phone_code", "phone_number_id": phone_factor["phone_number_id"]})).await;
        assert_eq!(prepared.body["first_factor_verification"]["strategy"], "phone_code", "{}", prepared.body);
        let code = sms.wait_for(phone, 2).await.code();
        let done = post(&app, &other, &format!("/v1/client/sign_ins/{id}/attempt_first_factor"), json!({"strategy": "phone_code", "code": code})).await;
        assert_eq!(done.body["status"], "complete", "{}", done.body);
        let me = get(&app, &other, "/v1/client").await;
        assert_eq!(me.body["user"]["phone_numbers"][0]["phone_number"], phone);
    }

    async fn two_parallel_attempts_with_one_code_create_one_session() {
        let app = spawn_app().await;
        app.create_account("race@example.com").await;
        let client = browser();
        let si = post(&app, &client, "/v1/client/sign_ins", json!({"identifier": "race@example.com"})).await;
        let id = si.body["id"].as_str().unwrap().to_string();
        let factor = si.body["supported_first_factors"][0]["email_address_id"].clone();
        post(&app, &client, &format!("/v1/client/sign_ins/{id}/prepare_first_factor"), json!({"strategy": "email_code", "email_address_id": factor})).await;
        let code = app.smtp.wait_for("race@example.com", 2).await.code();
        let path = format!("/v1/client/sign_ins/{id}/attempt_first_factor");
        let body = json!({"strategy": "email_code", "code": code});
        let attempts: Vec<_> = (0..8).map(|_| post(&app, &client, &path, body.clone())).collect();
        let answers = futures_util::future::join_all(attempts).await;
        let ok = answers.iter().filter(|a| a.status == StatusCode::OK).count();
        assert_eq!(ok, 1, "{:?}", answers.iter().map(|a| (a.status, a.code().to_string())).collect::<Vec<_>>());
        assert!(answers.iter().filter(|a| a.status != StatusCode::OK).all(|a| a.code() == "verification_already_verified"));
        assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 2, "the account's own sign-up session and one more");
    }

    async fn used_up_and_expired_codes_are_reported_with_their_own_codes() {
        let app = spawn_app().await;
        let client = browser();
        let su = post(&app, &client, "/v1/client/sign_ups", json!({"email_address": "tries@example.com"})).await;
        let id = su.body["id"].as_str().unwrap().to_string();
        let prepare = format!("/v1/client/sign_ups/{id}/prepare_verification");
        let attempt = format!("/v1/client/sign_ups/{id}/attempt_verification");
        post(&app, &client, &prepare, json!({"strategy": "email_code"})).await;
        let code = app.smtp.wait_for("tries@example.com", 1).await.code();
        let wrong = if code == "000000" { "111111" } else { "000000" };
        for left in [2, 1] {
            let a = post(&app, &client, &attempt, json!({"strategy": "email_code", "code": wrong})).await;
            assert_eq!(a.body["errors"][0]["meta"]["attempts_remaining"], left);
        }
        let last = post(&app, &client, &attempt, json!({"strategy": "email_code", "code": wrong})).await;
        assert_eq!(last.code(), "verification_failed");
        let shown = get(&app, &client, &format!("/v1/client/sign_ups/{id}")).await;
        assert_eq!(shown.body["verifications"]["email_address"]["status"], "failed");
        assert_eq!(shown.body["verifications"]["email_address"]["attempts_remaining"], 0);
        let dead = post(&app, &client, &attempt, json!({"strategy": "email_code", "code": code})).await;
        assert_eq!(dead.code(), "verification_failed", "the right code no longer works either");

        app.clock.advance(Duration::from_secs(30));
        post(&app, &client, &prepare, json!({"strategy": "email_code"})).await;
        let code = app.smtp.wait_for("tries@example.com", 2).await.code();
        app.clock.advance(Duration::from_secs(601));
        let late = post(&app, &client, &attempt, json!({"strategy": "email_code", "code": code})).await;
        assert_eq!(late.code(), "verification_expired");
        let shown = get(&app, &client, &format!("/v1/client/sign_ups/{id}")).await;
        assert_eq!(shown.body["verifications"]["email_address"]["status"], "expired");
    }

    async fn bad_requests_get_structured_errors_never_a_500() {
        let app = spawn_app().await;
        let client = browser();
        let url = app.url("/v1/client/sign_ups");
        let send = |body: &'static str, content_type: &'static str| {
            client.post(&url).header("Origin", &app.address).header("Content-Type", content_type).body(body).send()
        };
        let cases: Vec<(&str, &str, StatusCode, &str)> = vec![
            ("{not json", "application/json", StatusCode::BAD_REQUEST, "malformed_request"),
            ("[1, 2]", "application/json", StatusCode::BAD_REQUEST, "malformed_request"),
            (r#"{"email_address": 5}"#, "application/json", StatusCode::BAD_REQUEST, "malformed_request"),
            (r#"{"email_address": "a@b.co", "password": "x"}"#, "application/json", StatusCode::BAD_REQUEST, "form_param_unknown"),
            (r#"{"email_address": "a@b.co"}"#, "text/plain", StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ("email_address=a@b.co", "application/x-www-form-urlencoded", StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ("{}", "application/json", StatusCode::UNPROCESSABLE_ENTITY, "form_param_missing"),
            (r#"{"email_address": "not-an-address"}"#, "application/json", StatusCode::UNPROCESSABLE_ENTITY, "form_param_format_invalid"),
            (r#"{"email_address": "a@x.test\r\nBcc: e@evil.test"}"#, "application/json", StatusCode::UNPROCESSABLE_ENTITY, "form_param_format_invalid"),
        ];
        for (body, content_type, status, code) in cases {
            let a = read(send(body, content_type).await.unwrap()).await;
            assert_eq!((a.status, a.code()), (status, code), "{body}: {}", a.body);
            let e = &a.body["errors"][0];
            assert!(e["message"].is_string() && e["long_message"].is_string() && e["meta"].is_object(), "{}", a.body);
        }
        let huge = format!(r#"{{"email_address": "{}@example.com"}}"#, "a".repeat(20_000));
        let a = read(client.post(&url).header("Origin", &app.address).header("Content-Type", "application/json").body(huge).send().await.unwrap()).await;
        assert_eq!((a.status, a.code()), (StatusCode::PAYLOAD_TOO_LARGE, "request_body_too_large"));
        let strategy = post(&app, &client, "/v1/client/sign_ups/flw_aaaaaaaaaaaaaaaaaaaaaaaaaa/prepare_verification", json!({"strategy": "password"})).await;
        assert_eq!((strategy.status, strategy.code()), (StatusCode::UNPROCESSABLE_ENTITY, "form_param_value_invalid"));
        let unknown = get(&app, &client, "/v1/client/sign_ups/flw_aaaaaaaaaaaaaaaaaaaaaaaaaa").await;
        assert_eq!((unknown.status, unknown.code()), (StatusCode::NOT_FOUND, "resource_not_found"));
        let junk = get(&app, &client, "/v1/client/sign_ins/'%20OR%201=1").await;
        assert_eq!(junk.status, StatusCode::NOT_FOUND);
        let nobody = post(&app, &client, "/v1/client/sign_ins", json!({"identifier": "nobody@example.com"})).await;
        assert_eq!((nobody.status, nobody.code()), (StatusCode::UNPROCESSABLE_ENTITY, "form_identifier_not_found"));
        app.create_account("taken@example.com").await;
        let taken = post(&app, &client, "/v1/client/sign_ups", json!({"email_address": "taken@example.com"})).await;
        assert_eq!((taken.status, taken.code()), (StatusCode::UNPROCESSABLE_ENTITY, "form_identifier_exists"));
        assert_eq!(taken.body["errors"][0]["meta"]["param_name"], "email_address");
        let phone = post(&app, &client, "/v1/client/sign_ups", json!({"phone_number": "+12015550234"})).await;
        assert_eq!((phone.status, phone.code()), (StatusCode::UNPROCESSABLE_ENTITY, "form_param_not_allowed"), "phone numbers are off here");
        let bad_token = read(client.get(app.url("/v1/client")).header("Authorization", "Bearer nope").send().await.unwrap()).await;
        assert_eq!((bad_token.status, bad_token.code()), (StatusCode::UNAUTHORIZED, "authorization_invalid"));
    }

    async fn a_sign_in_created_without_an_identifier_needs_one_and_stores_nothing() {
        let app = spawn_app().await;
        let client = browser();
        let flows = app.count("SELECT COUNT(*) FROM flows").await;
        for body in [json!({}), json!({"identifier": ""}), json!({"identifier": "   "})] {
            let a = post(&app, &client, "/v1/client/sign_ins", body.clone()).await;
            assert_eq!(a.status, StatusCode::OK, "{body}: {}", a.body);
            assert_eq!(a.body["object"], "sign_in");
            assert_eq!(a.body["status"], "needs_identifier", "{}", a.body);
            assert!(a.body["id"].is_null() && a.body["identifier"].is_null(), "{}", a.body);
            assert_eq!(a.body["supported_first_factors"], json!([]));
        }
        assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, flows);
        // With an identifier, the usual sign-in.
        app.create_account("later@example.com").await;
        let a = post(&app, &client, "/v1/client/sign_ins", json!({"identifier": "later@example.com"})).await;
        assert_eq!(a.body["status"], "needs_first_factor", "{}", a.body);
        assert!(a.body["id"].as_str().is_some_and(|id| id.starts_with("flw_")));
    }

    async fn a_flow_is_bound_to_the_client_that_created_it() {
        let app = spawn_app().await;
        let mine = browser();
        let su = post(&app, &mine, "/v1/client/sign_ups", json!({"email_address": "mine@example.com"})).await;
        let id = su.body["id"].as_str().unwrap().to_string();
        let stranger = browser();
        let seen = get(&app, &stranger, &format!("/v1/client/sign_ups/{id}")).await;
        assert_eq!((seen.status, seen.code()), (StatusCode::NOT_FOUND, "resource_not_found"));
        let prepared = post(&app, &stranger, &format!("/v1/client/sign_ups/{id}/prepare_verification"), json!({"strategy": "email_code"})).await;
        assert_eq!(prepared.status, StatusCode::NOT_FOUND);
        app.smtp.assert_count_stays("mine@example.com", 0).await;
    }

    async fn cors_answers_only_allowed_origins_exactly() {
        let app = spawn_app().await;
        let client = browser();
        let allowed = "https://app.example.com";
        let pre = client.request(reqwest::Method::OPTIONS, app.url("/v1/client/sign_ups"))
            .header("Origin", allowed)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type")
            .send().await.unwrap();
        assert_eq!(pre.status(), StatusCode::NO_CONTENT);
        let h = pre.headers();
        assert_eq!(h["access-control-allow-origin"], allowed);
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert!(h["access-control-allow-methods"].to_str().unwrap().contains("POST"));
        assert!(h["vary"].to_str().unwrap().contains("Origin"));

        let ok = read(client.post(app.url("/v1/client/sign_ups")).header("Origin", allowed).json(&json!({"email_address": "cors@example.com"})).send().await.unwrap()).await;
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(ok.headers["access-control-allow-origin"], allowed);

        for evil in ["https://evil.example", "https://app.example.com.evil.example", "null", "http://app.example.com"] {
            let pre = client.request(reqwest::Method::OPTIONS, app.url("/v1/client/sign_ups")).header("Origin", evil).header("Access-Control-Request-Method", "POST").send().await.unwrap();
            assert_eq!(pre.status(), StatusCode::FORBIDDEN, "{evil}");
            assert!(pre.headers().get("access-control-allow-origin").is_none(), "{evil}");
            let a = read(client.post(app.url("/v1/client/sign_ups")).header("Origin", evil).json(&json!({"email_address": "evil@example.com"})).send().await.unwrap()).await;
            assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "origin_not_allowed"), "{evil}");
            assert!(a.headers.get("access-control-allow-origin").is_none(), "never reflected: {evil}");
            let read_only = client.get(app.url("/v1/client")).header("Origin", evil).send().await.unwrap();
            assert!(read_only.headers().get("access-control-allow-origin").is_none(), "{evil}");
        }
        app.smtp.assert_count_stays("evil@example.com", 0).await;
        assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 1);
        let cross_site = read(client.post(app.url("/v1/client/sign_ups")).header("Sec-Fetch-Site", "cross-site").json(&json!({"email_address": "x@example.com"})).send().await.unwrap()).await;
        assert_eq!(cross_site.code(), "origin_not_allowed", "a browser saying cross-site without an allowed Origin");
    }

    async fn a_native_app_uses_a_bearer_client_token_that_is_renewed_at_sign_in() {
        let app = spawn_app().await;
        app.create_account("native@example.com").await;
        let http = reqwest::Client::new(); // no cookie store: a native app
        let first = read(http.post(app.url("/v1/client/sign_ins?_is_native=1")).json(&json!({"identifier": "native@example.com"})).send().await.unwrap()).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.body);
        assert!(first.headers.get("set-cookie").is_none(), "no cookies for native apps");
        let token = first.headers["authorization"].to_str().unwrap().to_string();
        assert!(token.starts_with("Bearer ") && token.len() == 7 + 43, "{token}");
        let id = first.body["id"].as_str().unwrap().to_string();
        let factor = first.body["supported_first_factors"][0]["email_address_id"].clone();
        let call = |path: String, body: Value, auth: String| http.post(app.url(&path)).header("Authorization", auth).json(&body).send();
        let without = read(http.get(app.url(&format!("/v1/client/sign_ins/{id}"))).send().await.unwrap()).await;
        assert_eq!(without.status, StatusCode::NOT_FOUND, "the flow belongs to the token");
        let prepared = read(call(format!("/v1/client/sign_ins/{id}/prepare_first_factor"), json!({"strategy": "email_code", "email_address_id": factor}), token.clone()).await.unwrap()).await;
        assert_eq!(prepared.status, StatusCode::OK, "{}", prepared.body);
        let code = app.smtp.wait_for("native@example.com", 2).await.code();
        let done = read(call(format!("/v1/client/sign_ins/{id}/attempt_first_factor"), json!({"strategy": "email_code", "code": code}), token.clone()).await.unwrap()).await;
        assert_eq!(done.body["status"], "complete", "{}", done.body);
        assert!(done.headers.get("set-cookie").is_none());
        let renewed = done.headers["authorization"].to_str().unwrap().to_string();
        assert_ne!(renewed, token, "a new client token at sign-in");
        let me = read(http.get(app.url("/v1/client")).header("Authorization", &renewed).send().await.unwrap()).await;
        assert_eq!(me.body["user"]["email_addresses"][0]["email_address"], "native@example.com", "{}", me.body);
        let outcome = read(http.get(app.url(&format!("/v1/client/sign_ins/{id}"))).header("Authorization", &renewed).send().await.unwrap()).await;
        assert_eq!((outcome.status, &outcome.body["status"]), (StatusCode::OK, &json!("complete")), "{}", outcome.body);
        assert_eq!(outcome.body["created_session_id"], done.body["created_session_id"]);
        let old = read(http.get(app.url("/v1/client")).header("Authorization", &token).send().await.unwrap()).await;
        assert_eq!(old.body["user"], Value::Null, "the pre-sign-in token holds no session");
        let session = me.body["sessions"][0]["id"].as_str().unwrap().to_string();
        let out = read(http.delete(app.url(&format!("/v1/client/sessions/{session}"))).header("Authorization", &renewed).send().await.unwrap()).await;
        assert_eq!(out.status, StatusCode::OK);
        assert!(out.headers.get("set-cookie").is_none(), "no cookies for native apps, not even a removal");
        let me = read(http.get(app.url("/v1/client")).header("Authorization", &renewed).send().await.unwrap()).await;
        assert_eq!(me.body["user"], Value::Null);
    }

    async fn the_openapi_document_describes_every_endpoint() {
        let app = spawn_app().await;
        let doc = get(&app, &browser(), "/v1/openapi.json").await;
        assert_eq!(doc.status, StatusCode::OK);
        assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc.body["paths"].as_object().unwrap();
        for p in [
            "/v1/client", "/v1/client/sessions/{id}", "/v1/client/sign_ups", "/v1/client/sign_ups/{id}",
            "/v1/client/sign_ups/{id}/prepare_verification", "/v1/client/sign_ups/{id}/attempt_verification",
            "/v1/client/sign_ins", "/v1/client/sign_ins/{id}", "/v1/client/sign_ins/{id}/prepare_first_factor",
            "/v1/client/sign_ins/{id}/attempt_first_factor",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        let schemas = doc.body["components"]["schemas"].as_object().unwrap();
        for s in ["SignUp", "SignIn", "ClientObject", "ErrorsBody", "Verification"] {
            assert!(schemas.contains_key(s), "{s} missing");
        }
        assert!(schemas["Verification"]["properties"].get("attempts_remaining").is_some());
    }

    async fn api_answers_carry_the_security_headers_and_no_store() {
        let app = spawn_app().await;
        let client = browser();
        for resp in [
            client.get(app.url("/v1/client")).send().await.unwrap(),
            client.post(app.url("/v1/client/sign_ups")).header("Content-Type", "text/plain").body("x").send().await.unwrap(),
            client.get(app.url("/v1/client/sign_ups/flw_aaaaaaaaaaaaaaaaaaaaaaaaaa")).send().await.unwrap(),
        ] {
            let h = resp.headers();
            assert_eq!(h["cache-control"], "no-store");
            assert_eq!(h["x-content-type-options"], "nosniff");
            assert!(h["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
            assert!(h["content-type"].to_str().unwrap().starts_with("application/json"));
        }
    }

    async fn unknown_api_paths_get_a_structured_404_and_wrong_methods_a_405_with_allow() {
        let app = spawn_app().await;
        let client = browser();
        for (method, path) in [(reqwest::Method::GET, "/v1/nothing"), (reqwest::Method::GET, "/v1/client/sign_ups/flw_x/nothing")] {
            let a = read(client.request(method.clone(), app.url(path)).header("Origin", &app.address).send().await.unwrap()).await;
            assert_eq!((a.status, a.code()), (StatusCode::NOT_FOUND, "resource_not_found"), "{method} {path}");
        }
        for (method, path, allow) in [
            (reqwest::Method::DELETE, "/v1/client/sign_ups", "POST, OPTIONS"),
            (reqwest::Method::PUT, "/v1/client", "GET, OPTIONS"),
            (reqwest::Method::POST, "/v1/client/sign_ins/sia_anything", "GET, OPTIONS"),
            (reqwest::Method::GET, "/v1/client/sign_ins/x/attempt_first_factor", "POST, OPTIONS"),
            (reqwest::Method::GET, "/v1/client/sessions/ses_x", "DELETE, OPTIONS"),
            (reqwest::Method::POST, "/v1/openapi.json", "GET, OPTIONS"),
        ] {
            let a = read(client.request(method.clone(), app.url(path)).header("Origin", &app.address).send().await.unwrap()).await;
            assert_eq!((a.status, a.code()), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"), "{method} {path}: {}", a.body);
            assert_eq!(a.headers.get("allow").and_then(|v| v.to_str().ok()), Some(allow), "{method} {path}");
            assert!(a.body["errors"][0]["long_message"].as_str().unwrap().contains(method.as_str()), "{}", a.body);
        }
    }

    async fn an_api_sign_in_ends_the_session_the_browser_held_before() {
        let app = spawn_app().await;
        app.create_account("a@example.com").await;
        app.create_account("b@example.com").await;
        let client = browser();
        let sign_in = |email: &'static str, n: usize| {
            let client = client.clone();
            let app = &app;
            async move {
                let si = post(app, &client, "/v1/client/sign_ins", json!({"identifier": email})).await;
                let id = si.body["id"].as_str().unwrap().to_string();
                let factor = si.body["supported_first_factors"][0]["email_address_id"].clone();
                post(app, &client, &format!("/v1/client/sign_ins/{id}/prepare_first_factor"), json!({"strategy": "email_code", "email_address_id": factor})).await;
                let code = app.smtp.wait_for(email, n).await.code();
                post(app, &client, &format!("/v1/client/sign_ins/{id}/attempt_first_factor"), json!({"strategy": "email_code", "code": code})).await
            }
        };
        let first = sign_in("a@example.com", 2).await;
        let first_session = first.body["created_session_id"].as_str().unwrap().to_string();
        sign_in("b@example.com", 2).await;
        let db = app.db().await;
        let still: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE id = $1").bind(&first_session).fetch_one(&db).await.unwrap();
        assert_eq!(still, 0, "the earlier session was ended, not left alive");
        assert_eq!(get(&app, &client, "/v1/client").await.body["user"]["email_addresses"][0]["email_address"], "b@example.com");
    }
}

/// CORS headers are written on every answer of the API, whatever produced it: a handler's
/// refusal, a body that cannot be read, or an id the router could not even decode.
#[tokio::test]
async fn every_api_error_to_an_allowed_origin_carries_the_cors_headers() {
    let app = spawn_app().await;
    let client = browser();
    let allowed = "https://app.example.com";
    let answers = [
        (
            "unknown flow",
            client.get(app.url("/v1/client/sign_ups/flw_aaaaaaaaaaaaaaaaaaaaaaaaaa")),
        ),
        (
            "id that is not UTF-8",
            client.get(app.url("/v1/client/sign_ups/%FF%FE")),
        ),
        ("unknown endpoint", client.get(app.url("/v1/nope"))),
        (
            "not JSON",
            client
                .post(app.url("/v1/client/sign_ups"))
                .header("Content-Type", "application/json")
                .body("{not json"),
        ),
        (
            "not a JSON body",
            client
                .post(app.url("/v1/client/sign_ups"))
                .header("Content-Type", "text/plain")
                .body("{}"),
        ),
        (
            "not an address",
            client
                .post(app.url("/v1/client/sign_ups"))
                .json(&json!({"email_address": "nope"})),
        ),
    ];
    for (label, req) in answers {
        let resp = req.header("Origin", allowed).send().await.unwrap();
        assert!(
            resp.status().is_client_error(),
            "{label}: {}",
            resp.status()
        );
        let h = resp.headers();
        assert_eq!(
            h.get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap()),
            Some(allowed),
            "{label}"
        );
        assert_eq!(
            h.get("access-control-allow-credentials")
                .map(|v| v.to_str().unwrap()),
            Some("true"),
            "{label}"
        );
        assert!(
            h.get("vary")
                .is_some_and(|v| v.to_str().unwrap().contains("Origin")),
            "{label}"
        );
    }
}
