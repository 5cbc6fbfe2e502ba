//! Typed page views. Each page is an askama template embedding the shared [`PageCtx`].

use actix_web::HttpResponse;
use askama::Template;

use super::flow_pages::{FlowMessage, FlowNotice};
use super::{paths, PageError};
use crate::domain::{IdentifierKind, NameError};

/// What every page needs.
pub struct PageCtx {
    pub product_name: String,
    pub title: String,
    pub request_id: String,
    pub dev_mode: bool,
}

impl PageCtx {
    pub fn asset(&self, name: &str) -> String {
        paths::asset(name)
    }

    pub fn dev_outbox_url(&self) -> &'static str {
        paths::DEV_OUTBOX
    }

    pub fn dev_settings_url(&self) -> &'static str {
        paths::DEV_SETTINGS
    }

    pub fn sign_in_url(&self) -> &'static str {
        paths::SIGN_IN
    }

    pub fn sign_up_url(&self) -> &'static str {
        paths::SIGN_UP
    }
}

#[derive(Debug, Clone)]
pub struct Link {
    pub label: String,
    pub href: String,
}

impl Link {
    pub fn new(label: &str, href: impl Into<String>) -> Self {
        Self {
            label: label.to_string(),
            href: href.into(),
        }
    }
}

/// One input of the identifier step.
pub struct Field {
    pub name: &'static str,
    pub label: String,
    pub input_type: &'static str,
    pub inputmode: &'static str,
    pub autocomplete: &'static str,
    pub autocapitalize: &'static str,
    pub spellcheck: bool,
    pub value: String,
    pub required: bool,
    pub invalid: bool,
}

/// "Send a code to +1 ••• ••• •123" on the sign-in code page.
pub struct FactorChoice {
    pub identifier_id: String,
    pub label: String,
}

/// Step 1 of sign-up and sign-in: the identifier.
#[derive(Template)]
#[template(path = "pages/identifier.html")]
pub struct IdentifierPage {
    pub page: PageCtx,
    pub heading: String,
    pub lead: String,
    pub action: String,
    pub csrf_token: String,
    pub fields: Vec<Field>,
    pub redirect_url: String,
    /// Shown above the form (`partials/alert.html`).
    pub error: Option<FlowMessage>,
    pub switch_text: String,
    pub switch_link: Link,
}

/// Step 2: the code.
#[derive(Template)]
#[template(path = "pages/verify.html")]
pub struct VerifyPage {
    pub page: PageCtx,
    pub heading: String,
    /// "Step 1 of 2: verify your email address" when a sign-up verifies several identifiers.
    pub step: Option<String>,
    pub destination: String,
    pub by_sms: bool,
    pub edit_url: String,
    pub action: String,
    pub resend_action: String,
    pub factor_action: String,
    pub other_factors: Vec<FactorChoice>,
    /// Strict enumeration protection: a link to sign in with the other kind of identifier.
    pub other_method: Option<Link>,
    pub verification_id: String,
    pub csrf_token: String,
    pub code: String,
    pub code_length: usize,
    /// Shown above the form (`partials/alert.html`).
    pub error: Option<FlowMessage>,
    pub notice: Option<FlowNotice>,
    pub resend_wait_secs: u64,
    pub code_dead: bool,
    pub start_over: Link,
}

#[derive(Template)]
#[template(path = "pages/user.html")]
pub struct UserPage {
    pub page: PageCtx,
    /// Every session in use, this one marked.
    pub devices: Vec<DeviceRow>,
    /// The name form: its values (as stored, or as typed when refused) and its error.
    pub name: NameForm,
    pub name_action: &'static str,
    pub emails: Vec<ProfileIdentifier>,
    pub phones: Vec<ProfileIdentifier>,
    pub activity: Vec<ActivityRow>,
    pub joined: String,
    pub sign_out_action: &'static str,
    pub csrf_token: String,
    /// The `redirect_url` the page was opened with: a way back, and where signing out lands.
    pub redirect_url: String,
    /// The way back's text ("Continue to app.example.com"); empty without a `redirect_url`.
    pub back_label: String,
    /// "Add an email address" / "Add a phone number": one form per enabled kind.
    pub add_forms: Vec<AddForm>,
    pub actions: ProfileActions,
    /// What the last change did (after its redirect).
    pub notice: Option<ProfileNotice>,
    /// Why the last change was refused (422).
    pub problem: Option<ProfileProblem>,
    pub deletion_allowed: bool,
    /// The delete button was pressed once: the page asks to confirm.
    pub confirming_deletion: bool,
}

/// Where the profile's forms post.
pub struct ProfileActions {
    pub add: &'static str,
    pub primary: &'static str,
    pub remove: &'static str,
    pub revoke: &'static str,
    pub revoke_others: &'static str,
    pub delete: &'static str,
}

impl Default for ProfileActions {
    fn default() -> Self {
        use super::paths;
        Self {
            add: paths::USER_ADD_IDENTIFIER,
            primary: paths::USER_MAKE_PRIMARY,
            remove: paths::USER_REMOVE_IDENTIFIER,
            revoke: paths::USER_REVOKE_SESSION,
            revoke_others: paths::USER_REVOKE_OTHERS,
            delete: paths::USER_DELETE,
        }
    }
}

/// The form that adds an identifier of one kind; as typed, with its error, when refused.
#[derive(Debug)]
pub struct AddForm {
    pub kind: IdentifierKind,
    pub value: String,
    pub error: Option<AddProblem>,
}

impl AddForm {
    pub fn empty(kind: IdentifierKind) -> Self {
        Self {
            kind,
            value: String::new(),
            error: None,
        }
    }

    pub fn is_email(&self) -> bool {
        self.kind == IdentifierKind::Email
    }

    pub fn field_id(&self) -> &'static str {
        match self.kind {
            IdentifierKind::Email => "add_email",
            IdentifierKind::Phone => "add_phone",
        }
    }
}

/// Why an identifier could not be added.
#[derive(Debug)]
pub enum AddProblem {
    Invalid(crate::domain::IdentifierError),
    /// Another account has it (only said when enumeration protection is off).
    Taken,
    AlreadyYours,
    Limited {
        retry_after_secs: u64,
    },
}

/// What a change on the profile did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileNotice {
    Added,
    PrimaryChanged,
    Removed,
    SignedOutDevice,
    SignedOutOthers,
    NameSaved,
}

impl ProfileNotice {
    pub const ALL: [ProfileNotice; 6] = [
        ProfileNotice::Added,
        ProfileNotice::PrimaryChanged,
        ProfileNotice::Removed,
        ProfileNotice::SignedOutDevice,
        ProfileNotice::SignedOutOthers,
        ProfileNotice::NameSaved,
    ];

    /// The word the redirect after a change carries (`/user?done=…`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileNotice::Added => "added",
            ProfileNotice::PrimaryChanged => "primary",
            ProfileNotice::Removed => "removed",
            ProfileNotice::SignedOutDevice => "signed_out_device",
            ProfileNotice::SignedOutOthers => "signed_out_others",
            ProfileNotice::NameSaved => "name",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.as_str() == s)
    }
}

/// Why a change on the profile was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileProblem {
    LastSignInIdentifier,
    RequiredKind(IdentifierKind),
    NotVerified,
    /// The identifier or device is no longer there (a stale page).
    Gone,
    /// The delete form was sent without its confirmation.
    NotConfirmed,
    DeletionDisabled,
    Limited {
        retry_after_secs: u64,
    },
}

/// One line of "Recent security activity".
pub struct ActivityRow {
    pub when: String,
    pub what: String,
    pub detail: String,
}

/// One device (session) on the profile page.
pub struct DeviceRow {
    /// "Firefox on Linux".
    pub what: String,
    pub ip: String,
    pub signed_in: String,
    pub last_active: String,
    pub current: bool,
    pub session_id: String,
}

/// The name form of the profile page.
#[derive(Debug, Default)]
pub struct NameForm {
    pub first_name: String,
    pub last_name: String,
    /// Which field was refused and why.
    pub error: Option<(NameField, NameError)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameField {
    First,
    Last,
}

impl NameForm {
    pub fn invalid(&self, field: NameField) -> bool {
        self.error.is_some_and(|(f, _)| f == field)
    }
}

pub struct ProfileIdentifier {
    pub id: String,
    pub value: String,
    pub primary: bool,
    pub verified: bool,
}

#[derive(Template)]
#[template(path = "pages/dev_settings.html")]
pub struct DevSettingsPage {
    pub page: PageCtx,
    pub rows: Vec<(String, String)>,
}

/// `/examples/custom-flow`: static markup driven by `static/custom-flow.js`.
#[derive(Template)]
#[template(path = "pages/custom_flow.html")]
pub struct CustomFlowPage {
    pub page: PageCtx,
    pub sdk_url: String,
    pub sign_in_url: &'static str,
}

/// What an error page says; `templates/pages/error.html` holds the words.
#[derive(Debug)]
pub enum ErrorText {
    FormExpired,
    FlowNotFound,
    FlowExpired,
    CodeUsed,
    NotFound,
    Unavailable,
    Failed,
    /// Load shedding: the process is working on all the requests it takes at once (503).
    Busy,
    /// The client's address has too many requests open at once (429).
    TooManyAtOnce,
    /// The form's body did not arrive in time (408).
    TooSlow,
    /// The form's body could not be read (400).
    Unreadable,
    /// The caller's own words (the form reader in `startup.rs`).
    Given {
        title: String,
        message: String,
    },
}

#[derive(Template)]
#[template(path = "pages/error.html")]
pub struct ErrorPage {
    pub page: PageCtx,
    pub status: u16,
    pub text: ErrorText,
    /// Where "Start again" (or "Go to sign in" on the 404) leads.
    pub link: Option<String>,
}

pub struct OutboxRow {
    pub created: String,
    pub to: String,
    pub code: String,
    pub subject: String,
    pub status: String,
    pub attempts: i64,
    pub last_error: String,
}

#[derive(Template)]
#[template(path = "pages/dev_outbox.html")]
pub struct DevOutboxPage {
    pub page: PageCtx,
    pub rows: Vec<OutboxRow>,
}

/// The styled 404 for unknown paths.
pub async fn not_found() -> Result<HttpResponse, PageError> {
    Err(PageError::NotFound)
}

/// One thing a client asks for, on the consent page.
pub struct ScopeLine {
    pub text: &'static str,
}

impl ScopeLine {
    /// What a scope lets the client know or do, in the person's words; `openid` is implied by
    /// signing in and shown as such.
    pub fn of(scope: &str) -> Option<Self> {
        let text = match scope {
            "openid" => "Know which account you signed in with",
            "email" => "See your email address",
            "phone" => "See your phone number",
            "profile" => "See your name",
            "offline_access" => "Stay signed in to your account when you are not using it",
            _ => return None,
        };
        Some(Self { text })
    }
}

/// "Allow <app> to …": the consent form of a client with `require_consent`.
#[derive(Template)]
#[template(path = "pages/consent.html")]
pub struct ConsentPage {
    pub page: PageCtx,
    pub client_name: String,
    pub scopes: Vec<ScopeLine>,
    pub action: &'static str,
    pub csrf_token: String,
    /// The authorization request, form-encoded.
    pub request: String,
}

/// "Sign out?": RP-initiated logout that the person confirms.
#[derive(Template)]
#[template(path = "pages/end_session.html")]
pub struct EndSessionPage {
    pub page: PageCtx,
    /// The client that asked, if it named itself.
    pub client_name: String,
    pub action: &'static str,
    pub csrf_token: String,
    /// The request's parameters, carried as hidden fields.
    pub fields: Vec<(String, String)>,
    pub stay_url: &'static str,
}
