//! The endpoints clients call from their servers (and, for public clients, from a page):
//! discovery, token, userinfo, revocation and introspection. No cookies are read here; the
//! client authenticates itself (or presents a bearer token), so a page on any origin may call
//! them (`Access-Control-Allow-Origin: *`, never with credentials).

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::oidc::{BearerError, Grant, OAuthError, Params};
use crate::routes::AppState;

fn json_answer(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .content_type("application/json")
        .body(body.to_string())
}

/// RFC 6749 §5.2: 400 with `error` and `error_description`; 401 with `WWW-Authenticate` for a
/// client that failed to authenticate.
fn oauth_error(e: OAuthError, used_basic: bool) -> HttpResponse {
    if let OAuthError::Internal(err) = &e {
        tracing::error!(error = %format!("{err:#}"), "an OAuth endpoint failed");
        let status = if crate::store::is_unavailable_error(err) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        return json_answer(
            status,
            &json!({"error": e.code(), "error_description": e.description()}),
        );
    }
    let status = match e {
        OAuthError::InvalidClient(_) => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut resp = json_answer(
        status,
        &json!({"error": e.code(), "error_description": e.description()}),
    );
    // RFC 6749 §5.2: a client that tried Basic authentication is told which scheme to use.
    if status == StatusCode::UNAUTHORIZED && used_basic {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Basic realm="latchkey""#),
        );
    }
    resp
}

/// The form body of a POST: `application/x-www-form-urlencoded`, each parameter once.
fn form(req: &HttpRequest, body: &[u8]) -> Result<Params, OAuthError> {
    let form_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(OAuthError::InvalidRequest(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| OAuthError::InvalidRequest("the body is not UTF-8"))?;
    Params::parse(text).map_err(|_| OAuthError::InvalidRequest("a parameter was given twice"))
}

/// `Authorization: Basic` credentials (RFC 6749 §2.3.1: both parts form-urlencoded first).
fn basic_credentials(req: &HttpRequest) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || OAuthError::InvalidClient("client authentication failed");
    let value = value.to_str().map_err(|_| bad())?;
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return Err(bad());
    };
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.to_string())
            .unwrap_or_default()
    };
    Ok(Some((unescape(id), unescape(secret))))
}

/// A client's POST to the token, revocation or introspection endpoint: its form and the client
/// it authenticated as (with whether it tried Basic, for the error's challenge); or the error
/// with that same flag.
struct ClientCall<'a> {
    form: Params,
    client: &'a crate::config::OidcClient,
    used_basic: bool,
}

fn client_call<'a>(
    req: &HttpRequest,
    state: &'a AppState,
    body: &[u8],
) -> Result<ClientCall<'a>, (OAuthError, bool)> {
    let basic = basic_credentials(req).map_err(|e| (e, true))?;
    let used_basic = basic.is_some();
    let form = form(req, body).map_err(|e| (e, used_basic))?;
    let client = state
        .oidc
        .authenticate_client(basic, &form)
        .map_err(|e| (e, used_basic))?;
    Ok(ClientCall {
        form,
        client,
        used_basic,
    })
}

/// `/.well-known/openid-configuration`.
pub async fn discovery(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .content_type("application/json")
        .body(state.oidc.discovery().to_string())
}

/// CORS preflight of the token, userinfo, revocation and introspection endpoints.
pub async fn preflight() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST"))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Authorization, Content-Type",
        ))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
        .finish()
}

/// `POST /oauth/token`: `authorization_code` and `refresh_token`.
pub async fn token(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let ClientCall {
        form,
        client,
        used_basic,
    } = match client_call(&req, &state, &body) {
        Ok(c) => c,
        Err((e, used_basic)) => return oauth_error(e, used_basic),
    };
    let oidc = &state.oidc;
    let grant = match form.get("grant_type") {
        Some("authorization_code") => match form.get("code") {
            Some(code) => Grant::AuthorizationCode {
                code,
                redirect_uri: form.get("redirect_uri"),
                code_verifier: form.get("code_verifier"),
            },
            None => return oauth_error(OAuthError::InvalidRequest("code is required"), used_basic),
        },
        Some("refresh_token") => match form.get("refresh_token") {
            Some(refresh_token) => Grant::RefreshToken {
                refresh_token,
                scope: form.get("scope"),
            },
            None => {
                return oauth_error(
                    OAuthError::InvalidRequest("refresh_token is required"),
                    used_basic,
                )
            }
        },
        Some(_) => return oauth_error(OAuthError::UnsupportedGrantType, used_basic),
        None => {
            return oauth_error(
                OAuthError::InvalidRequest("grant_type is required"),
                used_basic,
            )
        }
    };
    match oidc.token(client, grant).await {
        Ok(tokens) => json_answer(
            StatusCode::OK,
            &serde_json::to_value(tokens).unwrap_or_default(),
        ),
        Err(e) => oauth_error(e, used_basic),
    }
}

/// RFC 6750 §3: 401 with `WWW-Authenticate: Bearer error="invalid_token"` (403 for a token
/// without `openid`).
fn bearer_error(e: BearerError) -> HttpResponse {
    let (status, code) = match &e {
        BearerError::InvalidToken => (StatusCode::UNAUTHORIZED, "invalid_token"),
        BearerError::InsufficientScope => (StatusCode::FORBIDDEN, "insufficient_scope"),
        BearerError::Internal(err) => {
            return oauth_error(OAuthError::Internal(anyhow::anyhow!("{err:#}")), false)
        }
    };
    let mut resp = json_answer(status, &json!({"error": code}));
    let challenge = format!(r#"Bearer realm="latchkey", error="{code}""#);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// `GET` or `POST /oauth/userinfo` with `Authorization: Bearer <access token>` (or, on a POST,
/// the `access_token` form parameter, RFC 6750 §2.2).
pub async fn userinfo(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> HttpResponse {
    let header_token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string());
    let token = match header_token {
        Some(t) => t,
        None if !body.is_empty() => match form(&req, &body)
            .ok()
            .and_then(|f| f.get("access_token").map(String::from))
        {
            Some(t) => t,
            None => return bearer_error(BearerError::InvalidToken),
        },
        None => return bearer_error(BearerError::InvalidToken),
    };
    match state.oidc.userinfo(&token).await {
        Ok(claims) => json_answer(StatusCode::OK, &claims),
        Err(e) => bearer_error(e),
    }
}

/// `POST /oauth/revoke` (RFC 7009): 200 whether or not the token was known.
pub async fn revoke(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> HttpResponse {
    let ClientCall {
        form,
        client,
        used_basic,
    } = match client_call(&req, &state, &body) {
        Ok(c) => c,
        Err((e, used_basic)) => return oauth_error(e, used_basic),
    };
    let Some(token) = form.get("token") else {
        return oauth_error(OAuthError::InvalidRequest("token is required"), used_basic);
    };
    match state.oidc.revoke(client, token).await {
        Ok(()) => json_answer(StatusCode::OK, &json!({})),
        Err(e) => oauth_error(OAuthError::Internal(e), used_basic),
    }
}

/// `POST /oauth/introspect` (RFC 7662), for confidential clients, about their own tokens.
pub async fn introspect(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> HttpResponse {
    let ClientCall {
        form,
        client,
        used_basic,
    } = match client_call(&req, &state, &body) {
        Ok(c) => c,
        Err((e, used_basic)) => return oauth_error(e, used_basic),
    };
    if client.is_public() {
        return oauth_error(
            OAuthError::InvalidClient("introspection is for confidential clients"),
            used_basic,
        );
    }
    let Some(token) = form.get("token") else {
        return oauth_error(OAuthError::InvalidRequest("token is required"), used_basic);
    };
    match state.oidc.introspect(client, token).await {
        Ok(answer) => json_answer(StatusCode::OK, &answer),
        Err(e) => oauth_error(OAuthError::Internal(e), used_basic),
    }
}
