//! Types that can only be built by parsing: once a value exists, it is valid.

mod code;
mod email;
mod identifier;
mod ids;
mod phone;
mod redirect;

pub use code::{CodeError, OtpCode};
pub use email::{EmailAddress, EmailError};
pub use identifier::{Accepts, Identifier, IdentifierError, IdentifierKind};
pub use ids::{FlowId, IdentifierId, MessageId, SessionId, UserId, VerificationId};
pub use phone::{AllowedCountries, PhoneError, PhoneNumber, PhonePolicy};
pub use redirect::{Origin, RedirectTarget};
