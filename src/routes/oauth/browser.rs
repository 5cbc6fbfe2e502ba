//! The endpoints a browser visits: authorization, consent and RP-initiated logout.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::auth::CurrentUser;
use crate::oidc::{
    decide, parse, resume_params, AuthRequest, Decision, ErrorRedirect, Params, Provider,
    RequestError, SessionFacts,
};
use crate::routes::pages::{ConsentPage, EndSessionPage, ScopeLine};
use crate::routes::{paths, Ctx, PageError};

fn bad_request(ctx: &Ctx, message: &str) -> Result<HttpResponse, PageError> {
    Ok(ctx.error_page(
        StatusCode::BAD_REQUEST,
        "This sign-in link is not valid",
        message,
        None,
    ))
}

/// `GET /oauth/authorize`: the request in the query string.
pub async fn authorize_get(ctx: Ctx) -> Result<HttpResponse, PageError> {
    let query = ctx.req.query_string().to_string();
    authorize(ctx, &query).await
}

/// `POST /oauth/authorize`: the request as a form (OpenID Connect Core §3.1.2.1). It carries
/// no CSRF token, and needs none: like the GET, it changes nothing before the person has
/// signed in here, and a code goes only to the client's registered redirect URI.
pub async fn authorize_post(ctx: Ctx, body: String) -> Result<HttpResponse, PageError> {
    authorize(ctx, &body).await
}

async fn authorize(ctx: Ctx, encoded: &str) -> Result<HttpResponse, PageError> {
    let oidc = ctx.state.oidc.clone();
    let params = match Params::parse(encoded) {
        Ok(p) => p,
        Err(_) => return bad_request(&ctx, "A parameter of this request was given twice."),
    };
    let req = match parse(params, &oidc.settings) {
        Ok(r) => r,
        Err(RequestError::Fatal(message)) => return bad_request(&ctx, message),
        Err(RequestError::Redirect(e)) => return ctx.redirect(&oidc.error_redirect(&e)),
    };
    let user = ctx.current_user().await?;
    proceed(&ctx, &oidc, &req, user, false).await
}

/// What a valid request leads to, for the person signed in (if anyone).
async fn proceed(
    ctx: &Ctx,
    oidc: &Provider,
    req: &AuthRequest,
    user: Option<CurrentUser>,
    consent_given: bool,
) -> Result<HttpResponse, PageError> {
    let client = oidc
        .client(&req.client_id)
        .ok_or_else(|| anyhow::anyhow!("a parsed request names an unknown client"))?;
    let consented = match &user {
        Some(u) if client.require_consent && !consent_given => {
            oidc.consented(u, &client.id).await?
        }
        _ => None,
    };
    let facts = user.as_ref().map(|u| SessionFacts {
        auth_time: u.session_created_at,
    });
    match (
        decide(
            req,
            client,
            facts,
            consented.as_deref(),
            consent_given,
            oidc.now(),
        ),
        user,
    ) {
        (Decision::SignIn { reauth }, _) => {
            let back = format!(
                "{}?{}",
                paths::AUTHORIZE,
                resume_params(req, reauth).encode()
            );
            let hint = req.login_hint.as_deref().unwrap_or_default();
            let prompt = if reauth { "login" } else { "" };
            ctx.redirect(&paths::with_query(
                paths::SIGN_IN,
                &[
                    ("redirect_url", &back),
                    ("identifier", hint),
                    ("prompt", prompt),
                ],
            ))
        }
        (Decision::Refuse(error), _) => ctx.redirect(&oidc.error_redirect(&ErrorRedirect {
            redirect_uri: req.redirect_uri.clone(),
            state: req.state.clone(),
            error,
            description: match error {
                "consent_required" => "the person has not allowed this client yet",
                _ => "the person must sign in",
            },
        })),
        (Decision::Consent, Some(user)) => {
            let page = ConsentPage {
                page: ctx.page_ctx(&format!("Allow {}", client.name)),
                client_name: client.name.clone(),
                scopes: req.scopes.iter().filter_map(|s| ScopeLine::of(s)).collect(),
                action: paths::CONSENT,
                csrf_token: ctx.session_csrf_token(&user),
                request: req.params.encode(),
            };
            ctx.render(StatusCode::OK, &page)
        }
        (Decision::Issue, Some(user)) => {
            let to = oidc.issue_code(req, &user, consent_given).await?;
            ctx.redirect(&to)
        }
        (Decision::Consent | Decision::Issue, None) => {
            Err(anyhow::anyhow!("a decision for a session without one").into())
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct ConsentForm {
    csrf_token: String,
    /// The authorization request, form-encoded, as the consent page was shown for.
    request: String,
    /// `allow` or `deny`.
    decision: String,
}

/// `POST /oauth/consent`: the person's answer on the consent page.
pub async fn consent(ctx: Ctx, form: web::Form<ConsentForm>) -> Result<HttpResponse, PageError> {
    let oidc = ctx.state.oidc.clone();
    let Some(user) = ctx.current_user().await? else {
        // Signed out meanwhile: sign in, then the request is asked again.
        let back = format!("{}?{}", paths::AUTHORIZE, form.request);
        return ctx.redirect(&paths::with_query(
            paths::SIGN_IN,
            &[("redirect_url", &back)],
        ));
    };
    ctx.check_session_form(&user, &form.csrf_token)?;
    let Ok(params) = Params::parse(&form.request) else {
        return bad_request(&ctx, "A parameter of this request was given twice.");
    };
    let req = match parse(params, &oidc.settings) {
        Ok(r) => r,
        Err(RequestError::Fatal(message)) => return bad_request(&ctx, message),
        Err(RequestError::Redirect(e)) => return ctx.redirect(&oidc.error_redirect(&e)),
    };
    if form.decision != "allow" {
        tracing::info!(event = "oidc_consent_denied", client_id = %req.client_id, "consent denied");
        return ctx.redirect(&oidc.error_redirect(&ErrorRedirect {
            redirect_uri: req.redirect_uri.clone(),
            state: req.state.clone(),
            error: "access_denied",
            description: "the person did not allow this client",
        }));
    }
    proceed(&ctx, &oidc, &req, Some(user), true).await
}

/// `GET /oauth/end_session` (OpenID Connect RP-Initiated Logout 1.0).
pub async fn end_session_get(ctx: Ctx) -> Result<HttpResponse, PageError> {
    let query = ctx.req.query_string().to_string();
    end_session(ctx, &query).await
}

/// `POST /oauth/end_session`: a client's form post, or the confirmation page's.
pub async fn end_session_post(ctx: Ctx, body: String) -> Result<HttpResponse, PageError> {
    end_session(ctx, &body).await
}

async fn end_session(ctx: Ctx, encoded: &str) -> Result<HttpResponse, PageError> {
    let oidc = ctx.state.oidc.clone();
    let Ok(params) = Params::parse(encoded) else {
        return bad_request(&ctx, "A parameter of this request was given twice.");
    };
    let hint =
        match params.get("id_token_hint") {
            None => None,
            Some(t) => match oidc.id_token_hint(t) {
                Some(claims) => Some(claims),
                None => return bad_request(
                    &ctx,
                    "The application sent an ID token that was not issued here (id_token_hint).",
                ),
            },
        };
    let client_id = match (
        hint.as_ref().map(|h| h.aud.as_str()),
        params.get("client_id"),
    ) {
        (Some(a), Some(b)) if a != b => {
            return bad_request(
                &ctx,
                "The ID token and client_id name different applications.",
            )
        }
        (a, b) => a.or(b),
    };
    let client = match client_id {
        Some(id) => match oidc.client(id) {
            Some(c) => Some(c),
            None => {
                return bad_request(
                    &ctx,
                    "The application that sent you here is not registered (client_id).",
                )
            }
        },
        None => None,
    };
    // Only a registered address, compared exactly; without a client, none at all.
    let target = match params.get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => match client {
            Some(c) if c.post_logout_redirect_uris.iter().any(|r| r == uri) => {
                let mut url = url::Url::parse(uri).map_err(anyhow::Error::from)?;
                if let Some(state) = params.get("state") {
                    url.query_pairs_mut().append_pair("state", state);
                }
                Some(url.to_string())
            }
            _ => return bad_request(&ctx, "The application asked to return to an address it has not registered (post_logout_redirect_uri)."),
        },
    };
    let landing = target.unwrap_or_else(|| ctx.state.settings.after.sign_out.as_str().to_string());
    let Some(user) = ctx.current_user().await? else {
        return ctx.redirect(&landing);
    };
    // The session the client knows (its ID token's `sid`), or the person confirming here: a
    // link alone on another site cannot sign anyone out.
    let confirmed = match params.get("csrf_token") {
        Some(token) => {
            ctx.check_session_form(&user, token)?;
            true
        }
        None => hint
            .as_ref()
            .is_some_and(|h| Provider::same_session(&user, &h.sid)),
    };
    if confirmed {
        ctx.state
            .auth
            .sign_out(&user, &ctx.client())
            .await
            .map_err(|e| e.context("signing out at end_session"))?;
        ctx.remove_session_cookie();
        return ctx.redirect(&landing);
    }
    let page = EndSessionPage {
        page: ctx.page_ctx("Sign out"),
        client_name: client.map(|c| c.name.clone()).unwrap_or_default(),
        action: paths::END_SESSION,
        csrf_token: ctx.session_csrf_token(&user),
        fields: params
            .without(&["csrf_token"])
            .pairs()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        stay_url: paths::USER,
    };
    ctx.render(StatusCode::OK, &page)
}
