//! The API's objects, in Clerk's shapes (docs/api.md), built from the state machine's views.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{CurrentUser, FlowView, VerificationState, VerificationStatus};
use crate::config::IdentifierRules;
use crate::domain::{Identifier, IdentifierId, IdentifierKind, PersonName, UserId};
use crate::store::StoredIdentifier;

/// The API's time encoding, as Clerk's: Unix milliseconds.
fn ms(t: time::OffsetDateTime) -> i64 {
    crate::delivery::unix_ms(t)
}

pub fn field_name(kind: IdentifierKind) -> &'static str {
    match kind {
        IdentifierKind::Email => "email_address",
        IdentifierKind::Phone => "phone_number",
    }
}

pub fn strategy_name(kind: IdentifierKind) -> &'static str {
    match kind {
        IdentifierKind::Email => "email_code",
        IdentifierKind::Phone => "phone_code",
    }
}

/// A one-time-code strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    EmailCode,
    PhoneCode,
}

impl Strategy {
    pub fn kind(self) -> IdentifierKind {
        match self {
            Strategy::EmailCode => IdentifierKind::Email,
            Strategy::PhoneCode => IdentifierKind::Phone,
        }
    }
}

/// The state of one code.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Verification {
    /// `unverified` (no code yet, or a live one), `verified`, `failed` (tries used up) or `expired`.
    pub status: &'static str,
    /// `email_code` or `phone_code`.
    pub strategy: &'static str,
    /// Wrong tries used on the current code.
    pub attempts: u32,
    pub attempts_remaining: u32,
    /// When the current code expires (Unix ms); null before a code was sent.
    pub expire_at: Option<i64>,
    /// When a new code can be requested (Unix ms); null when it can be now.
    pub resend_available_at: Option<i64>,
}

impl Verification {
    fn from_state(v: &VerificationState, now: time::OffsetDateTime) -> Self {
        let status = match v.status {
            VerificationStatus::NotSent | VerificationStatus::Pending => "unverified",
            VerificationStatus::Verified => "verified",
            VerificationStatus::Failed => "failed",
            VerificationStatus::Expired => "expired",
        };
        let sent = v.status != VerificationStatus::NotSent;
        let resend =
            (sent && v.status != VerificationStatus::Verified && v.resend_available_at > now)
                .then(|| ms(v.resend_available_at));
        Self {
            status,
            strategy: strategy_name(v.kind),
            attempts: if sent { v.attempts_used } else { 0 },
            attempts_remaining: if sent { v.remaining() } else { v.max_attempts },
            expire_at: sent.then(|| ms(v.expires_at)),
            resend_available_at: resend,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SignUpVerifications {
    pub email_address: Option<Verification>,
    pub phone_number: Option<Verification>,
}

/// A sign-up attempt (Clerk's SignUp).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SignUp {
    pub id: String,
    /// Always `sign_up`.
    pub object: &'static str,
    /// `missing_requirements`, `complete` or `abandoned` (expired unfinished).
    pub status: &'static str,
    pub required_fields: Vec<&'static str>,
    pub optional_fields: Vec<&'static str>,
    /// Required fields this sign-up has not given.
    pub missing_fields: Vec<&'static str>,
    /// Given fields not verified yet.
    pub unverified_fields: Vec<&'static str>,
    pub email_address: Option<String>,
    /// E.164.
    pub phone_number: Option<String>,
    pub verifications: SignUpVerifications,
    pub created_user_id: Option<String>,
    pub created_session_id: Option<String>,
    pub created_at: i64,
}

impl SignUp {
    pub fn from_view(view: &FlowView, rules: &IdentifierRules) -> Self {
        let of = |kind: IdentifierKind| view.verifications.iter().find(|v| v.kind == kind);
        let kinds = [
            (IdentifierKind::Email, rules.email),
            (IdentifierKind::Phone, rules.phone),
        ];
        let status = if view.complete {
            "complete"
        } else if view.abandoned {
            "abandoned"
        } else {
            "missing_requirements"
        };
        Self {
            id: view.id.to_string(),
            object: "sign_up",
            status,
            required_fields: kinds
                .iter()
                .filter(|(_, r)| r.enabled && r.required)
                .map(|(k, _)| field_name(*k))
                .collect(),
            optional_fields: kinds
                .iter()
                .filter(|(_, r)| r.enabled && !r.required)
                .map(|(k, _)| field_name(*k))
                .collect(),
            missing_fields: view.missing.iter().map(|k| field_name(*k)).collect(),
            unverified_fields: view
                .verifications
                .iter()
                .filter(|v| v.status != VerificationStatus::Verified)
                .map(|v| field_name(v.kind))
                .collect(),
            email_address: of(IdentifierKind::Email).map(|v| v.value.clone()),
            phone_number: of(IdentifierKind::Phone).map(|v| v.value.clone()),
            verifications: SignUpVerifications {
                email_address: of(IdentifierKind::Email)
                    .map(|v| Verification::from_state(v, view.now)),
                phone_number: of(IdentifierKind::Phone)
                    .map(|v| Verification::from_state(v, view.now)),
            },
            created_user_id: view
                .user_id
                .as_ref()
                .filter(|_| view.complete)
                .map(|u| u.to_string()),
            created_session_id: view.session_id.as_ref().map(|s| s.to_string()),
            created_at: ms(view.created_at),
        }
    }
}

/// One place a sign-in code can go.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FirstFactor {
    /// `email_code` or `phone_code`.
    pub strategy: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_address_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number_id: Option<String>,
    /// Masked: `j•••@example.com`, `+1 ••• ••• •123`.
    pub safe_identifier: String,
}

/// A sign-in attempt (Clerk's SignIn).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SignIn {
    /// Null while the sign-in `needs_identifier` (nothing is stored until there is one).
    pub id: Option<String>,
    /// Always `sign_in`.
    pub object: &'static str,
    /// `needs_identifier` (created without one: create it again with an identifier),
    /// `needs_first_factor`, `complete` or `abandoned` (expired unfinished).
    pub status: &'static str,
    /// As given to `create`; null while it `needs_identifier`.
    pub identifier: Option<String>,
    pub supported_first_factors: Vec<FirstFactor>,
    /// Null until a code was prepared.
    pub first_factor_verification: Option<Verification>,
    pub created_session_id: Option<String>,
    pub created_at: i64,
}

impl SignIn {
    /// A sign-in created without an identifier (Clerk's `needs_identifier`): nothing stored.
    pub fn needs_identifier(now: time::OffsetDateTime) -> Self {
        Self {
            id: None,
            object: "sign_in",
            status: "needs_identifier",
            identifier: None,
            supported_first_factors: Vec::new(),
            first_factor_verification: None,
            created_session_id: None,
            created_at: ms(now),
        }
    }

    pub fn from_view(view: &FlowView) -> Self {
        let status = if view.complete {
            "complete"
        } else if view.abandoned {
            "abandoned"
        } else {
            "needs_first_factor"
        };
        let v = &view.verification;
        Self {
            id: Some(view.id.to_string()),
            object: "sign_in",
            status,
            identifier: Some(
                view.identifiers
                    .first()
                    .map(|(_, value)| value.clone())
                    .unwrap_or_default(),
            ),
            supported_first_factors: view
                .factors
                .iter()
                .map(|f| FirstFactor {
                    strategy: strategy_name(f.kind),
                    email_address_id: (f.kind == IdentifierKind::Email)
                        .then(|| f.identifier_id.to_string()),
                    phone_number_id: (f.kind == IdentifierKind::Phone)
                        .then(|| f.identifier_id.to_string()),
                    safe_identifier: f.safe_identifier.clone(),
                })
                .collect(),
            first_factor_verification: (v.status != VerificationStatus::NotSent)
                .then(|| Verification::from_state(v, view.now)),
            created_session_id: view.session_id.as_ref().map(|s| s.to_string()),
            created_at: ms(view.created_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IdentifierVerification {
    /// `verified` for the account's identifiers; `unverified` for one being added
    /// (`/v1/me/email_addresses`, `/v1/me/phone_numbers`) until its code is verified.
    pub status: &'static str,
    pub strategy: &'static str,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmailAddressObject {
    pub id: String,
    /// Always `email_address`.
    pub object: &'static str,
    pub email_address: String,
    pub verification: IdentifierVerification,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PhoneNumberObject {
    pub id: String,
    /// Always `phone_number`.
    pub object: &'static str,
    /// E.164.
    pub phone_number: String,
    pub verification: IdentifierVerification,
}

/// An email address or a phone number, as its own object.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum IdentifierObject {
    Email(EmailAddressObject),
    Phone(PhoneNumberObject),
}

impl IdentifierObject {
    /// The object of `identifier`: the address as typed (normalised), the number in E.164.
    pub fn of(id: &IdentifierId, identifier: &Identifier, status: &'static str) -> Self {
        let value = match identifier {
            Identifier::Email(e) => e.display(),
            Identifier::Phone(p) => p.e164(),
        };
        Self::new(id, identifier.kind(), value, status)
    }

    /// `value`: the address as typed (normalised), or the number in E.164.
    pub fn new(id: &IdentifierId, kind: IdentifierKind, value: &str, status: &'static str) -> Self {
        let verification = IdentifierVerification {
            status,
            strategy: strategy_name(kind),
        };
        match kind {
            IdentifierKind::Email => Self::Email(EmailAddressObject {
                id: id.to_string(),
                object: "email_address",
                email_address: value.to_string(),
                verification,
            }),
            IdentifierKind::Phone => Self::Phone(PhoneNumberObject {
                id: id.to_string(),
                object: "phone_number",
                phone_number: value.to_string(),
                verification,
            }),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    /// Always `user`.
    pub object: &'static str,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub primary_email_address_id: Option<String>,
    pub primary_phone_number_id: Option<String>,
    pub email_addresses: Vec<EmailAddressObject>,
    pub phone_numbers: Vec<PhoneNumberObject>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Session {
    pub id: String,
    /// Always `session`.
    pub object: &'static str,
    /// Always `active` (ended sessions are deleted).
    pub status: &'static str,
    pub user_id: String,
    pub expire_at: i64,
    pub created_at: i64,
}

/// A session token (`POST /v1/client/sessions/{id}/tokens`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionToken {
    /// Always `"token"`.
    pub object: &'static str,
    /// A compact JWS (EdDSA): `iss`, `sub` (user id), `sid`, `azp`, `iat`, `nbf`, `exp` (60 s).
    pub jwt: String,
}

/// The answer of `POST /v1/sessions/verify` (RFC 7662's shape): only `active: false` for
/// anything that is not a live session's valid token.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerifiedToken {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
}

/// The body of `POST /v1/sessions/verify`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyToken {
    pub token: String,
}

/// The client: the browser or app calling the API, its session and user.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClientObject {
    /// Always `client`.
    pub object: &'static str,
    pub sessions: Vec<Session>,
    pub last_active_session_id: Option<String>,
    pub user: Option<User>,
}

impl ClientObject {
    pub fn new(user: Option<&CurrentUser>) -> Self {
        let Some(u) = user else {
            return Self {
                object: "client",
                sessions: Vec::new(),
                last_active_session_id: None,
                user: None,
            };
        };
        Self {
            object: "client",
            sessions: vec![Session {
                id: u.session_id.to_string(),
                object: "session",
                status: "active",
                user_id: u.user_id.to_string(),
                expire_at: ms(u.session_expires_at),
                created_at: ms(u.session_created_at),
            }],
            last_active_session_id: Some(u.session_id.to_string()),
            user: Some(User::new(
                &u.user_id,
                &u.identifiers,
                u.joined_at,
                u.first_name.as_ref(),
                u.last_name.as_ref(),
            )),
        }
    }
}

impl User {
    /// The User object of an account with these identifiers (emails first, primary first).
    pub fn new(
        id: &UserId,
        identifiers: &[StoredIdentifier],
        created_at: time::OffsetDateTime,
        first_name: Option<&PersonName>,
        last_name: Option<&PersonName>,
    ) -> Self {
        let mut emails = Vec::new();
        let mut phones = Vec::new();
        let mut primary: BTreeMap<&str, String> = BTreeMap::new();
        for s in identifiers {
            if s.is_primary {
                primary
                    .entry(field_name(s.identifier.kind()))
                    .or_insert_with(|| s.id.to_string());
            }
            match IdentifierObject::of(&s.id, &s.identifier, "verified") {
                IdentifierObject::Email(o) => emails.push(o),
                IdentifierObject::Phone(o) => phones.push(o),
            }
        }
        User {
            id: id.to_string(),
            object: "user",
            first_name: first_name.map(|n| n.to_string()),
            last_name: last_name.map(|n| n.to_string()),
            primary_email_address_id: primary.get("email_address").cloned(),
            primary_phone_number_id: primary.get("phone_number").cloned(),
            email_addresses: emails,
            phone_numbers: phones,
            created_at: ms(created_at),
        }
    }
}

/// `POST /v1/client/sign_ups`
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSignUp {
    pub email_address: Option<String>,
    pub phone_number: Option<String>,
    /// With `identifiers.name.enabled` (required with `identifiers.name.required`); refused
    /// otherwise. At most 100 characters, one line.
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

/// `POST /v1/client/sign_ups/{id}/prepare_verification`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrepareVerification {
    pub strategy: Strategy,
}

/// `POST …/attempt_verification` and `…/attempt_first_factor`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptCode {
    pub strategy: Strategy,
    pub code: String,
}

/// `POST /v1/client/sign_ins`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSignIn {
    /// An email address or phone number (as the instance allows). Without one (or empty), the
    /// answer is a SignIn that `needs_identifier`.
    #[serde(default)]
    pub identifier: Option<String>,
}

/// `POST /v1/client/sign_ins/{id}/prepare_first_factor`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrepareFirstFactor {
    pub strategy: Strategy,
    /// With `email_code`: one of `supported_first_factors`.
    pub email_address_id: Option<String>,
    /// With `phone_code`: one of `supported_first_factors`.
    pub phone_number_id: Option<String>,
}

/// `PATCH /v1/me`: the fields to change (absent: unchanged; `""`: cleared).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// At most 100 characters, one line; any script.
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Makes this verified email address the primary one (needs a recent code).
    pub primary_email_address_id: Option<String>,
    /// Makes this verified phone number the primary one (needs a recent code).
    pub primary_phone_number_id: Option<String>,
}

/// One of the signed-in person's sessions (`GET /v1/me/sessions`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MeSession {
    pub id: String,
    /// Always `session`.
    pub object: &'static str,
    /// Always `active` (ended sessions are deleted).
    pub status: &'static str,
    /// Whether it is the session making this request.
    pub current: bool,
    pub created_at: i64,
    /// Written at most once a minute.
    pub last_active_at: i64,
    pub expire_at: i64,
    pub latest_activity: SessionActivity,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionActivity {
    /// "Firefox on Linux", from the user agent.
    pub device: String,
    pub ip_address: Option<String>,
}

impl MeSession {
    pub fn new(d: &crate::store::Device, current: bool, device: String) -> Self {
        Self {
            id: d.session_id.to_string(),
            object: "session",
            status: "active",
            current,
            created_at: ms(d.created_at),
            last_active_at: ms(d.last_active_at),
            expire_at: ms(d.expires_at),
            latest_activity: SessionActivity {
                device,
                ip_address: d.ip.clone(),
            },
        }
    }
}
