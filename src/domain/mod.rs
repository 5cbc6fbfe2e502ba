//! Types that can only be built by parsing: once a value exists, it is valid.

mod code;
mod email;
mod ids;
mod redirect;

pub use code::{CodeError, OtpCode};
pub use email::{EmailAddress, EmailError};
pub use ids::{FlowId, IdentifierId, MessageId, SessionId, UserId, VerificationId};
pub use redirect::{Origin, RedirectTarget};
