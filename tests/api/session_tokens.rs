//! Session tokens: a short-lived JWT an app's front end hands its backend, verified against
//! the JWKS by a JWT library none of us wrote (`jsonwebtoken`) and by `POST /v1/sessions/verify`.

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{jwk::JwkSet, Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{browser, spawn_app_with, TestApp};

const SECRET_KEY: &str = "sk_test_0123456789abcdef0123456789abcdef";

async fn app() -> TestApp {
    spawn_app_with(|raw| raw.api.secret_keys = vec![SECRET_KEY.into()]).await
}

/// Signs `email` up through the API in a fresh browser; returns the browser and its session id.
async fn signed_in(app: &TestApp, email: &str) -> (reqwest::Client, String) {
    let client = browser();
    app.create_account(email).await;
    let resp = app.sign_in_with(&client, email).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let me: Value = client
        .get(app.url("/v1/client"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = me["sessions"][0]["id"]
        .as_str()
        .expect("a session")
        .to_string();
    (client, sid)
}

async fn token(
    app: &TestApp,
    client: &reqwest::Client,
    sid: &str,
    origin: &str,
) -> reqwest::Response {
    client
        .post(app.url(&format!("/v1/client/sessions/{sid}/tokens")))
        .header("Origin", origin)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
}

async fn jwt(app: &TestApp, client: &reqwest::Client, sid: &str) -> String {
    let resp = token(app, client, sid, &app.address).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "token");
    body["jwt"].as_str().unwrap().to_string()
}

async fn verify(app: &TestApp, key: Option<&str>, token: &str) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .post(app.url("/v1/sessions/verify"))
        .json(&json!({ "token": token }));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.json().await.unwrap())
}

/// The token verified the way an app's backend would: the JWKS, then `jsonwebtoken`.
async fn verify_with_the_jwks(app: &TestApp, token: &str) -> jsonwebtoken::errors::Result<Value> {
    let jwks: JwkSet = reqwest::get(app.url("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(token)?;
    let jwk = jwks
        .find(header.kid.as_deref().unwrap_or_default())
        .expect("the token's key is in the JWKS");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[&app.address]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
    validation.leeway = 0;
    Ok(jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk)?, &validation)?.claims)
}

crate::backend_tests! {
    async fn a_session_token_verifies_against_the_jwks_with_a_standard_jwt_library() {
        let app = app().await;
        let (client, sid) = signed_in(&app, "jwt@example.com").await;
        let token = jwt(&app, &client, &sid).await;
        let claims = verify_with_the_jwks(&app, &token).await.expect("a valid token");
        assert_eq!(claims["sid"], sid.as_str());
        assert!(claims["sub"].as_str().unwrap().starts_with("usr_"));
        assert_eq!(claims["azp"], app.address.as_str());
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 60);
    }

    async fn the_verify_endpoint_answers_active_only_for_a_live_sessions_valid_token() {
        let app = app().await;
        let (client, sid) = signed_in(&app, "verify@example.com").await;
        let token = jwt(&app, &client, &sid).await;
        let (status, body) = verify(&app, Some(SECRET_KEY), &token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["active"], true);
        assert_eq!(body["sid"], sid.as_str());

        // Tampered, foreign, `alg: none`, garbage: inactive and nothing more.
        let (h, rest) = token.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        let none_header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let mut flipped = s.to_string();
        flipped.replace_range(0..1, if s.starts_with('A') { "B" } else { "A" });
        for bad in [format!("{h}.{p}.{flipped}"), format!("{none_header}.{p}."), format!("{h}.{p}"), "not a token".to_string()] {
            let (status, body) = verify(&app, Some(SECRET_KEY), &bad).await;
            assert_eq!((status, body), (StatusCode::OK, json!({"active": false})), "{bad}");
        }
        // Expired: 60 s later, by the server's clock.
        app.clock.advance(Duration::from_secs(60));
        assert_eq!(verify(&app, Some(SECRET_KEY), &token).await.1, json!({"active": false}));

        // A fresh token, then sign-out: inactive at once.
        let token = jwt(&app, &client, &sid).await;
        assert_eq!(verify(&app, Some(SECRET_KEY), &token).await.1["active"], true);
        let out = client.delete(app.url(&format!("/v1/client/sessions/{sid}"))).header("Origin", &app.address).send().await.unwrap();
        assert_eq!(out.status(), StatusCode::OK);
        assert_eq!(verify(&app, Some(SECRET_KEY), &token).await.1, json!({"active": false}));
        // And a session that ended gets no new token.
        assert_eq!(token_status(&app, &client, &sid).await, StatusCode::NOT_FOUND);
    }

    async fn the_verify_endpoint_refuses_a_wrong_or_missing_secret_key_and_audits_it() {
        let app = app().await;
        for key in [None, Some("sk_test_0123456789abcdef0123456789abcdeX"), Some("pk_something")] {
            let (status, body) = verify(&app, key, "x.y.z").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{key:?}: {body}");
            assert_eq!(body["errors"][0]["code"], "secret_key_invalid", "{key:?}: {body}");
        }
        assert_eq!(app.count("SELECT COUNT(*) FROM audit_events WHERE event = 'backend_key_refused'").await, 3);
        // The client API does not take a secret key as a client token.
        let resp = reqwest::Client::new().get(app.url("/v1/client")).bearer_auth(SECRET_KEY).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }

    async fn only_the_client_holding_a_session_gets_tokens_for_it() {
        let app = app().await;
        let (_, sid) = signed_in(&app, "owner@example.com").await;
        let stranger = browser();
        stranger.get(app.url("/sign-in")).send().await.unwrap();
        assert_eq!(token_status(&app, &stranger, &sid).await, StatusCode::NOT_FOUND);
        let (other, other_sid) = signed_in(&app, "other@example.com").await;
        assert_eq!(token_status(&app, &other, &sid).await, StatusCode::NOT_FOUND);
        assert_eq!(token_status(&app, &other, &other_sid).await, StatusCode::OK);
        // From a site that is not allowed: refused like every unsafe API call.
        let resp = token(&app, &other, &other_sid, "https://evil.test").await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    }

    async fn the_token_names_the_allowed_origin_that_asked_for_it() {
        let app = spawn_app_with(|raw| {
            raw.api.secret_keys = vec![SECRET_KEY.into()];
            raw.cors_allowed_origins = Some(vec!["https://app.example.com".into()]);
        })
        .await;
        let (client, sid) = signed_in(&app, "azp@example.com").await;
        let resp = token(&app, &client, &sid, "https://app.example.com").await;
        assert_eq!(resp.status(), StatusCode::OK);
        let jwt = resp.json::<Value>().await.unwrap()["jwt"].as_str().unwrap().to_string();
        assert_eq!(verify_with_the_jwks(&app, &jwt).await.unwrap()["azp"], "https://app.example.com");
    }
}

async fn token_status(app: &TestApp, client: &reqwest::Client, sid: &str) -> StatusCode {
    token(app, client, sid, &app.address).await.status()
}

crate::backend_tests! {
    async fn the_backend_reads_the_user_a_token_names() {
        let app = app().await;
        let (client, sid) = signed_in(&app, "Backend.User@example.com").await;
        let token = jwt(&app, &client, &sid).await;
        let sub = verify(&app, Some(SECRET_KEY), &token).await.1["sub"].as_str().unwrap().to_string();
        let http = reqwest::Client::new();
        let resp = http.get(app.url(&format!("/v1/users/{sub}"))).bearer_auth(SECRET_KEY).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let user: Value = resp.json().await.unwrap();
        assert_eq!(user["object"], "user");
        assert_eq!(user["id"], sub.as_str());
        assert_eq!(user["email_addresses"][0]["email_address"], "Backend.User@example.com");
        assert_eq!(user["primary_email_address_id"], user["email_addresses"][0]["id"]);
        let missing = http.get(app.url("/v1/users/usr_00000000000000000000000000")).bearer_auth(SECRET_KEY).send().await.unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let unauthorized = http.get(app.url(&format!("/v1/users/{sub}"))).send().await.unwrap();
        assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
        // A browser's own cookies are no key.
        let with_cookies = client.get(app.url(&format!("/v1/users/{sub}"))).send().await.unwrap();
        assert_eq!(with_cookies.status(), StatusCode::UNAUTHORIZED);
    }
}

crate::backend_tests! {
    async fn a_rotated_key_signs_new_tokens_while_the_old_one_still_verifies_until_retired() {
        let app = spawn_app_with(|raw| {
            raw.api.secret_keys = vec![SECRET_KEY.into()];
            raw.signing_keys_reload_secs = 1;
        })
        .await;
        let (client, sid) = signed_in(&app, "rotate@example.com").await;
        let before = jwt(&app, &client, &sid).await;
        let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
        let old_kid = kid(&before);

        // `latchkey keys rotate`, run as an operator would, on the same database and secret.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .args(["keys", "rotate", "--activate-in-secs", "0"])
            .env("LATCHKEY_DATABASE_URL", &app.raw.database_url)
            .env("LATCHKEY_SECRET", app.raw.secret.as_deref().unwrap())
            .env("LATCHKEY_SMTP_URL", app.raw.smtp_url.as_deref().unwrap())
            .env("LATCHKEY_DEV_MODE", "false")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let printed = String::from_utf8(out.stdout).unwrap();
        assert!(printed.starts_with("EdDSA\t"), "{printed}");

        // The running instance picks it up: both keys published, the new one signs (from its
        // activation, on the wall clock the command read: the app's injected clock follows).
        app.clock.advance(Duration::from_secs(5));
        crate::helpers::until("the new key signs", || {
            let (app, client, sid, old_kid) = (&app, &client, &sid, &old_kid);
            async move { kid(&jwt(app, client, sid).await) != *old_kid }
        })
        .await;
        let jwks: JwkSet = reqwest::get(app.url("/.well-known/jwks.json")).await.unwrap().json().await.unwrap();
        assert_eq!(jwks.keys.len(), 2, "the old key stays published");
        let after = jwt(&app, &client, &sid).await;
        for token in [&before, &after] {
            let verified: Value = reqwest::Client::new()
                .post(app.url("/v1/sessions/verify"))
                .bearer_auth(SECRET_KEY)
                .json(&json!({"token": token}))
                .send().await.unwrap().json().await.unwrap();
            assert_eq!(verified["active"], true, "{verified}");
        }

        // Once its tokens have all expired, the old key is gone.
        app.clock.advance(Duration::from_secs(60 * 60));
        crate::helpers::until("the old key is retired", || {
            let app = &app;
            async move {
                let jwks: JwkSet = reqwest::get(app.url("/.well-known/jwks.json")).await.unwrap().json().await.unwrap();
                jwks.keys.len() == 1
            }
        })
        .await;
    }
}
