//! The identifier step: `GET` shows the form (prefilled after "Edit"), `POST` starts the flow.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use super::{landing, redirect_target, refused, with_query, FlowMessage, StartForm, StartQuery};
use crate::auth::{FlowKind, StartError};
use crate::domain::{FlowId, Identifier, IdentifierKind, Names, RedirectTarget};
use crate::routes::flow_input::{
    sign_in_identifier, sign_up_identifiers, sign_up_names, NameInputError, SignUpInputError,
};
use crate::routes::pages::{Field, IdentifierPage, Link, NameField};
use crate::routes::{paths, Ctx, PageError};

/// What the person typed into the identifier form (kept on every re-render).
#[derive(Debug, Default, Clone)]
struct Typed {
    identifier: String,
    email: String,
    phone: String,
    /// Sign-up's name fields (`identifiers.name.enabled`).
    first_name: String,
    last_name: String,
}

impl Typed {
    fn clipped(mut self) -> Self {
        for v in [
            &mut self.identifier,
            &mut self.email,
            &mut self.phone,
            &mut self.first_name,
            &mut self.last_name,
        ] {
            *v = v.chars().take(320).collect();
        }
        self
    }
}

/// Which form field an error belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldName {
    Identifier,
    Email,
    Phone,
    FirstName,
    LastName,
}

impl FieldName {
    fn of(kind: IdentifierKind) -> Self {
        match kind {
            IdentifierKind::Email => Self::Email,
            IdentifierKind::Phone => Self::Phone,
        }
    }
}

fn other(kind: FlowKind) -> FlowKind {
    match kind {
        FlowKind::SignUp => FlowKind::SignIn,
        // Flows on /user have no identifier step of their own.
        FlowKind::SignIn | FlowKind::AddIdentifier | FlowKind::Reverify => FlowKind::SignUp,
    }
}

fn field(name: FieldName, label: String, value: &str, required: bool, invalid: bool) -> Field {
    let (html_name, input_type, inputmode, autocomplete) = match name {
        FieldName::Identifier => ("identifier", "text", "text", "username"),
        FieldName::Email => ("email_address", "email", "email", "email"),
        FieldName::Phone => ("phone_number", "tel", "tel", "tel"),
        FieldName::FirstName => ("first_name", "text", "text", "given-name"),
        FieldName::LastName => ("last_name", "text", "text", "family-name"),
    };
    let is_name = matches!(name, FieldName::FirstName | FieldName::LastName);
    Field {
        name: html_name,
        label,
        input_type,
        inputmode,
        autocomplete,
        autocapitalize: if is_name { "words" } else { "none" },
        spellcheck: !is_name,
        value: value.to_string(),
        required,
        invalid,
    }
}

/// Sign-in's one field (as the instance's settings ask for it) and what was typed for it.
fn sign_in_field(ctx: &Ctx, typed: &Typed) -> (FieldName, &'static str, String) {
    let accepts = ctx.state.settings.identifiers.sign_in();
    let (name, label, value) = match (accepts.email, accepts.phone) {
        (true, true) => (
            FieldName::Identifier,
            "Email address or phone number",
            first_non_empty(&[&typed.identifier, &typed.email, &typed.phone]),
        ),
        (false, true) => (
            FieldName::Phone,
            "Phone number",
            first_non_empty(&[&typed.phone, &typed.identifier]),
        ),
        _ => (
            FieldName::Email,
            "Email address",
            first_non_empty(&[&typed.email, &typed.identifier]),
        ),
    };
    (name, label, value.to_string())
}

/// The fields of the identifier step, as the instance's settings ask for them.
fn fields(ctx: &Ctx, kind: FlowKind, typed: &Typed, invalid: Option<FieldName>) -> Vec<Field> {
    let rules = &ctx.state.settings.identifiers;
    match kind {
        FlowKind::SignIn | FlowKind::AddIdentifier | FlowKind::Reverify => {
            let (name, label, value) = sign_in_field(ctx, typed);
            vec![field(name, label.into(), &value, true, invalid.is_some())]
        }
        FlowKind::SignUp => {
            let both = rules.email.enabled && rules.phone.enabled;
            let label = |base: &str, required: bool| {
                if both && !required {
                    format!("{base} (optional)")
                } else {
                    base.to_string()
                }
            };
            // With no identifier required, either one will do: neither is marked optional.
            let none_required = !rules.email.required && !rules.phone.required;
            let name = rules.name;
            let names = [
                (FieldName::FirstName, "First name", &typed.first_name),
                (FieldName::LastName, "Last name", &typed.last_name),
            ]
            .into_iter()
            .filter(|_| name.enabled)
            .map(|(field_name, base, value)| {
                let label = match name.required {
                    true => base.to_string(),
                    false => format!("{base} (optional)"),
                };
                field(
                    field_name,
                    label,
                    value,
                    name.required,
                    invalid == Some(field_name),
                )
            });
            let identifiers = [
                (
                    FieldName::Email,
                    "Email address",
                    &rules.email,
                    &rules.phone,
                    &typed.email,
                ),
                (
                    FieldName::Phone,
                    "Phone number",
                    &rules.phone,
                    &rules.email,
                    &typed.phone,
                ),
            ]
            .into_iter()
            .filter(|(_, _, own, _, _)| own.enabled)
            .map(|(name, base, own, other, value)| {
                // The only identifier on offer is required whatever the settings say.
                let required = own.required || !other.enabled;
                let label = label(base, required || none_required);
                field(name, label, value, required, invalid == Some(name))
            });
            names.chain(identifiers).collect()
        }
    }
}

fn first_non_empty<'a>(values: &[&'a String]) -> &'a str {
    values
        .iter()
        .find(|v| !v.is_empty())
        .map(|v| v.as_str())
        .unwrap_or_default()
}

/// The most natural name for what the sign-in/sign-up form asks for, in a sentence.
fn asked_for(ctx: &Ctx, kind: FlowKind) -> &'static str {
    let rules = &ctx.state.settings.identifiers;
    let accepts = match kind {
        FlowKind::SignIn | FlowKind::AddIdentifier | FlowKind::Reverify => rules.sign_in(),
        FlowKind::SignUp => rules.sign_up(),
    };
    match (accepts.email, accepts.phone) {
        (true, true) => "email address or phone number",
        (false, true) => "phone number",
        _ => "email address",
    }
}

fn identifier_page(
    ctx: &Ctx,
    kind: FlowKind,
    typed: &Typed,
    redirect: Option<&RedirectTarget>,
    error: Option<(FlowMessage, Option<FieldName>)>,
) -> IdentifierPage {
    let redirect_url = redirect.map(|r| r.as_str()).unwrap_or_default();
    let product = &ctx.state.settings.product_name;
    let (title, heading, lead, switch_text, switch_label) = match kind {
        FlowKind::SignUp => (
            "Sign up",
            "Create your account".to_string(),
            format!(
                "to continue to {product}. We will send you a code to verify your {}; no password needed.",
                asked_for(ctx, kind)
            ),
            "Already have an account?",
            "Sign in",
        ),
        FlowKind::SignIn | FlowKind::AddIdentifier | FlowKind::Reverify => (
            "Sign in",
            "Sign in".to_string(),
            format!("to continue to {product}"),
            "No account?",
            "Sign up",
        ),
    };
    let (error, invalid) = match error {
        Some((message, field)) => (Some(message), field),
        None => (None, None),
    };
    IdentifierPage {
        page: ctx.page_ctx(title),
        heading,
        lead,
        action: paths::start(kind).to_string(),
        csrf_token: ctx.csrf_token(kind.as_str()),
        fields: fields(ctx, kind, typed, invalid),
        redirect_url: redirect_url.to_string(),
        error,
        switch_text: switch_text.to_string(),
        switch_link: Link::new(
            switch_label,
            with_query(paths::start(other(kind)), &[("redirect_url", redirect_url)]),
        ),
    }
}

/// GET of the identifier step.
pub async fn start_page(
    ctx: Ctx,
    kind: FlowKind,
    query: web::Query<StartQuery>,
) -> Result<HttpResponse, PageError> {
    let mut redirect = redirect_target(&ctx, query.redirect_url.as_deref());
    let fresh_sign_in = kind == FlowKind::SignIn && query.prompt.as_deref() == Some("login");
    if !fresh_sign_in && ctx.current_user().await?.is_some() {
        return ctx.redirect(&landing(&ctx, kind, redirect.as_ref()));
    }
    let mut typed = Typed {
        identifier: query.identifier.clone().unwrap_or_default(),
        email: query.email_address.clone().unwrap_or_default(),
        phone: query.phone_number.clone().unwrap_or_default(),
        ..Typed::default()
    };
    // Prefilled from the query string (as an app linking here may do): a value that does not
    // parse is shown as given, with its error.
    let error = prefill_error(&ctx, kind, &typed);
    // "Edit" from the code page: prefill from the flow (only this browser's own flows).
    if let Some(flow) = query.flow.as_deref().and_then(FlowId::parse) {
        if let Ok(view) = ctx.state.auth.flow(&flow, kind, &ctx.client()).await {
            for (k, value) in &view.identifiers {
                match k {
                    IdentifierKind::Email => typed.email = value.clone(),
                    IdentifierKind::Phone => typed.phone = value.clone(),
                }
            }
            if let Some((_, first)) = view.identifiers.first() {
                typed.identifier = first.clone();
            }
            redirect = redirect.or(view.redirect);
        }
    }
    ctx.render(
        StatusCode::OK,
        &identifier_page(&ctx, kind, &typed.clipped(), redirect.as_ref(), error),
    )
}

/// The error of a prefilled value that does not parse; a value that is missing is no error
/// (the person has not submitted anything yet).
fn prefill_error(ctx: &Ctx, kind: FlowKind, typed: &Typed) -> Option<Refusal> {
    let given = |v: &str| (!v.trim().is_empty()).then(|| v.to_string());
    match kind {
        FlowKind::SignIn | FlowKind::AddIdentifier | FlowKind::Reverify => {
            let (name, _, input) = sign_in_field(ctx, typed);
            given(&input)?;
            sign_in_identifier(ctx, &input)
                .err()
                .map(|e| (FlowMessage::Invalid(e), Some(name)))
        }
        FlowKind::SignUp => {
            let rules = &ctx.state.settings.identifiers;
            let email = given(&typed.email).filter(|_| rules.email.enabled);
            let phone = given(&typed.phone).filter(|_| rules.phone.enabled);
            if email.is_none() && phone.is_none() {
                return None;
            }
            match sign_up_identifiers(ctx, email.as_deref(), phone.as_deref()) {
                Err(SignUpInputError::Invalid(kind, e)) => {
                    Some((FlowMessage::Invalid(e), Some(FieldName::of(kind))))
                }
                _ => None,
            }
        }
    }
}

type Refusal = (FlowMessage, Option<FieldName>);

/// Parses the identifier step's fields, as the settings ask for them.
fn parse_identifiers(ctx: &Ctx, kind: FlowKind, typed: &Typed) -> Result<Vec<Identifier>, Refusal> {
    match kind {
        FlowKind::SignIn | FlowKind::AddIdentifier | FlowKind::Reverify => {
            let (name, _, input) = sign_in_field(ctx, typed);
            sign_in_identifier(ctx, &input)
                .map(|i| vec![i])
                .map_err(|e| (FlowMessage::Invalid(e), Some(name)))
        }
        FlowKind::SignUp => {
            let rules = &ctx.state.settings.identifiers;
            // A blank optional field is not given; a blank required one gets its kind's error.
            let given = |value: &str, enabled: bool, required: bool| {
                let skip = !enabled || (value.trim().is_empty() && !required);
                (!skip).then(|| value.to_string())
            };
            let email = given(&typed.email, rules.email.enabled, rules.email.required);
            let phone = given(&typed.phone, rules.phone.enabled, rules.phone.required);
            sign_up_identifiers(ctx, email.as_deref(), phone.as_deref()).map_err(|e| match e {
                SignUpInputError::Invalid(kind, e) => {
                    (FlowMessage::Invalid(e), Some(FieldName::of(kind)))
                }
                SignUpInputError::Missing { kind, either } => (
                    FlowMessage::Missing { kind, either },
                    Some(FieldName::of(kind)),
                ),
                // Disabled fields are not read above.
                SignUpInputError::NotEnabled(kind) => (
                    FlowMessage::Missing {
                        kind,
                        either: false,
                    },
                    Some(FieldName::of(kind)),
                ),
            })
        }
    }
}

/// Sign-up's name fields, when the instance asks for them (as typed; see
/// [`sign_up_names`](crate::routes::flow_input::sign_up_names)).
fn parse_names(ctx: &Ctx, kind: FlowKind, typed: &Typed) -> Result<Names, Refusal> {
    let rules = &ctx.state.settings.identifiers.name;
    if kind != FlowKind::SignUp || !rules.enabled {
        return Ok(Names::default());
    }
    let field = |f| match f {
        NameField::First => FieldName::FirstName,
        NameField::Last => FieldName::LastName,
    };
    sign_up_names(rules, Some(&typed.first_name), Some(&typed.last_name)).map_err(|e| match e {
        NameInputError::Invalid(f, e) => (FlowMessage::Name(e), Some(field(f))),
        NameInputError::Missing(f) => (FlowMessage::NameMissing(f), Some(field(f))),
        NameInputError::NotEnabled => (FlowMessage::NameMissing(NameField::First), None),
    })
}

/// The query parameter that prefills an identifier of `kind` on the other step.
fn param(kind: IdentifierKind) -> &'static str {
    match kind {
        IdentifierKind::Email => "email_address",
        IdentifierKind::Phone => "phone_number",
    }
}

/// POST of the identifier step: start the flow and send the code.
pub async fn start(
    ctx: Ctx,
    kind: FlowKind,
    form: web::Form<StartForm>,
) -> Result<HttpResponse, PageError> {
    ctx.check_form(kind.as_str(), &form.csrf_token)?;
    let redirect = redirect_target(&ctx, Some(&form.redirect_url));
    let typed = Typed {
        identifier: form.identifier.clone(),
        email: form.email_address.clone(),
        phone: form.phone_number.clone(),
        first_name: form.first_name.clone(),
        last_name: form.last_name.clone(),
    }
    .clipped();
    let refuse = |(message, field): Refusal| {
        refused(&ctx, message, |message| {
            identifier_page(
                &ctx,
                kind,
                &typed,
                redirect.as_ref(),
                Some((message, field)),
            )
        })
    };
    let names = match parse_names(&ctx, kind, &typed) {
        Ok(n) => n,
        Err(refusal) => return refuse(refusal),
    };
    let identifiers = match parse_identifiers(&ctx, kind, &typed) {
        Ok(i) => i,
        Err(refusal) => return refuse(refusal),
    };
    let redirect_url = redirect.as_ref().map(|r| r.as_str()).unwrap_or_default();
    let started = ctx
        .state
        .auth
        .start(kind, &identifiers, &names, redirect.as_ref(), &ctx.client())
        .await;
    refuse(match started {
        Ok(flow) => return ctx.redirect(&paths::verify(kind, &flow)),
        Err(StartError::IdentifierNotFound) => {
            let identifier = &identifiers[0];
            let sign_up_url = with_query(
                paths::SIGN_UP,
                &[
                    (param(identifier.kind()), identifier.display()),
                    ("redirect_url", redirect_url),
                ],
            );
            let message = FlowMessage::NoAccount {
                kind: identifier.kind(),
                sign_up_url,
            };
            (message, Some(FieldName::Identifier))
        }
        Err(StartError::IdentifierTaken(taken)) => {
            let value = identifiers
                .iter()
                .find(|i| i.kind() == taken)
                .map(|i| i.display().to_string())
                .unwrap_or_default();
            let sign_in_url = with_query(
                paths::SIGN_IN,
                &[(param(taken), &value), ("redirect_url", redirect_url)],
            );
            let message = FlowMessage::Taken {
                kind: taken,
                sign_in_url,
            };
            (message, Some(FieldName::of(taken)))
        }
        Err(StartError::Limited { retry_after_secs }) => {
            (FlowMessage::Limited { retry_after_secs }, None)
        }
        Err(StartError::AlreadyYours) => {
            return Err(anyhow::anyhow!("a sign-in or sign-up has no account of its own").into())
        }
        Err(StartError::Internal(e)) => return Err(e.context("starting a flow").into()),
    })
}
