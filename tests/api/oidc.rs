//! The OpenID Connect provider, driven by the `openidconnect` crate as the relying party (a
//! client library none of us wrote): discovery, authorization with PKCE through the hosted
//! sign-in (a code by email over real SMTP), the token exchange, the ID token verified by the
//! crate, userinfo, refresh rotation and reuse detection, revocation and RP-initiated logout;
//! then the refusals, each on its own.

use std::time::Duration;

use base64::Engine;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreUserInfoClaims,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use reqwest::StatusCode;
use serde_json::Value;

use latchkey::config::OidcClientConfig;
use openidconnect::{EndpointMaybeSet, EndpointNotSet, EndpointSet};

use crate::helpers::{browser, location, spawn_app_with, TestApp};

/// The crate's client as discovery and a revocation URL leave it.
type Rp = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

const WEB: &str = "web-app";
const WEB_SECRET: &str = "web-app-secret-0123456789abcdef0123456789";
const CALLBACK: &str = "https://app.example.com/callback";
const LOGGED_OUT: &str = "https://app.example.com/logged-out";
const SPA: &str = "spa";
const SPA_CALLBACK: &str = "https://spa.example.com/cb";
const ES: &str = "es-app";
const ES_SECRET: &str = "es-app-secret-0123456789abcdef0123456789ab";
const ES_CALLBACK: &str = "https://app.example.com/es";
const ED: &str = "ed-app";
const ED_CALLBACK: &str = "https://app.example.com/ed";
const EMAIL: &str = "ada@example.com";

async fn app() -> TestApp {
    spawn_app_with(|raw| {
        raw.oidc.clients = vec![
            OidcClientConfig {
                id: WEB.into(),
                name: "Acme Web".into(),
                secret: Some(WEB_SECRET.into()),
                redirect_uris: vec![CALLBACK.into()],
                post_logout_redirect_uris: vec![LOGGED_OUT.into()],
                ..OidcClientConfig::default()
            },
            OidcClientConfig {
                id: SPA.into(),
                name: "Acme SPA".into(),
                redirect_uris: vec![SPA_CALLBACK.into()],
                scopes: Some(vec!["openid".into(), "email".into()]),
                require_consent: true,
                ..OidcClientConfig::default()
            },
            OidcClientConfig {
                id: ES.into(),
                secret: Some(ES_SECRET.into()),
                redirect_uris: vec![ES_CALLBACK.into()],
                id_token_signed_response_alg: Some("ES256".into()),
                ..OidcClientConfig::default()
            },
            OidcClientConfig {
                id: ED.into(),
                secret: Some(ES_SECRET.into()),
                redirect_uris: vec![ED_CALLBACK.into()],
                id_token_signed_response_alg: Some("EdDSA".into()),
                ..OidcClientConfig::default()
            },
        ];
    })
    .await
}

fn http() -> openidconnect::reqwest::Client {
    openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn rp(app: &TestApp, id: &str, secret: Option<&str>, redirect: &str) -> Rp {
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(app.address.clone()).unwrap(), &http())
            .await
            .expect("discovery");
    CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(id.into()),
        secret.map(|s| ClientSecret::new(s.into())),
    )
    .set_redirect_uri(RedirectUrl::new(redirect.into()).unwrap())
}

/// The query parameters of a URL.
fn query(url: &str) -> Vec<(String, String)> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn param(url: &str, name: &str) -> Option<String> {
    query(url)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Follows `url` in `browser` through the hosted sign-in (signing `email` in by a code from
/// the mailbox when asked) until it leaves for `leaves_for`; answers that URL.
async fn authorize(
    app: &TestApp,
    browser: &reqwest::Client,
    url: &str,
    email: &str,
    leaves_for: &str,
) -> String {
    let mut next = url.to_string();
    for _ in 0..10 {
        if next.starts_with(leaves_for) {
            return next;
        }
        let resp = app.get_with(browser, &next).await;
        if resp.status() == StatusCode::OK && next.contains("/oauth/authorize") {
            // A consent page: the caller answers it.
            return next;
        }
        if resp.status() == StatusCode::OK {
            // The sign-in page: type the address, then the code.
            let before = app.smtp.messages_to(email).len();
            let path = next
                .strip_prefix(app.address.as_str())
                .unwrap_or(&next)
                .to_string();
            let resp = app.submit_identifier_with(browser, &path, email).await;
            assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{next}");
            let verify = location(&resp);
            let code = app.smtp.wait_for(email, before + 1).await.code();
            let resp = app.enter_code_with(browser, &verify, &code).await;
            assert_eq!(resp.status(), StatusCode::SEE_OTHER);
            next = app.url(&location(&resp));
            continue;
        }
        assert!(resp.status().is_redirection(), "{next}: {}", resp.status());
        next = app.url(&location(&resp));
    }
    panic!("the authorization never left for {leaves_for}: {next}");
}

/// The crate's token exchange of `login`'s code (with its PKCE verifier).
async fn exchange(client: &Rp, login: &Login) -> openidconnect::core::CoreTokenResponse {
    client
        .exchange_code(AuthorizationCode::new(login.code.clone()))
        .unwrap()
        .set_pkce_verifier(PkceCodeVerifier::new(login.verifier.secret().clone()))
        .request_async(&http())
        .await
        .expect("token exchange")
}

struct Login {
    code: String,
    verifier: PkceCodeVerifier,
    nonce: Nonce,
}

/// The crate's authorization URL for `client`, followed in `browser` to a code.
async fn log_in(
    app: &TestApp,
    client: &Rp,
    browser: &reqwest::Client,
    scopes: &[&str],
    callback: &str,
) -> Login {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = client.authorize_url(
        CoreAuthenticationFlow::AuthorizationCode,
        CsrfToken::new_random,
        Nonce::new_random,
    );
    for s in scopes {
        req = req.add_scope(Scope::new(s.to_string()));
    }
    let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
    let back = authorize(app, browser, url.as_str(), EMAIL, callback).await;
    assert_eq!(
        param(&back, "state").as_deref(),
        Some(state.secret().as_str())
    );
    // RFC 9207: the issuer in the response, so a client can tell providers apart.
    assert_eq!(param(&back, "iss").as_deref(), Some(app.address.as_str()));
    Login {
        code: param(&back, "code").expect("a code"),
        verifier,
        nonce,
    }
}

async fn userinfo_status(app: &TestApp, token: &str) -> StatusCode {
    reqwest::Client::new()
        .get(app.url("/oauth/userinfo"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

async fn post_form(app: &TestApp, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(app.url(path))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

crate::backend_tests! {
    async fn the_whole_code_flow_with_a_stock_client_library() {
        let app = app().await;
        app.create_account(EMAIL).await;
        let client = rp(&app, WEB, Some(WEB_SECRET), CALLBACK).await;
        let b = browser();
        let login = log_in(&app, &client, &b, &["email", "offline_access"], CALLBACK).await;

        let tokens = exchange(&client, &login).await;
        let id_token = tokens.id_token().expect("an ID token");
        let claims = id_token
            .claims(&client.id_token_verifier(), &login.nonce)
            .expect("the crate verifies the ID token (RS256, iss, aud, exp, nonce)");
        assert_eq!(claims.email().map(|e| e.as_str()), Some(EMAIL));
        assert_eq!(claims.email_verified(), Some(true));
        assert!(claims.subject().as_str().starts_with("usr_"));
        assert!(claims.auth_time().is_some());
        let amr: Vec<String> = claims.auth_method_refs().unwrap().iter().map(|a| a.as_str().to_string()).collect();
        assert_eq!(amr, vec!["otp", "email"]);
        assert_eq!(tokens.expires_in(), Some(Duration::from_secs(300)));

        let info: CoreUserInfoClaims = client
            .user_info(tokens.access_token().clone(), None)
            .unwrap()
            .request_async(&http())
            .await
            .expect("userinfo");
        assert_eq!(info.subject(), claims.subject());
        assert_eq!(info.email().map(|e| e.as_str()), Some(EMAIL));

        // Refresh: a new refresh token each time; the old one, presented again, revokes the
        // whole family (the newest refresh token and the access tokens included).
        let first = tokens.refresh_token().expect("offline_access gives a refresh token").clone();
        let refreshed = client
            .exchange_refresh_token(&first)
            .unwrap()
            .request_async(&http())
            .await
            .expect("refresh");
        let second = refreshed.refresh_token().expect("rotated").clone();
        assert_ne!(first.secret(), second.secret());
        let refreshed_id = refreshed.id_token().expect("a refreshed ID token");
        let again = refreshed_id
            .claims(&client.id_token_verifier(), |_: Option<&Nonce>| Ok(()))
            .unwrap();
        assert_eq!(again.subject(), claims.subject());
        assert_eq!(again.auth_time(), claims.auth_time());
        assert_eq!(userinfo_status(&app, refreshed.access_token().secret()).await, StatusCode::OK);

        // A refresh may ask for fewer scopes: its tokens carry only those (no email claim).
        let narrowed = client
            .exchange_refresh_token(&second)
            .unwrap()
            .add_scope(Scope::new("openid".into()))
            .request_async(&http())
            .await
            .expect("a narrowed refresh");
        assert_eq!(
            narrowed.scopes().map(|s| s.iter().map(|x| x.to_string()).collect::<Vec<_>>()),
            Some(vec!["openid".to_string()])
        );
        let info: Value = reqwest::Client::new()
            .get(app.url("/oauth/userinfo"))
            .bearer_auth(narrowed.access_token().secret())
            .send().await.unwrap().json().await.unwrap();
        assert!(info.get("email").is_none(), "{info}");
        assert!(narrowed
            .id_token()
            .unwrap()
            .claims(&client.id_token_verifier(), |_: Option<&Nonce>| Ok(()))
            .unwrap()
            .email()
            .is_none());
        let second = narrowed.refresh_token().expect("rotated again").clone();
        // Asking for more than the grant is refused, and the token stays usable.
        let wider = client
            .exchange_refresh_token(&second)
            .unwrap()
            .add_scope(Scope::new("phone".into()))
            .request_async(&http())
            .await;
        assert!(wider.is_err());

        let reuse = client.exchange_refresh_token(&first).unwrap().request_async(&http()).await;
        assert!(reuse.is_err(), "a used refresh token is refused");
        let after = client.exchange_refresh_token(&second).unwrap().request_async(&http()).await;
        assert!(after.is_err(), "the reuse revoked the family");
        assert_eq!(userinfo_status(&app, refreshed.access_token().secret()).await, StatusCode::UNAUTHORIZED);
        assert_eq!(userinfo_status(&app, tokens.access_token().secret()).await, StatusCode::UNAUTHORIZED);

        // A second login in the same browser needs no code (the session is there); revoking
        // its refresh token ends that grant.
        let login = log_in(&app, &client, &b, &["offline_access"], CALLBACK).await;
        let tokens = exchange(&client, &login).await;
        let refresh = tokens.refresh_token().unwrap().clone();
        // (The crate sends revocations only over https, RFC 7009 §2: posted by hand here,
        // with client_secret_basic, on the test's plain-http loopback.)
        let resp = reqwest::Client::new()
            .post(app.url("/oauth/revoke"))
            .basic_auth(WEB, Some(WEB_SECRET))
            .form(&[("token", refresh.secret().as_str()), ("token_type_hint", "refresh_token")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(client.exchange_refresh_token(&refresh).unwrap().request_async(&http()).await.is_err());
        assert_eq!(userinfo_status(&app, tokens.access_token().secret()).await, StatusCode::UNAUTHORIZED);

        // RP-initiated logout with the ID token: the session ends, back to the client.
        let login = log_in(&app, &client, &b, &["offline_access"], CALLBACK).await;
        let tokens = exchange(&client, &login).await;
        let hint = tokens.id_token().unwrap().to_string();
        let url = format!(
            "/oauth/end_session?id_token_hint={hint}&post_logout_redirect_uri={}&state=bye",
            urlencode(LOGGED_OUT)
        );
        let resp = app.get_with(&b, &url).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&resp), format!("{LOGGED_OUT}?state=bye"));
        let resp = app.get_with(&b, "/user").await;
        assert!(location(&resp).starts_with("/sign-in"), "signed out");
        assert!(client.exchange_refresh_token(tokens.refresh_token().unwrap()).unwrap().request_async(&http()).await.is_err(),
            "signing out ends the session's refresh tokens");
        assert_eq!(userinfo_status(&app, tokens.access_token().secret()).await, StatusCode::UNAUTHORIZED);
    }

    async fn es256_and_eddsa_clients_get_their_own_tokens_and_the_jwks_has_every_key() {
        let app = app().await;
        app.create_account(EMAIL).await;
        let client = rp(&app, ES, Some(ES_SECRET), ES_CALLBACK).await;
        let b = browser();
        let login = log_in(&app, &client, &b, &[], ES_CALLBACK).await;
        let tokens = exchange(&client, &login).await;
        let verifier = client
            .id_token_verifier()
            .set_allowed_algs(vec![CoreJwsSigningAlgorithm::EcdsaP256Sha256]);
        tokens.id_token().unwrap().claims(&verifier, &login.nonce).expect("ES256 ID token");
        // An EdDSA client (the benchmark's): the crate verifies its Ed25519 ID token too.
        let ed = rp(&app, ED, Some(ES_SECRET), ED_CALLBACK).await;
        let login_ed = log_in(&app, &ed, &b, &[], ED_CALLBACK).await;
        let ed_tokens = exchange(&ed, &login_ed).await;
        let ed_verifier = ed.id_token_verifier().set_allowed_algs(vec![CoreJwsSigningAlgorithm::EdDsa]);
        ed_tokens.id_token().unwrap().claims(&ed_verifier, &login_ed.nonce).expect("EdDSA ID token");
        // Without the email scope, no email claim.
        let info: Value = reqwest::Client::new()
            .get(app.url("/oauth/userinfo"))
            .bearer_auth(tokens.access_token().secret())
            .send().await.unwrap().json().await.unwrap();
        assert!(info.get("email").is_none(), "{info}");
        assert!(tokens.refresh_token().is_none(), "no offline_access, no refresh token");
        let jwks: Value = reqwest::get(app.url("/.well-known/jwks.json")).await.unwrap().json().await.unwrap();
        let mut algs: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["alg"].as_str().unwrap()).collect();
        algs.sort();
        assert_eq!(algs, vec!["ES256", "EdDSA", "RS256"]);
        let discovery: Value = reqwest::get(app.url("/.well-known/openid-configuration")).await.unwrap().json().await.unwrap();
        assert_eq!(discovery["code_challenge_methods_supported"], serde_json::json!(["S256"]));
        assert_eq!(discovery["response_types_supported"], serde_json::json!(["code"]));
    }

    async fn the_profile_scope_releases_the_name() {
        let app = app().await;
        app.create_account(EMAIL).await;
        let client = rp(&app, WEB, Some(WEB_SECRET), CALLBACK).await;
        let b = browser();
        let login = log_in(&app, &client, &b, &[], CALLBACK).await;
        drop(login);
        let resp = b
            .patch(app.url("/v1/me"))
            .header("Origin", &app.address)
            .json(&serde_json::json!({"first_name": "Ada", "last_name": "Lovelace"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        for (scopes, expect_name) in [(&["profile"][..], true), (&[][..], false)] {
            let login = log_in(&app, &client, &b, scopes, CALLBACK).await;
            let tokens = exchange(&client, &login).await;
            let claims = tokens.id_token().unwrap().claims(&client.id_token_verifier(), &login.nonce).unwrap();
            let given = claims.given_name().and_then(|n| n.get(None)).map(|n| n.as_str().to_string());
            let family = claims.family_name().and_then(|n| n.get(None)).map(|n| n.as_str().to_string());
            let name = claims.name().and_then(|n| n.get(None)).map(|n| n.as_str().to_string());
            if expect_name {
                assert_eq!((given.as_deref(), family.as_deref(), name.as_deref()), (Some("Ada"), Some("Lovelace"), Some("Ada Lovelace")));
            } else {
                assert_eq!((given, family, name), (None, None, None), "no profile scope, no name");
            }
        }
    }

    async fn an_inactive_session_takes_its_grants_along_and_refreshing_keeps_it_in_use() {
        let app = spawn_app_with(|raw| {
            raw.sessions.inactivity_timeout_secs = 600;
            raw.oidc.clients = vec![OidcClientConfig {
                id: WEB.into(),
                secret: Some(WEB_SECRET.into()),
                redirect_uris: vec![CALLBACK.into()],
                ..OidcClientConfig::default()
            }];
        })
        .await;
        app.create_account(EMAIL).await;
        let client = rp(&app, WEB, Some(WEB_SECRET), CALLBACK).await;
        let b = browser();
        let login = log_in(&app, &client, &b, &["offline_access"], CALLBACK).await;
        let tokens = exchange(&client, &login).await;
        // The app refreshes every 5 minutes for 20 minutes: the session stays in use.
        let mut refresh = tokens.refresh_token().unwrap().clone();
        for _ in 0..4 {
            app.clock.advance(Duration::from_secs(300));
            let next = client.exchange_refresh_token(&refresh).unwrap().request_async(&http()).await.expect("refresh while in use");
            refresh = next.refresh_token().unwrap().clone();
        }
        assert_eq!(app.get_with(&b, "/user").await.status(), StatusCode::OK, "the Latchkey session lives on");
        // Then nobody uses it for 10 minutes: the session ends, and its grant with it.
        app.clock.advance(Duration::from_secs(601));
        assert!(client.exchange_refresh_token(&refresh).unwrap().request_async(&http()).await.is_err());
        let (_, body) = post_form(&app, "/oauth/introspect", &[("token", refresh.secret().as_str()), ("client_id", WEB), ("client_secret", WEB_SECRET)]).await;
        assert_eq!(body, serde_json::json!({"active": false}));
        assert_eq!(app.get_with(&b, "/user").await.status(), StatusCode::SEE_OTHER);
    }

    async fn a_code_is_single_use_bound_to_client_uri_and_verifier_and_short_lived() {
        let app = app().await;
        app.create_account(EMAIL).await;
        let client = rp(&app, WEB, Some(WEB_SECRET), CALLBACK).await;
        let b = browser();
        let exchange = |code: String, verifier: Option<String>| {
            let mut form = vec![
                ("grant_type".to_string(), "authorization_code".to_string()),
                ("code".to_string(), code),
                ("redirect_uri".to_string(), CALLBACK.to_string()),
                ("client_id".to_string(), WEB.to_string()),
                ("client_secret".to_string(), WEB_SECRET.to_string()),
            ];
            if let Some(v) = verifier {
                form.push(("code_verifier".into(), v));
            }
            let url = app.url("/oauth/token");
            async move {
                let resp = reqwest::Client::new().post(url).form(&form).send().await.unwrap();
                let status = resp.status();
                assert_eq!(resp.headers()["cache-control"], "no-store");
                (status, resp.json::<Value>().await.unwrap())
            }
        };

        // A wrong verifier, then none: refused, and the code is used up by the try.
        for wrong in [Some("x".repeat(43)), None] {
            let login = log_in(&app, &client, &b, &[], CALLBACK).await;
            let (status, body) = exchange(login.code.clone(), wrong).await;
            assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{body}");
            let (status, _) = exchange(login.code, Some(login.verifier.secret().clone())).await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
        }

        // Replay: the second exchange is refused and revokes what the first issued.
        let login = log_in(&app, &client, &b, &[], CALLBACK).await;
        let (status, first) = exchange(login.code.clone(), Some(login.verifier.secret().clone())).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        let access = first["access_token"].as_str().unwrap();
        assert_eq!(userinfo_status(&app, access).await, StatusCode::OK);
        let (status, body) = exchange(login.code, Some(login.verifier.secret().clone())).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
        assert_eq!(userinfo_status(&app, access).await, StatusCode::UNAUTHORIZED);

        // Expired: 60 s on the injected clock.
        let login = log_in(&app, &client, &b, &[], CALLBACK).await;
        app.clock.advance(Duration::from_secs(60));
        let (status, body) = exchange(login.code, Some(login.verifier.secret().clone())).await;
        assert_eq!((status, body["error_description"].as_str()), (StatusCode::BAD_REQUEST, Some("the code has expired")));

        // Another client's code, and a wrong redirect URI.
        let login = log_in(&app, &client, &b, &[], CALLBACK).await;
        let (status, body) = post_form(&app, "/oauth/token", &[
            ("grant_type", "authorization_code"), ("code", &login.code), ("redirect_uri", CALLBACK),
            ("client_id", ES), ("client_secret", ES_SECRET),
            ("code_verifier", login.verifier.secret()),
        ]).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{body}");
        let login = log_in(&app, &client, &b, &[], CALLBACK).await;
        let (status, body) = post_form(&app, "/oauth/token", &[
            ("grant_type", "authorization_code"), ("code", &login.code), ("redirect_uri", "https://app.example.com/callback/"),
            ("client_id", WEB), ("client_secret", WEB_SECRET), ("code_verifier", login.verifier.secret()),
        ]).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{body}");

        // A wrong secret: 401 invalid_client (Basic gets a challenge).
        let resp = reqwest::Client::new()
            .post(app.url("/oauth/token"))
            .basic_auth(WEB, Some("not-the-secret-0123456789abcdef0123456789"))
            .form(&[("grant_type", "authorization_code"), ("code", "x")])
            .send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(resp.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
        let (status, body) = post_form(&app, "/oauth/token", &[("grant_type", "authorization_code"), ("code", "x"), ("client_id", WEB)]).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
        let (status, body) = post_form(&app, "/oauth/token", &[("grant_type", "password"), ("client_id", WEB), ("client_secret", WEB_SECRET)]).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("unsupported_grant_type")));
    }

    async fn bad_authorization_requests_never_reach_an_unregistered_address() {
        let app = app().await;
        let b = browser();
        let base = format!("/oauth/authorize?client_id={WEB}&response_type=code&scope=openid&state=s1");
        for bad in [
            "https://app.example.com/callback/",
            "https://app.example.com:8443/callback",
            "https://APP.example.com/callback",
            "https://app.example.com/Callback",
            "https://app.example.com.evil.test/callback",
            "https://app.example.com@evil.test/callback",
            "//evil.test/callback",
            "javascript:alert(1)",
            "https://app.example.com/callback%0d%0aLocation:%20https://evil.test",
        ] {
            let resp = app.get_with(&b, &format!("{base}&redirect_uri={}", urlencode(bad))).await;
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
            assert!(resp.headers().get("location").is_none(), "{bad}");
        }
        let resp = app.get_with(&b, &format!("/oauth/authorize?client_id=nobody&redirect_uri={}&response_type=code&scope=openid", urlencode(CALLBACK))).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

        // prompt=none without a session: login_required at the client, with state and iss.
        let resp = app.get_with(&b, &format!("{base}&redirect_uri={}&prompt=none", urlencode(CALLBACK))).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let to = location(&resp);
        assert!(to.starts_with(CALLBACK), "{to}");
        assert_eq!(param(&to, "error").as_deref(), Some("login_required"));
        assert_eq!(param(&to, "state").as_deref(), Some("s1"));
        assert_eq!(param(&to, "iss").as_deref(), Some(app.address.as_str()));

        // A public client without PKCE: invalid_request at its redirect URI.
        let resp = app.get_with(&b, &format!("/oauth/authorize?client_id={SPA}&redirect_uri={}&response_type=code&scope=openid", urlencode(SPA_CALLBACK))).await;
        assert_eq!(param(&location(&resp), "error").as_deref(), Some("invalid_request"));
        // Implicit and hybrid flows do not exist.
        let resp = app.get_with(&b, &format!("/oauth/authorize?client_id={WEB}&redirect_uri={}&response_type=id_token&scope=openid", urlencode(CALLBACK))).await;
        assert_eq!(param(&location(&resp), "error").as_deref(), Some("unsupported_response_type"));
    }

    async fn a_client_that_asks_for_consent_gets_it_once_and_a_no_is_access_denied() {
        let app = app().await;
        app.create_account(EMAIL).await;
        let b = browser();
        let (challenge, _verifier) = PkceCodeChallenge::new_random_sha256();
        let url = format!(
            "/oauth/authorize?client_id={SPA}&redirect_uri={}&response_type=code&scope=openid+email&state=c1&code_challenge={}&code_challenge_method=S256",
            urlencode(SPA_CALLBACK), challenge.as_str()
        );
        // Signing in leads to the consent page, which names the client and what it asks.
        let consent_url = authorize(&app, &b, &url, EMAIL, SPA_CALLBACK).await;
        let page = app.page_with(&b, &consent_url).await;
        assert!(page.contains("Allow Acme SPA?") && page.contains("See your email address"), "{}", page.html);
        let resp = app.submit_with(&b, &page.form("/oauth/consent").set("decision", "allow")).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let to = location(&resp);
        assert!(to.starts_with(SPA_CALLBACK) && param(&to, "code").is_some(), "{to}");
        assert_eq!(param(&to, "state").as_deref(), Some("c1"));
        // Asked once: the next authorization goes straight back with a code.
        let resp = app.get_with(&b, &url).await;
        let to = location(&resp);
        assert!(to.starts_with(SPA_CALLBACK) && param(&to, "code").is_some(), "{to}");
        // prompt=consent asks again; "Cancel" is access_denied at the client.
        let page = app.page_with(&b, &format!("{url}&prompt=consent")).await;
        assert_eq!(page.status, StatusCode::OK);
        let resp = app.submit_with(&b, &page.form("/oauth/consent").set("decision", "deny")).await;
        let to = location(&resp);
        assert_eq!(param(&to, "error").as_deref(), Some("access_denied"), "{to}");
        // The consent form needs the session's CSRF token.
        let forged = page.form("/oauth/consent").set("decision", "allow").set("csrf_token", "forged");
        assert_eq!(app.submit_with(&b, &forged).await.status(), StatusCode::FORBIDDEN);
    }

    async fn prompt_login_signs_in_again_although_signed_in() {
        let app = app().await;
        app.create_account(EMAIL).await;
        let client = rp(&app, WEB, Some(WEB_SECRET), CALLBACK).await;
        let b = browser();
        let first = log_in(&app, &client, &b, &[], CALLBACK).await;
        drop(first);
        let sent = app.smtp.messages_to(EMAIL).len();
        let (url, _, _) = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_prompt(openidconnect::core::CoreAuthPrompt::Login)
            .url();
        let back = authorize(&app, &b, url.as_str(), EMAIL, CALLBACK).await;
        assert!(param(&back, "code").is_some());
        assert_eq!(app.smtp.messages_to(EMAIL).len(), sent + 1, "a new code was needed");
    }

    async fn tokens_are_not_interchangeable_and_forged_ones_are_refused() {
        let app = app().await;
        app.create_account(EMAIL).await;
        let client = rp(&app, WEB, Some(WEB_SECRET), CALLBACK).await;
        let b = browser();
        let login = log_in(&app, &client, &b, &["email"], CALLBACK).await;
        let tokens = exchange(&client, &login).await;
        let access = tokens.access_token().secret().clone();
        let id_token = tokens.id_token().unwrap().to_string();
        assert_eq!(userinfo_status(&app, &access).await, StatusCode::OK);
        // An ID token is not an access token.
        assert_eq!(userinfo_status(&app, &id_token).await, StatusCode::UNAUTHORIZED);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (header, rest) = access.split_once('.').unwrap();
        let (payload, _) = rest.split_once('.').unwrap();
        let header: Value = serde_json::from_slice(&b64.decode(header).unwrap()).unwrap();
        let kid = header["kid"].as_str().unwrap();
        // alg none, HS256 keyed with the public key, an unknown kid.
        let forged = |h: Value, sig: &str| format!("{}.{payload}.{sig}", b64.encode(h.to_string()));
        for token in [
            forged(serde_json::json!({"alg": "none", "typ": "at+jwt", "kid": kid}), ""),
            forged(serde_json::json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}), &hs256_with_public_key(&app, kid, &access).await),
            forged(serde_json::json!({"alg": "RS256", "typ": "at+jwt", "kid": "unknown"}), rest.split_once('.').unwrap().1),
        ] {
            assert_eq!(userinfo_status(&app, &token).await, StatusCode::UNAUTHORIZED, "{token}");
        }
        // Expired by a second.
        app.clock.advance(Duration::from_secs(300));
        assert_eq!(userinfo_status(&app, &access).await, StatusCode::UNAUTHORIZED);
        // Introspection: active only for the client's own live tokens.
        let login = log_in(&app, &client, &b, &["offline_access"], CALLBACK).await;
        let tokens = exchange(&client, &login).await;
        let access = tokens.access_token().secret();
        let refresh = tokens.refresh_token().unwrap().secret();
        for (token, kind) in [(access.as_str(), "access_token"), (refresh.as_str(), "refresh_token")] {
            let (status, body) = post_form(&app, "/oauth/introspect", &[("token", token), ("client_id", WEB), ("client_secret", WEB_SECRET)]).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!((body["active"].as_bool(), body["token_type"].as_str()), (Some(true), Some(kind)), "{body}");
            let (_, body) = post_form(&app, "/oauth/introspect", &[("token", token), ("client_id", ES), ("client_secret", ES_SECRET)]).await;
            assert_eq!(body, serde_json::json!({"active": false}));
        }
        let (_, body) = post_form(&app, "/oauth/introspect", &[("token", &id_token), ("client_id", WEB), ("client_secret", WEB_SECRET)]).await;
        assert_eq!(body, serde_json::json!({"active": false}));
    }

    async fn end_session_without_the_clients_id_token_asks_first_and_never_goes_elsewhere() {
        let app = app().await;
        app.create_account(EMAIL).await;
        let client = rp(&app, WEB, Some(WEB_SECRET), CALLBACK).await;
        let b = browser();
        log_in(&app, &client, &b, &[], CALLBACK).await;
        // An unregistered return address: refused, signed in still.
        let resp = app.get_with(&b, &format!("/oauth/end_session?client_id={WEB}&post_logout_redirect_uri={}", urlencode("https://evil.test/"))).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        // Without an ID token: a confirmation page (a link on another site signs nobody out).
        let page = app.page_with(&b, &format!("/oauth/end_session?client_id={WEB}&post_logout_redirect_uri={}&state=z", urlencode(LOGGED_OUT))).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(app.get_with(&b, "/user").await.status(), StatusCode::OK, "still signed in");
        let form = page.form("/oauth/end_session");
        let resp = app.submit_with(&b, &form).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&resp), format!("{LOGGED_OUT}?state=z"));
        assert_eq!(app.get_with(&b, "/user").await.status(), StatusCode::SEE_OTHER, "signed out");
        // A forged confirmation (no valid CSRF token) is refused.
        log_in(&app, &client, &b, &[], CALLBACK).await;
        let resp = app.submit_with(&b, &form).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An HS256 signature of `token`'s signing input keyed with the public key of `kid` (the
/// algorithm-confusion attack).
async fn hs256_with_public_key(app: &TestApp, kid: &str, token: &str) -> String {
    use hmac::{Hmac, Mac};
    let jwks: Value = reqwest::get(app.url("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap()
        .to_string();
    let input = &token[..token.rfind('.').unwrap()];
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// A relying party's back-channel logout endpoint: records every `logout_token` posted to it.
struct LogoutReceiver {
    handle: actix_web::dev::ServerHandle,
}

fn start_receiver(
    port: u16,
    tokens: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) -> LogoutReceiver {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let recorded = tokens.clone();
    let server = HttpServer::new(move || {
        let recorded = recorded.clone();
        App::new().route(
            "/backchannel",
            web::post().to(
                move |form: web::Form<std::collections::HashMap<String, String>>| {
                    let recorded = recorded.clone();
                    async move {
                        match form.get("logout_token") {
                            Some(t) => {
                                recorded.lock().unwrap().push(t.clone());
                                HttpResponse::Ok().finish()
                            }
                            None => HttpResponse::BadRequest().finish(),
                        }
                    }
                },
            ),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    LogoutReceiver { handle }
}

/// An app with the one client `web`, whose back-channel logout endpoint is on `port`.
async fn backchannel_app(port: u16) -> TestApp {
    spawn_app_with(|raw| {
        raw.oidc.clients = vec![OidcClientConfig {
            id: WEB.into(),
            secret: Some(WEB_SECRET.into()),
            redirect_uris: vec![CALLBACK.into()],
            backchannel_logout_uri: Some(format!("http://127.0.0.1:{port}/backchannel")),
            ..OidcClientConfig::default()
        }];
    })
    .await
}

/// Verifies a logout token as a relying party would, with a JWT library none of us wrote:
/// RS256 against the JWKS, `iss`, `aud`, the `typ` and the logout event; answers the claims.
async fn verify_logout_token(app: &TestApp, token: &str) -> Value {
    use jsonwebtoken::{decode, decode_header, jwk::JwkSet, Algorithm, DecodingKey, Validation};
    let header = decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("logout+jwt"));
    let jwks: JwkSet = reqwest::get(app.url("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("the key is in the JWKS");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[app.address.as_str()]);
    validation.set_audience(&[WEB]);
    validation.set_required_spec_claims(&["iss", "aud", "iat", "exp", "sub"]);
    let claims = decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("a valid logout token")
        .claims;
    assert!(claims["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object());
    assert!(claims.get("nonce").is_none());
    claims
}

/// The session id (`sid`) an ID token names.
fn sid_of(issued: &openidconnect::core::CoreTokenResponse) -> String {
    let id_token = issued.id_token().unwrap().to_string();
    let payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(id_token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    payload["sid"].as_str().unwrap().to_string()
}

crate::backend_tests! {
    async fn signing_out_another_device_or_deleting_the_account_tells_the_client_over_the_back_channel() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let app = backchannel_app(port).await;
        app.create_account(EMAIL).await;
        let client = rp(&app, WEB, Some(WEB_SECRET), CALLBACK).await;
        let tokens = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let _receiver = start_receiver(port, tokens.clone());
        let laptop = browser();
        assert_eq!(app.sign_in_with(&laptop, EMAIL).await.status(), StatusCode::SEE_OTHER);
        let received = |n: usize| {
            let tokens = tokens.clone();
            crate::helpers::until("the logout token arrives", move || {
                let tokens = tokens.clone();
                async move { tokens.lock().unwrap().len() >= n }
            })
        };

        // The phone signs in to the client; the laptop signs the phone out on /user.
        let phone = browser();
        let issued = exchange(&client, &log_in(&app, &client, &phone, &["offline_access"], CALLBACK).await).await;
        let sid = sid_of(&issued);
        let page = app.page_with(&laptop, "/user").await;
        let resp = app
            .submit_with(&laptop, &page.form("/user/sessions/revoke").set("session_id", &sid))
            .await;
        assert_eq!(location(&resp), "/user?done=signed_out_device");
        received(1).await;
        let first = tokens.lock().unwrap()[0].clone();
        assert_eq!(verify_logout_token(&app, &first).await["sid"].as_str(), Some(sid.as_str()));
        // Its refresh token died with the session's grant.
        let refresh = issued.refresh_token().unwrap().clone();
        assert!(client.exchange_refresh_token(&refresh).unwrap().request_async(&http()).await.is_err());

        // Signed in to the client again, then the account is deleted from the laptop.
        let tablet = browser();
        let issued = exchange(&client, &log_in(&app, &client, &tablet, &[], CALLBACK).await).await;
        let sid = sid_of(&issued);
        let page = app.page_with(&laptop, "/user").await;
        let resp = app.submit_with(&laptop, &page.form("/user/delete").set("step", "")).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "not confirmed yet");
        let page = TestApp::into_page(resp).await;
        let resp = app.submit_with(&laptop, &page.form("/user/delete").set("confirm", "yes")).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        received(2).await;
        let second = tokens.lock().unwrap()[1].clone();
        assert_eq!(verify_logout_token(&app, &second).await["sid"].as_str(), Some(sid.as_str()));
        assert_eq!(app.count("SELECT COUNT(*) FROM oauth_grants").await, 0);
    }

    async fn signing_out_on_the_profile_page_tells_the_client_over_the_back_channel_even_if_it_was_down() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let app = backchannel_app(port).await;
        app.create_account(EMAIL).await;
        let client = rp(&app, WEB, Some(WEB_SECRET), CALLBACK).await;
        let tokens = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let receiver = start_receiver(port, tokens.clone());
        let b = browser();

        // Signed in to the client, then out on /user: the client gets a logout token naming
        // the session its ID token named.
        let sign_in_and_out = |b: reqwest::Client| {
            let (app, client) = (&app, &client);
            async move {
                let login = log_in(app, client, &b, &[], CALLBACK).await;
                let issued = exchange(client, &login).await;
                issued
                    .id_token()
                    .unwrap()
                    .claims(&client.id_token_verifier(), &login.nonce)
                    .unwrap();
                let sid = sid_of(&issued);
                let page = app.page_with(&b, "/user").await;
                let resp = app.submit_with(&b, &page.form("/sign-out")).await;
                assert_eq!(resp.status(), StatusCode::SEE_OTHER);
                sid
            }
        };
        let sid = sign_in_and_out(b.clone()).await;
        crate::helpers::until("the logout token arrives", || {
            let tokens = tokens.clone();
            async move { !tokens.lock().unwrap().is_empty() }
        })
        .await;
        let first = tokens.lock().unwrap()[0].clone();
        let claims = verify_logout_token(&app, &first).await;
        assert_eq!(claims["sid"].as_str(), Some(sid.as_str()));

        // The client is down during the next sign-out: the token waits in the outbox and
        // arrives once the client is back.
        receiver.handle.stop(true).await;
        let sid = sign_in_and_out(browser()).await;
        crate::helpers::until("the delivery has failed at least once", || {
            let app = &app;
            async move {
                app.count("SELECT COUNT(*) FROM outbox WHERE channel = 'backchannel_logout' AND last_error IS NOT NULL").await > 0
            }
        })
        .await;
        assert_eq!(tokens.lock().unwrap().len(), 1);
        let _back = start_receiver(port, tokens.clone());
        // The retry's backoff runs on the injected clock: the test makes it due.
        crate::helpers::until("the late logout token arrives", || {
            let (tokens, app) = (tokens.clone(), &app);
            async move {
                app.make_retries_due().await;
                tokens.lock().unwrap().len() == 2
            }
        })
        .await;
        let second = tokens.lock().unwrap()[1].clone();
        assert_eq!(verify_logout_token(&app, &second).await["sid"].as_str(), Some(sid.as_str()));
    }

    async fn a_client_that_refuses_a_logout_token_with_400_is_not_asked_again() {
        use actix_web::{web, App, HttpResponse, HttpServer};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let posts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = posts.clone();
        let server = HttpServer::new(move || {
            let counted = counted.clone();
            App::new().route(
                "/backchannel",
                web::post().to(move || {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async { HttpResponse::BadRequest().finish() }
                }),
            )
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        let app = backchannel_app(port).await;
        app.create_account(EMAIL).await;
        let client = rp(&app, WEB, Some(WEB_SECRET), CALLBACK).await;
        let b = browser();
        log_in(&app, &client, &b, &[], CALLBACK).await;
        let page = app.page_with(&b, "/user").await;
        app.submit_with(&b, &page.form("/sign-out")).await;
        crate::helpers::until("the refusal is recorded", || {
            let app = &app;
            async move {
                app.count("SELECT COUNT(*) FROM outbox WHERE channel = 'backchannel_logout' AND status = 'failed'").await == 1
            }
        })
        .await;
        // Given up at once: no retry is queued, however long we wait.
        app.make_retries_due().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(posts.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE status = 'pending'").await, 0);
        handle.stop(false).await;
    }

    async fn a_client_the_session_never_signed_into_gets_no_logout() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let app = backchannel_app(port).await;
        app.create_account(EMAIL).await;
        let b = browser();
        assert_eq!(app.sign_in_with(&b, EMAIL).await.status(), StatusCode::SEE_OTHER);
        let page = app.page_with(&b, "/user").await;
        app.submit_with(&b, &page.form("/sign-out")).await;
        assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE channel = 'backchannel_logout'").await, 0);
    }
}
