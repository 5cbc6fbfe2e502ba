//! The `identifiers`, `strategies` and `phone` sections, and how they hold together.

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::{opt_string_or_list, RawConfig, SmsProvider};
use crate::domain::{Accepts, PhonePolicy};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentifiersConfig {
    pub email: IdentifierConfig,
    pub phone: IdentifierConfig,
    /// First and last name fields on sign-up.
    pub name: NameConfig,
}

/// The name fields of sign-up (the profile always lets people set a name).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NameConfig {
    /// Sign-up shows first and last name fields (optional unless `required`).
    pub enabled: bool,
    /// Sign-up needs a first and a last name.
    pub required: bool,
}

/// One kind of identifier.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentifierConfig {
    /// Accounts can have identifiers of this kind.
    pub enabled: bool,
    /// Sign-up needs one (verified before the account exists).
    pub required: bool,
    /// People can sign in with it.
    pub used_for_sign_in: bool,
}

impl Default for IdentifiersConfig {
    fn default() -> Self {
        Self {
            email: IdentifierConfig {
                enabled: true,
                required: true,
                used_for_sign_in: true,
            },
            phone: IdentifierConfig {
                enabled: true,
                required: false,
                used_for_sign_in: true,
            },
            name: NameConfig::default(),
        }
    }
}

impl Default for IdentifierConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            required: false,
            used_for_sign_in: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StrategiesConfig {
    /// "Email verification code".
    pub email_code: bool,
    /// "SMS verification code".
    pub phone_code: bool,
}

impl Default for StrategiesConfig {
    fn default() -> Self {
        Self {
            email_code: true,
            phone_code: true,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PhoneConfig {
    /// ISO country (e.g. "US") for numbers typed without a leading "+".
    pub default_region: Option<String>,
    /// ISO codes ("US", "CA") or calling codes ("+44"). SMS is only ever sent to these. Unset:
    /// phone numbers are off (development instances: any country, since nothing is sent).
    #[serde(
        deserialize_with = "opt_string_or_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub allowed_countries: Option<Vec<String>>,
}

/// The identifier settings as they apply (after validation).
#[derive(Debug, Clone, Copy)]
pub struct IdentifierRules {
    pub email: IdentifierConfig,
    pub phone: IdentifierConfig,
    pub name: NameConfig,
}

impl IdentifierRules {
    /// What the sign-in field accepts.
    pub fn sign_in(&self) -> Accepts {
        Accepts {
            email: self.email.enabled && self.email.used_for_sign_in,
            phone: self.phone.enabled && self.phone.used_for_sign_in,
        }
    }

    /// The kinds a sign-up must have.
    pub fn sign_up_required(&self) -> Accepts {
        Accepts {
            email: self.email.required,
            phone: self.phone.required,
        }
    }

    /// What the sign-up form collects.
    pub fn sign_up(&self) -> Accepts {
        Accepts {
            email: self.email.enabled,
            phone: self.phone.enabled,
        }
    }
}

/// Checks the identifier and strategy settings against each other, naming every key involved
/// in a contradiction, and turns phone numbers off (with a warning) when no country is allowed.
pub(super) fn identifier_rules(
    raw: &RawConfig,
    dev_mode: bool,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(IdentifierRules, PhonePolicy, SmsProvider)> {
    let mut email = raw.identifiers.email;
    let mut phone = raw.identifiers.phone;
    for (name, rules) in [("email", &email), ("phone", &phone)] {
        if !rules.enabled && rules.required {
            bail!("`identifiers.{name}.required` is on but `identifiers.{name}.enabled` is off");
        }
    }
    if email.enabled && !raw.strategies.email_code {
        bail!("`identifiers.email.enabled` is on but `strategies.email_code` is off: email addresses are verified with email codes, so turn the strategy on or the identifier off");
    }
    if phone.enabled && phone.used_for_sign_in && !raw.strategies.phone_code {
        bail!("`identifiers.phone.used_for_sign_in` is on but `strategies.phone_code` is off: nobody could sign in with a phone number");
    }
    if phone.enabled && !raw.strategies.phone_code {
        bail!("`identifiers.phone.enabled` is on but `strategies.phone_code` is off: phone numbers are verified with SMS codes, so turn the strategy on or the identifier off");
    }
    let allowed = raw
        .phone
        .allowed_countries
        .clone()
        .filter(|l| !l.is_empty());
    let policy = PhonePolicy::new(raw.phone.default_region.as_deref(), allowed.as_deref())
        .map_err(|e| anyhow::anyhow!("`phone.allowed_countries` / `phone.default_region`: {e}"))?;
    if phone.enabled && allowed.is_none() && !dev_mode {
        if phone.required || (phone.used_for_sign_in && !(email.enabled && email.used_for_sign_in))
        {
            bail!("`phone.allowed_countries`: phone numbers are required or the only way to sign in, but no country is allowed; list the countries SMS may be sent to (e.g. [\"US\", \"CA\"])");
        }
        warnings.push("phone numbers are off: set `phone.allowed_countries` (e.g. [\"US\", \"CA\"]) and an SMS provider (`sms.provider`) to turn them on".into());
        phone.enabled = false;
        phone.used_for_sign_in = false;
    }
    if !phone.enabled {
        phone.required = false;
        phone.used_for_sign_in = false;
    }
    if !email.enabled {
        email.required = false;
        email.used_for_sign_in = false;
    }
    if !email.enabled && !phone.enabled {
        bail!("`identifiers.email.enabled` and `identifiers.phone.enabled` are both off: accounts need at least one identifier");
    }
    if !email.used_for_sign_in && !phone.used_for_sign_in {
        bail!("`identifiers.email.used_for_sign_in` and `identifiers.phone.used_for_sign_in` are both off: nobody could sign in");
    }
    let sms = if phone.enabled {
        raw.sms.validate(dev_mode)?
    } else {
        SmsProvider::Log
    };
    if phone.enabled && allowed.is_none() && !matches!(sms, SmsProvider::Log) {
        bail!("`phone.allowed_countries`: required with `sms.provider` = \"{}\" (SMS is only ever sent to listed countries), also in dev mode", sms.name());
    }
    if phone.enabled && dev_mode && allowed.is_none() {
        warnings.push("dev mode: phone numbers of any country are accepted (SMS codes are only logged); set `phone.allowed_countries` before sending real SMS".into());
    }
    let name = raw.identifiers.name;
    if name.required && !name.enabled {
        bail!("`identifiers.name.required` needs `identifiers.name.enabled`");
    }
    Ok((IdentifierRules { email, phone, name }, policy, sms))
}
