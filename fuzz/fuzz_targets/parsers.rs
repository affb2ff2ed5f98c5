//! Fuzz target for everything udpkit reads off the wire: replies (with and without a
//! request ID), request IDs, echoes, stream datagrams, STAMP test packets, reflected packets and TLVs, the
//! reflector's in-place reply, and the Python-repr display of any datagram. The promise
//! checked: no panic, no out-of-bounds read, parse(emit(x)) == x for what parses, and a
//! STAMP reply exactly as long as its request.
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
    let mut flow = udpkit::fuzzing::Flow::new(38, 16);
    let mut request = Vec::new();
    flow.next_request(&mut request, std::time::Instant::now());
    let _ = flow.on_reply(data, std::time::Instant::now());

    if let Some(m) = udpkit::wire::stream::Message::parse(data) {
        let mut buf = vec![0u8; data.len().max(256)];
        let n = m.emit(&mut buf, 0);
        assert_eq!(udpkit::wire::stream::Message::parse(&buf[..n]), Some(m));
    }
    use udpkit::wire::stamp;
    let _ = udpkit::wire::parse_echo(data);
    let _ = stamp::TestPacket::parse(data);
    let _ = stamp::Reflected::parse(data);
    let _ = stamp::reply_nonce(data);
    let _ = stamp::reply_cos(data);
    let _ = stamp::tlvs(data).count();
    let mut reply = data.to_vec();
    let arrival = stamp::Arrival { at: stamp::NtpTime(1), ttl: Some(1), tos: Some(1) };
    let e = stamp::ErrorEstimate::for_error(1e-6, false);
    let policy = stamp::CosPolicy::Honour;
    let tos = stamp::reflect(&mut reply, &arrival, Some(1), stamp::NtpTime(2), e, policy);
    assert_eq!(reply.len(), data.len());
    assert!(data.len() >= stamp::BASE_LEN || (reply == data && tos.is_none()));
    for protocol in [udpkit::wire::Protocol::ECHO, udpkit::wire::Protocol::STAMP] {
        let mut flow = udpkit::fuzzing::Flow::new(72, 16);
        flow.set_protocol(protocol, (0, 0));
        flow.next_request(&mut request, std::time::Instant::now());
        let _ = flow.on_reply(data, std::time::Instant::now());
        let _ = flow.on_reply(&reply, std::time::Instant::now());
    }
});
