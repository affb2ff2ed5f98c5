//! Fuzz target for everything udpkit reads off the wire: replies (with and without a
//! request ID), request IDs, and the Python-repr display of any datagram. The promise
//! checked: no panic, no out-of-bounds read, and parse(emit(x)) == x for what parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udpkit::wire::{MAX_REPLY, emit_reply, parse_reply, request_id};

fuzz_target!(|data: &[u8]| {
    if let Some(reply) = parse_reply(data) {
        let mut buf = [0u8; MAX_REPLY];
        let n = emit_reply(&mut buf, reply.len, reply.id);
        assert_eq!(&buf[..n], data, "an accepted reply is exactly what emit writes");
    }
    if let Some(id) = request_id(data) {
        let mut buf = [0u8; MAX_REPLY];
        let n = emit_reply(&mut buf, data.len(), Some(id));
        assert_eq!(parse_reply(&buf[..n]).and_then(|r| r.id), Some(id));
    }
    let shown = udpkit::wire::repr(data);
    assert!(!shown.chars().any(char::is_control));
    // The client's matching must classify anything without panicking.
    let mut flow = udpkit::load::flow::Flow::new(38, 16);
    let mut request = Vec::new();
    flow.next_request(&mut request, std::time::Instant::now());
    let _ = flow.on_reply(data, std::time::Instant::now());
});
