//! The stored vocabulary of flows, verifications, channels and audit events: each an enum with
//! one spelling in the database. They are decoded once, where a row is read; an unknown word is
//! an error (a corrupt or newer row), never a silent default.

use super::IdentifierKind;

/// A value stored as one fixed word.
pub trait Stored: Sized + Copy + 'static {
    /// What the column holds, for error messages.
    const WHAT: &'static str;
    /// Every value, in declaration order.
    const ALL: &'static [Self];
    /// The stored spelling.
    fn as_str(self) -> &'static str;
    /// The inverse of [`as_str`](Self::as_str); `None` for any other text.
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

macro_rules! stored_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident => $word:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl Stored for $name {
            const WHAT: &'static str = $what;
            const ALL: &'static [Self] = &[$(Self::$variant,)+];
            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)+
                }
            }
        }

        impl $name {
            /// The stored spelling.
            pub fn as_str(self) -> &'static str {
                <Self as Stored>::as_str(self)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_enum! {
    /// What a flow is for.
    FlowKind, "flow kind" {
        SignUp => "sign_up",
        SignIn => "sign_in",
        /// A signed-in person adds an email address or phone number to their account.
        AddIdentifier => "add_identifier",
        /// A signed-in person proves again that they hold one of their identifiers, before an
        /// action that could take the account from them.
        Reverify => "reverify",
    }
}

stored_enum! {
    /// Where a flow stands. An expired flow is still `Pending`: expiry is a comparison with now.
    FlowStatus, "flow status" {
        Pending => "pending",
        Complete => "complete",
    }
}

stored_enum! {
    /// Where one verification's code stands, as stored. Expiry and used-up tries of a pending
    /// code are comparisons (with now, with `max_attempts`), not stored states.
    CodeStatus, "verification status" {
        /// No code sent yet: a later sign-up step, or a flow created through the API.
        Waiting => "waiting",
        /// A code is out.
        Pending => "pending",
        /// The code was consumed.
        Verified => "verified",
        /// Its tries were used up; only a new code helps.
        Failed => "failed",
    }
}

stored_enum! {
    /// How a code travels.
    Channel, "channel" {
        Email => "email",
        Sms => "sms",
    }
}

stored_enum! {
    /// Where an outbox message goes: a code's channel, or an OpenID Connect client's
    /// back-channel logout endpoint.
    OutboxChannel, "outbox channel" {
        Email => "email",
        Sms => "sms",
        BackchannelLogout => "backchannel_logout",
    }
}

impl From<Channel> for OutboxChannel {
    fn from(c: Channel) -> Self {
        match c {
            Channel::Email => OutboxChannel::Email,
            Channel::Sms => OutboxChannel::Sms,
        }
    }
}

impl Channel {
    /// The channel that reaches an identifier of this kind.
    pub fn of(kind: IdentifierKind) -> Self {
        match kind {
            IdentifierKind::Email => Channel::Email,
            IdentifierKind::Phone => Channel::Sms,
        }
    }

    /// The kind of identifier this channel reaches.
    pub fn kind(self) -> IdentifierKind {
        match self {
            Channel::Email => IdentifierKind::Email,
            Channel::Sms => IdentifierKind::Phone,
        }
    }
}

impl Stored for IdentifierKind {
    const WHAT: &'static str = "identifier kind";
    const ALL: &'static [Self] = &[IdentifierKind::Email, IdentifierKind::Phone];
    fn as_str(self) -> &'static str {
        IdentifierKind::as_str(self)
    }
}

stored_enum! {
    /// A security event of the audit log. Refusals (rate limits, a locked identifier) are
    /// logged but never written: a flood must not become write load.
    AuditKind, "audit event" {
        /// A flow started and its first code went out.
        CodeSent => "code_sent",
        /// A new code replaced the previous one.
        CodeResent => "code_resent",
        /// A flow was created without a code (the API's create).
        FlowCreated => "flow_created",
        CodeIncorrect => "code_incorrect",
        /// Too many consecutive wrong codes locked the identifier.
        IdentifierLocked => "identifier_locked",
        /// One identifier of a sign-up with several was verified.
        IdentifierVerified => "identifier_verified",
        SignIn => "sign_in",
        SignUp => "sign_up",
        IdentifierAdded => "identifier_added",
        SignOut => "sign_out",
        /// Someone tried to sign up with an identifier of this account.
        SignUpWithTakenIdentifier => "sign_up_with_taken_identifier",
        /// A backend API call with a wrong or missing secret key.
        BackendKeyRefused => "backend_key_refused",
        /// The person changed their name.
        NameChanged => "name_changed",
        /// A session verified a fresh code on /user.
        Reverified => "reverified",
        IdentifierRemoved => "identifier_removed",
        PrimaryIdentifierChanged => "primary_identifier_changed",
        /// The person signed out one of their other devices.
        SessionRevoked => "session_revoked",
        /// The person deleted their account (kept for the operator: the user id stays).
        AccountDeleted => "account_deleted",
        /// Someone tried to add an identifier of this account to another account.
        AddWithTakenIdentifier => "add_with_taken_identifier",
    }
}

stored_enum! {
    /// How an audited action ended.
    AuditOutcome, "audit outcome" {
        Success => "success",
        Failure => "failure",
        Refused => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T: Stored + PartialEq + std::fmt::Debug>() {
        for v in T::ALL {
            assert_eq!(T::parse(v.as_str()), Some(*v), "{}", T::WHAT);
        }
        let mut words: Vec<_> = T::ALL.iter().map(|v| v.as_str()).collect();
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), T::ALL.len(), "{}: one word per value", T::WHAT);
    }

    #[test]
    fn every_stored_word_decodes_to_its_value_and_no_word_is_shared() {
        round_trips::<FlowKind>();
        round_trips::<FlowStatus>();
        round_trips::<CodeStatus>();
        round_trips::<Channel>();
        round_trips::<IdentifierKind>();
        round_trips::<AuditKind>();
        round_trips::<AuditOutcome>();
    }

    #[test]
    fn an_unknown_or_differently_cased_word_is_not_a_value() {
        assert_eq!(CodeStatus::parse("Pending"), None);
        assert_eq!(FlowStatus::parse("expired"), None);
        assert_eq!(Channel::parse(""), None);
    }

    #[test]
    fn each_identifier_kind_has_its_channel_and_back() {
        for kind in IdentifierKind::ALL {
            assert_eq!(Channel::of(*kind).kind(), *kind);
        }
    }
}
