//! Types that can only be built by parsing: once a value exists, it is valid.

mod code;
mod email;
mod flow;
mod identifier;
mod ids;
mod name;
mod phone;
mod redirect;
mod test_mode;

pub use code::{CodeError, OtpCode};
pub use email::{EmailAddress, EmailError};
pub use flow::{
    AuditKind, AuditOutcome, Channel, CodeStatus, FlowKind, FlowStatus, OutboxChannel, Stored,
};
pub use identifier::{Accepts, Identifier, IdentifierError, IdentifierKind};
pub use ids::{FlowId, GrantId, IdentifierId, MessageId, SessionId, UserId, VerificationId};
pub use name::{NameError, Names, PersonName};
pub use phone::{AllowedCountries, PhoneError, PhoneNumber, PhonePolicy};
pub use redirect::{AllowedOrigin, Origin, RedirectTarget};
pub use test_mode::TestMode;
