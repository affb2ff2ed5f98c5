//! The bytes on the wire and around them: the seed's reply and udpkit's request-ID
//! extension (`seed`), the seed client's message (`timestamp`), and the safe display of
//! whatever a peer sent (`quote`). Nothing here touches a socket.

mod quote;
mod seed;
mod timestamp;

pub use quote::{repr, repr_into};
pub use seed::*;
pub use timestamp::time_message;
