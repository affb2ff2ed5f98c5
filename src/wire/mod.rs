//! The bytes on the wire and around them: the seed's reply and udpkit's request-ID
//! extension (`seed`), echo (`echo`, RFC 862), STAMP (`stamp`, RFC 8762/8972), which of
//! them is spoken (`protocol`), `udpkit stream`'s datagrams (`stream`), the seed client's message (`timestamp`), and the safe
//! display of whatever a peer sent (`quote`). Nothing here touches a socket.

mod echo;
pub mod protocol;
mod quote;
mod seed;
pub mod stamp;
mod stamp_auth;
pub mod stream;
mod timestamp;
mod twamp;

pub use echo::parse_echo;
pub use protocol::{Dialect, Protocol};
pub use quote::{repr, repr_into};
pub use seed::*;
pub use timestamp::time_message;
