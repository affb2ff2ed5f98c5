//! The one sender of a stream's numbered datagrams, either side of `udpkit stream`: the
//! client's forward stream and the server's reverse ones.
//!
//! Promise: datagrams go in order, numbered from where the last turn stopped, in segmented
//! sends (GSO) where the socket and the path take them, otherwise in batches of single
//! ones (`sendmmsg`); a turn stops at the first refusal, so no number is skipped and sent
//! later; at most [`limits::STREAM_SEND_BYTES`] (and one datagram) are held at a time.

use std::net::{SocketAddr, UdpSocket};

use crate::io::clock::wall_ns;
use crate::io::datagram::BATCH;
use crate::io::state::{Out, Refusal, SocketState};
use crate::limits;
use crate::wire::stream::Message;

/// What one turn of a stream's sender did.
pub(crate) struct Turn {
    /// Datagrams that went, the first ones of those asked for.
    pub went: u64,
    /// The refusal of the datagram that stopped the turn (a path refusing segmented sends
    /// is got past, not returned).
    pub refusal: Option<Refusal>,
}

/// A stream's sender, either side: data datagrams numbered in order, in segmented sends
/// (GSO) where the path takes them, otherwise batches of single ones (`sendmmsg`), always
/// stopping at a refusal so that no number is skipped and sent later. It holds at most
/// [`limits::STREAM_SEND_BYTES`] (and one datagram) of them at a time.
pub(crate) struct DataSender {
    /// The socket's abilities: segmented where the socket and the path allow (it sends
    /// singly what a path refuses segmented: too big for its MTU, or no segmentation).
    state: SocketState,
    packed: Vec<u8>,
    outs: Vec<Out>,
    size: usize,
}

impl DataSender {
    /// For datagrams of `size` bytes (at most `limits::DATAGRAM_MAX`) on a socket of
    /// `state` (segmented where it allows).
    pub fn new(state: SocketState, size: usize) -> DataSender {
        let size = size.clamp(1, limits::DATAGRAM_MAX);
        let fit = (limits::STREAM_SEND_BYTES / size).clamp(1, BATCH);
        let most = fit.max(state.segments(size));
        DataSender {
            packed: vec![0u8; size * most],
            outs: (0..most).map(|k| Out::at(k * size, size)).collect(),
            state,
            size,
        }
    }

    /// Sends up to `due` datagrams of stream `id` numbered from `first`, to `to` (`None`:
    /// the connected peer), stamped now.
    pub fn send(
        &mut self,
        socket: &UdpSocket,
        to: Option<SocketAddr>,
        id: u64,
        first: u64,
        due: u64,
    ) -> Turn {
        let size = self.size;
        let segments = self.state.segments(size);
        let most = if segments > 1 {
            segments
        } else {
            (limits::STREAM_SEND_BYTES / size).clamp(1, BATCH)
        };
        let n = usize::try_from(due)
            .unwrap_or(usize::MAX)
            .min(most)
            .min(self.outs.len());
        let at = wall_ns();
        for k in 0..n {
            Message::Data {
                id,
                seq: first.saturating_add(k as u64),
                sent_ns: at,
            }
            .emit(&mut self.packed[k * size..(k + 1) * size], size);
            self.outs[k].to = to;
        }
        // In order, stopping at the first datagram refused (a segmented send the path
        // refuses goes again singly, inside).
        let (totals, refusal) = self
            .state
            .send_prefix(socket, &[&self.packed], &self.outs[..n]);
        Turn {
            went: totals.sent,
            refusal,
        }
    }
}
