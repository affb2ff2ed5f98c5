//! STAMP, the IETF's Simple Two-way Active Measurement Protocol (RFC 8762), in its
//! unauthenticated mode, with RFC 8972's Session-Sender Identifier (SSID) and TLVs: the
//! Session-Sender's test packet, the Session-Reflector's reply, their NTP timestamps and
//! Error Estimates (RFC 4656 §4.1.2), and the two TLVs udpkit writes (Extra Padding,
//! Class of Service). docs/PROTOCOL.md shows the layouts.
//!
//! Promise: every `parse_*` reads only within the datagram, never panics, and accepts what
//! the matching `emit_*` writes; [`reflect`] writes a reply exactly as long as the request;
//! a request shorter than [`BASE_LEN`] (but at least [`SENDER_MIN`]) is answered with the
//! base packet, the one answer longer than its request (by 30 bytes at most).

use std::time::Duration;

use crate::wire::protocol::{Claim, Dialect, Prepared, Reflecting, Request, Shape};
use crate::wire::seed::MAX_REPLY;

/// STAMP's well-known port (RFC 8762 §4.1).
pub const PORT: u16 = 862;

/// The length of a test packet without TLVs, sender's and reflector's alike.
pub const BASE_LEN: usize = 44;

/// A TWAMP reflector's packet without padding (RFC 5357 §4.2.1): its last field is the
/// sender's TTL at byte 40.
pub const REFLECTED_MIN: usize = 41;

/// The shortest reflector's packet a sender reads: one that ends with the sender's fields
/// it copies (sequence number, timestamp, error estimate: byte 38), as some TWAMP-light
/// reflectors in the field send (twampy's); its TTL then reads as 0, unknown.
pub const READ_MIN: usize = 38;

/// The shortest request a reflector answers: a TWAMP-light sender's packet without padding
/// (sequence number, timestamp, error estimate: RFC 5357 §4.1.2). Shorter than
/// [`BASE_LEN`], it is answered with the base packet (RFC 8762 §4.6), the fields it lacks
/// read as zero.
pub const SENDER_MIN: usize = 14;

/// TLV flag U: the receiver did not recognise the TLV. A sender sets it; a reflector that
/// knows the type clears it (RFC 8972 §4).
pub const FLAG_U: u8 = 0x80;
/// TLV flag M: the TLV is malformed (its length runs past the packet, or is wrong for its
/// type).
pub const FLAG_M: u8 = 0x40;

/// TLV types (IANA "STAMP TLV Types"): Extra Padding.
pub const TLV_EXTRA_PADDING: u8 = 1;
/// TLV type Class of Service (RFC 8972 §4.4).
pub const TLV_CLASS_OF_SERVICE: u8 = 4;

/// A TLV's header: flags, type, length.
pub const TLV_HEADER: usize = 4;
/// A Class of Service TLV's value (RFC 8972 §4.4 with erratum 8199): DSCP1 (6 bits, asked
/// for the reply), DSCP2 (6, what the request arrived with), EC2 (2, its ECN), RP (2, set
/// by a reflector that did not use DSCP1), then EC1 (2, the ECN asked for), RPE (2) and
/// reserved bits.
pub const COS_LEN: usize = 4;
/// The Extra Padding value udpkit fills with its flow's nonce and the request's sequence
/// number, so that a reflector that echoes TLVs proves each reply genuine.
pub const NONCE_LEN: usize = 16;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A 64-bit NTP timestamp: seconds since 1900 in the high 32 bits, fraction in the low.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NtpTime(pub u64);

impl NtpTime {
    /// The timestamp of a time given as the duration since the Unix epoch.
    pub fn from_unix(since_epoch: Duration) -> NtpTime {
        let seconds = since_epoch.as_secs().wrapping_add(NTP_UNIX_OFFSET) & 0xffff_ffff;
        let fraction = (u64::from(since_epoch.subsec_nanos()) << 32) / 1_000_000_000;
        NtpTime(seconds << 32 | fraction)
    }

    /// This host's wall clock now.
    pub fn now() -> NtpTime {
        NtpTime::from_unix(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }

    /// Nanoseconds from `earlier` to `self`, negative when `self` is earlier; right across
    /// the 2036 wrap for times less than 68 years apart.
    pub fn nanos_since(self, earlier: NtpTime) -> i64 {
        let units = self.0.wrapping_sub(earlier.0) as i64;
        // Rounded to the nearest nanosecond (a unit is about 0.23 ns).
        ((i128::from(units) * 1_000_000_000 + (1 << 31)) >> 32) as i64
    }

    /// `self` moved by `nanos` nanoseconds (either way).
    pub fn plus_nanos(self, nanos: i64) -> NtpTime {
        let units = ((i128::from(nanos) << 32) + 500_000_000).div_euclid(1_000_000_000);
        NtpTime(self.0.wrapping_add(units as i64 as u64))
    }
}

/// How good a timestamp is (RFC 4656 §4.1.2): whether the clock is synchronised to UTC,
/// whether the timestamp is PTP rather than NTP format, and the error bound
/// `multiplier * 2^(scale - 32)` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorEstimate {
    /// S: the clock is synchronised to UTC.
    pub synchronized: bool,
    /// Z: the timestamp is in PTP format (udpkit sends NTP's).
    pub ptp: bool,
    /// The bound's power of two, 0 to 63 (six bits on the wire).
    pub scale: u8,
    /// The bound's multiplier, 1 to 255 (0 is invalid).
    pub multiplier: u8,
}

impl ErrorEstimate {
    /// The estimate for an error of `seconds`, rounded up to what the format can say (a
    /// multiplier of at least 1, as the RFC requires).
    pub fn for_error(seconds: f64, synchronized: bool) -> ErrorEstimate {
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            f64::MAX
        };
        let mut scale = 0u8;
        loop {
            let units = (seconds * 2f64.powi(32 - i32::from(scale))).ceil();
            if units <= 255.0 || scale == 63 {
                return ErrorEstimate {
                    synchronized,
                    ptp: false,
                    scale,
                    multiplier: units.clamp(1.0, 255.0) as u8,
                };
            }
            scale += 1;
        }
    }

    /// The bound on the timestamp's error, in seconds.
    pub fn seconds(self) -> f64 {
        f64::from(self.multiplier) * 2f64.powi(i32::from(self.scale) - 32)
    }

    /// The estimate as its 16 bits on the wire: S, Z, scale (6 bits), multiplier (8).
    pub fn to_bits(self) -> u16 {
        u16::from(self.synchronized) << 15
            | u16::from(self.ptp) << 14
            | u16::from(self.scale & 0x3f) << 8
            | u16::from(self.multiplier)
    }

    /// The estimate 16 bits on the wire say, as [`ErrorEstimate::to_bits`] lays them out.
    pub fn from_bits(bits: u16) -> ErrorEstimate {
        ErrorEstimate {
            synchronized: bits & 0x8000 != 0,
            ptp: bits & 0x4000 != 0,
            scale: ((bits >> 8) & 0x3f) as u8,
            multiplier: bits as u8,
        }
    }
}

/// What a Session-Sender's test packet says (RFC 8972 §3 layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestPacket {
    /// The sender's sequence number, from 0, one more for each packet of the session.
    pub seq: u32,
    /// When the packet left (t1), on the sender's clock.
    pub timestamp: NtpTime,
    /// How good the sender's clock says it is.
    pub error: ErrorEstimate,
    /// The Session-Sender Identifier, naming the session.
    pub ssid: u16,
}

/// What a Session-Reflector's reply says (RFC 8762 §4.3.1, with RFC 8972's SSID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reflected {
    /// The reflector's own sequence number: the sender's (stateless reflector), or its
    /// count of this session's packets (stateful).
    pub seq: u32,
    /// When the reply left (t3).
    pub timestamp: NtpTime,
    /// How good the reflector's clock says it is.
    pub error: ErrorEstimate,
    /// The request's Session-Sender Identifier, copied.
    pub ssid: u16,
    /// When the request arrived (t2).
    pub receive: NtpTime,
    /// The request's sequence number, copied.
    pub sender_seq: u32,
    /// The request's own timestamp (t1), copied.
    pub sender_timestamp: NtpTime,
    /// The request's error estimate, copied.
    pub sender_error: ErrorEstimate,
    /// The TTL or hop limit the request arrived with; 0 when the reflector did not know.
    pub sender_ttl: u8,
}

/// The big-endian integers at `at` (the caller has checked the length).
pub(crate) fn u16_at(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

pub(crate) fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(data[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn u64_at(data: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(data[at..at + 8].try_into().expect("8 bytes"))
}

impl TestPacket {
    /// Writes the packet's first [`BASE_LEN`] bytes (MBZ fields zero); the caller owns the
    /// rest. `buf` must hold at least [`BASE_LEN`] bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        let head = &mut buf[..BASE_LEN];
        head.fill(0);
        head[0..4].copy_from_slice(&self.seq.to_be_bytes());
        head[4..12].copy_from_slice(&self.timestamp.0.to_be_bytes());
        head[12..14].copy_from_slice(&self.error.to_bits().to_be_bytes());
        head[14..16].copy_from_slice(&self.ssid.to_be_bytes());
    }

    /// Reads a test packet; `None` when shorter than [`BASE_LEN`]. MBZ fields are ignored
    /// on receipt, as RFC 8762 says.
    pub fn parse(data: &[u8]) -> Option<TestPacket> {
        if data.len() < BASE_LEN {
            return None;
        }
        Some(TestPacket {
            seq: u32_at(data, 0),
            timestamp: NtpTime(u64_at(data, 4)),
            error: ErrorEstimate::from_bits(u16_at(data, 12)),
            ssid: u16_at(data, 14),
        })
    }
}

impl Reflected {
    /// Writes the reply's first [`BASE_LEN`] bytes, or all of `buf` when it is shorter (a
    /// TWAMP reflector's 41), MBZ fields zero: its first 16 bytes are laid out as a test
    /// packet's. `buf` must hold at least [`REFLECTED_MIN`] bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        let end = BASE_LEN.min(buf.len());
        let head = &mut buf[..end];
        head.fill(0);
        head[0..4].copy_from_slice(&self.seq.to_be_bytes());
        head[4..12].copy_from_slice(&self.timestamp.0.to_be_bytes());
        head[12..14].copy_from_slice(&self.error.to_bits().to_be_bytes());
        head[14..16].copy_from_slice(&self.ssid.to_be_bytes());
        head[16..24].copy_from_slice(&self.receive.0.to_be_bytes());
        head[24..28].copy_from_slice(&self.sender_seq.to_be_bytes());
        head[28..36].copy_from_slice(&self.sender_timestamp.0.to_be_bytes());
        head[36..38].copy_from_slice(&self.sender_error.to_bits().to_be_bytes());
        head[40] = self.sender_ttl;
    }

    /// Reads a reflector's reply; `None` when shorter than [`READ_MIN`] (the sender's TTL,
    /// at byte 40, reads as 0 where the reply ends before it).
    pub fn parse(data: &[u8]) -> Option<Reflected> {
        if data.len() < READ_MIN {
            return None;
        }
        Some(Reflected {
            seq: u32_at(data, 0),
            timestamp: NtpTime(u64_at(data, 4)),
            error: ErrorEstimate::from_bits(u16_at(data, 12)),
            ssid: u16_at(data, 14),
            receive: NtpTime(u64_at(data, 16)),
            sender_seq: u32_at(data, 24),
            sender_timestamp: NtpTime(u64_at(data, 28)),
            sender_error: ErrorEstimate::from_bits(u16_at(data, 36)),
            sender_ttl: data.get(40).copied().unwrap_or(0),
        })
    }
}

/// One TLV found after the base packet: where its header starts, its flags, type and
/// value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// Offset of the TLV's header in the packet.
    pub at: usize,
    /// The flags byte ([`FLAG_U`], [`FLAG_M`]).
    pub flags: u8,
    /// The TLV's type ([`TLV_EXTRA_PADDING`], [`TLV_CLASS_OF_SERVICE`], ...).
    pub kind: u8,
    /// The TLV's value, as long as its header says.
    pub value: &'a [u8],
}

/// The TLVs after the base packet, in order, up to the first that runs past the end (a
/// malformed one ends the walk; what follows it cannot be read as TLVs). Bytes too few
/// for a TLV header at the end are ignored.
pub fn tlvs(data: &[u8]) -> impl Iterator<Item = Tlv<'_>> {
    let mut at = BASE_LEN;
    std::iter::from_fn(move || {
        let header = data.get(at..at + TLV_HEADER)?;
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let value = data.get(at + TLV_HEADER..at + TLV_HEADER + len)?;
        let tlv = Tlv {
            at,
            flags: header[0],
            kind: header[1],
            value,
        };
        at += TLV_HEADER + len;
        Some(tlv)
    })
}

/// Writes a TLV header at `buf[at..]` (flags with U set, as a sender sends it).
fn emit_tlv_header(buf: &mut [u8], at: usize, kind: u8, len: usize) {
    buf[at] = FLAG_U;
    buf[at + 1] = kind;
    buf[at + 2..at + 4].copy_from_slice(&(len as u16).to_be_bytes());
}

/// Where a sender's TLVs sit in a packet of `size` bytes: the Class of Service TLV first
/// (if there is room for it and the padding), then one Extra Padding TLV to the end,
/// whose first 16 bytes are the nonce. Smaller packets carry what fits, in that order of
/// giving up: the CoS TLV first, then the nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the CoS TLV's header.
    pub cos: Option<usize>,
    /// Offset of the Extra Padding TLV's value (the nonce).
    pub nonce: Option<usize>,
}

impl Layout {
    /// The layout of a sender's packet of `size` bytes.
    pub fn for_size(size: usize) -> Layout {
        let padding = TLV_HEADER + NONCE_LEN;
        let cos = TLV_HEADER + COS_LEN;
        if size >= BASE_LEN + cos + padding {
            Layout {
                cos: Some(BASE_LEN),
                nonce: Some(BASE_LEN + cos + TLV_HEADER),
            }
        } else if size >= BASE_LEN + padding {
            Layout {
                cos: None,
                nonce: Some(BASE_LEN + TLV_HEADER),
            }
        } else {
            Layout {
                cos: None,
                nonce: None,
            }
        }
    }

    /// The smallest packet that carries both TLVs.
    pub const FULL: usize = BASE_LEN + TLV_HEADER + COS_LEN + TLV_HEADER + NONCE_LEN;
}

/// Writes a sender's test packet of exactly `size` bytes (at least [`BASE_LEN`]) into
/// `buf`: the base packet, then the TLVs [`Layout::for_size`] has room for: a CoS TLV
/// asking for `dscp` and `ecn` back, and Extra Padding carrying `nonce` and `id_seq`.
pub fn emit_test_packet(
    buf: &mut Vec<u8>,
    packet: &TestPacket,
    size: usize,
    cos: (u8, u8),
    nonce: u64,
    id_seq: u64,
) {
    buf.clear();
    buf.resize(size.max(BASE_LEN), 0);
    packet.emit(buf);
    let layout = Layout::for_size(size);
    if let Some(at) = layout.cos {
        emit_tlv_header(buf, at, TLV_CLASS_OF_SERVICE, COS_LEN);
        buf[at + TLV_HEADER] = (cos.0 & 0x3f) << 2;
        buf[at + TLV_HEADER + 2] = (cos.1 & 3) << 6;
    }
    if let Some(value) = layout.nonce {
        let at = value - TLV_HEADER;
        emit_tlv_header(buf, at, TLV_EXTRA_PADDING, size - value);
        buf[value..value + 8].copy_from_slice(&nonce.to_be_bytes());
        buf[value + 8..value + 16].copy_from_slice(&id_seq.to_be_bytes());
    }
}

/// The nonce and sequence number a reply carries in the Extra Padding TLV where
/// [`emit_test_packet`] put it, if it is there, whole and of the right type.
pub fn reply_nonce(data: &[u8]) -> Option<(u64, u64)> {
    let value = Layout::for_size(data.len()).nonce?;
    let header = data.get(value - TLV_HEADER..value)?;
    if header[1] != TLV_EXTRA_PADDING
        || usize::from(u16::from_be_bytes([header[2], header[3]])) != data.len() - value
    {
        return None;
    }
    Some((u64_at(data, value), u64_at(data, value + 8)))
}

/// What a reflector's Class of Service TLV says: the DSCP and ECN the request arrived
/// with (DSCP2, EC2) and RP (the reflector could not use the DSCP asked for on its reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CosSeen {
    /// DSCP2: the DSCP the request arrived with (6 bits).
    pub dscp: u8,
    /// EC2: the ECN the request arrived with (2 bits).
    pub ecn: u8,
    /// RP (2 bits): nonzero when the reflector did not use the DSCP asked for on its reply.
    pub rp: u8,
}

/// The Class of Service TLV of a reply, if the reflector recognised it (U clear) and
/// filled it.
pub fn reply_cos(data: &[u8]) -> Option<CosSeen> {
    let tlv = tlvs(data).find(|t| t.kind == TLV_CLASS_OF_SERVICE)?;
    if tlv.flags & (FLAG_U | FLAG_M) != 0 || tlv.value.len() != COS_LEN {
        return None;
    }
    let v = tlv.value;
    Some(CosSeen {
        dscp: (v[0] & 3) << 4 | v[1] >> 4,
        ecn: (v[1] >> 2) & 3,
        rp: v[1] & 3,
    })
}

/// What the reflector knows of a request besides its bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Arrival {
    /// When it arrived (t2).
    pub at: NtpTime,
    /// The TTL or hop limit it arrived with, if the kernel said.
    pub ttl: Option<u8>,
    /// The TOS or traffic class byte it arrived with (DSCP and ECN), if the kernel said.
    pub tos: Option<u8>,
}

/// Writes a reflector's base reply over the first bytes of `packet` (at least
/// [`REFLECTED_MIN`]; 44 at most are written), from the sender's fields it holds: sequence
/// number, timestamp, error estimate and (STAMP's, RFC 8972) SSID; the rest is left as it
/// is. `seq` is the reflector's own sequence number (`None`: the sender's).
pub fn reflect_base(
    packet: &mut [u8],
    arrival: &Arrival,
    seq: Option<u32>,
    sent: NtpTime,
    error: ErrorEstimate,
) {
    let sender_seq = u32_at(packet, 0);
    let reply = Reflected {
        seq: seq.unwrap_or(sender_seq),
        timestamp: sent,
        error,
        ssid: u16_at(packet, 14),
        receive: arrival.at,
        sender_seq,
        sender_timestamp: NtpTime(u64_at(packet, 4)),
        sender_error: ErrorEstimate::from_bits(u16_at(packet, 12)),
        sender_ttl: arrival.ttl.unwrap_or(0),
    };
    reply.emit(packet);
}

/// What a reflector does with a request's Class of Service TLV (RFC 8972 §4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CosPolicy {
    /// Send the reply with the DSCP and ECN the sender asked for (DSCP1, EC1): RP = 0.
    Honour,
    /// Send it as the request arrived (DSCP2, EC2) where this host cannot mark each reply:
    /// RP = 1.
    AsArrived,
}

/// Turns the request in `packet` into the Session-Reflector's reply, in place and of the
/// same length: the base reply over the first [`BASE_LEN`] bytes, then what follows as
/// RFC 8972 §4 says. Bytes that are all zero are padding (a TWAMP-light sender's, RFC 8762
/// §4.6) and are copied as they came. Otherwise they are TLVs, each one's flags set anew:
/// U on a type udpkit does not know, M on a malformed one (its length runs past the
/// packet, or is wrong for its type; the walk stops there, what follows copied), I and the
/// reserved bits zero; the Class of Service TLV filled with what the request arrived with.
/// `seq` is the reflector's sequence number; `sent` (t3) and `error` describe the
/// reflector's clock.
///
/// Returns the TOS byte the reply must go out with when the request carried a Class of
/// Service TLV (`None`: none, or `packet` is too short to be a test packet, and then it
/// is left as it was).
pub fn reflect(
    packet: &mut [u8],
    arrival: &Arrival,
    seq: Option<u32>,
    sent: NtpTime,
    error: ErrorEstimate,
    policy: CosPolicy,
) -> Option<u8> {
    if packet.len() < BASE_LEN {
        return None;
    }
    reflect_base(packet, arrival, seq, sent, error);
    if packet[BASE_LEN..].iter().all(|&b| b == 0) {
        return None;
    }
    let arrived = arrival.tos.unwrap_or(0);
    let mut tos = None;
    let mut at = BASE_LEN;
    while let Some(header) = packet.get(at..at + TLV_HEADER) {
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let kind = header[1];
        let known = matches!(kind, TLV_EXTRA_PADDING | TLV_CLASS_OF_SERVICE);
        let unknown = if known { 0 } else { FLAG_U };
        let end = at + TLV_HEADER + len;
        if end > packet.len() || (kind == TLV_CLASS_OF_SERVICE && len != COS_LEN) {
            packet[at] = FLAG_M | unknown;
            break;
        }
        packet[at] = unknown;
        if kind == TLV_CLASS_OF_SERVICE {
            let value = &mut packet[at + TLV_HEADER..end];
            let (dscp1, ec1) = (value[0] >> 2, value[2] >> 6);
            let (dscp2, ec2) = (arrived >> 2, arrived & 3);
            let (out, rp) = match policy {
                CosPolicy::Honour => (dscp1 << 2 | ec1, 0),
                CosPolicy::AsArrived => (arrived, 1),
            };
            tos = Some(out);
            // DSCP1 kept; DSCP2 and EC2 what the request arrived with; RP as decided.
            value[0] = (value[0] & 0xfc) | dscp2 >> 4;
            value[1] = (dscp2 & 0x0f) << 4 | ec2 << 2 | rp;
            // EC1 kept; RPE and the reserved bits zero.
            value[2] &= 0xc0;
            value[3] = 0;
        }
        at = end;
    }
    tos
}

/// STAMP, unauthenticated: udpkit's test packets carry a Class of Service TLV and its
/// nonce in Extra Padding where there is room; a reflector answers each in place.
#[derive(Debug)]
pub struct Stamp;

impl Dialect for Stamp {
    fn name(&self) -> &'static str {
        "stamp"
    }

    fn banner(&self, stateful: bool) -> Option<&'static str> {
        Some(if stateful {
            "STAMP Session-Reflector, stateful"
        } else {
            "STAMP Session-Reflector, stateless"
        })
    }

    fn default_port(&self) -> u16 {
        PORT
    }

    fn default_size(&self) -> usize {
        Layout::FULL
    }

    fn min_size(&self) -> usize {
        BASE_LEN
    }

    fn test_packets(&self) -> bool {
        true
    }

    fn has_sessions(&self) -> bool {
        true
    }

    fn shape(&self, size: usize) -> Shape {
        // The sequence number and timestamp a reply echoes name its request: one length.
        Shape {
            size: size.max(BASE_LEN),
            distinct_lengths: false,
            ids_from_start: false,
        }
    }

    fn proves(&self, len: usize) -> bool {
        Layout::for_size(len).nonce.is_some()
    }

    fn write_request(&self, buf: &mut Vec<u8>, r: &Request) -> NtpTime {
        let t1 = NtpTime::now();
        let packet = TestPacket {
            seq: r.id.seq as u32,
            timestamp: t1,
            error: r.session.error,
            ssid: r.session.ssid,
        };
        emit_test_packet(buf, &packet, r.len, r.session.cos, r.id.nonce, r.id.seq);
        t1
    }

    fn read_reply(&self, data: &[u8]) -> Claim {
        match Reflected::parse(data) {
            None => Claim::Bad,
            Some(reply) => Claim::Reflected {
                reply,
                proof: reply_nonce(data),
                cos: reply_cos(data),
                authenticated: false,
            },
        }
    }

    fn prepare(&self, request: &[u8], reply: &mut [u8; MAX_REPLY]) -> Prepared {
        // Reflected in `complete`, once the rate limit has said yes: a stateful session
        // counts only what is answered. A request shorter than the base packet (a
        // TWAMP-light sender's) is answered with the base packet (RFC 8762 §4.6).
        match request.len() {
            n if n < SENDER_MIN => Prepared::Malformed,
            n if n < BASE_LEN => {
                reply[..n].copy_from_slice(request);
                reply[n..BASE_LEN].fill(0);
                Prepared::Written(BASE_LEN)
            }
            n => Prepared::InPlace(n),
        }
    }

    fn completes(&self) -> bool {
        true
    }

    fn complete(&self, answer: &mut [u8], ctx: &mut Reflecting<'_>) -> Option<u8> {
        let seq = TestPacket::parse(answer).and_then(|p| (ctx.session_seq)(p.ssid));
        let policy = if ctx.marks_each_answer {
            CosPolicy::Honour
        } else {
            CosPolicy::AsArrived
        };
        reflect(answer, &ctx.arrival, seq, ctx.sent, ctx.clock_error, policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(seq: u32) -> TestPacket {
        TestPacket {
            seq,
            timestamp: NtpTime(0xe8f1_2345_8000_0000),
            error: ErrorEstimate::for_error(1e-6, true),
            ssid: 0xbeef,
        }
    }

    #[test]
    fn ntp_time_of_the_unix_epoch_and_back() {
        assert_eq!(NtpTime::from_unix(Duration::ZERO).0, NTP_UNIX_OFFSET << 32);
        let t = NtpTime::from_unix(Duration::new(1_700_000_000, 500_000_000));
        assert_eq!(t.0 & 0xffff_ffff, 1 << 31);
        let later = t.plus_nanos(1_500);
        assert_eq!(later.nanos_since(t), 1_500);
        assert_eq!(t.nanos_since(later), -1_500);
        // Across the 2036 wrap of the seconds field.
        let before = NtpTime(0xffff_ffff_8000_0000);
        let after = before.plus_nanos(1_000_000_000);
        assert_eq!(after.nanos_since(before), 1_000_000_000);
    }

    #[test]
    fn error_estimates_round_up_and_never_say_zero() {
        let e = ErrorEstimate::for_error(0.0, false);
        assert_eq!((e.scale, e.multiplier), (0, 1));
        let e = ErrorEstimate::for_error(1e-6, true);
        assert!(
            e.seconds() >= 1e-6 && e.seconds() < 1.01e-6,
            "{e:?} {}",
            e.seconds()
        );
        let e = ErrorEstimate::for_error(16.0, false);
        assert!(e.seconds() >= 16.0 && e.seconds() < 16.1);
        assert_eq!(ErrorEstimate::from_bits(e.to_bits()), e);
        assert!(ErrorEstimate::for_error(f64::INFINITY, false).seconds() > 1e9);
    }

    #[test]
    fn a_request_reflected_in_place_keeps_its_length_and_echoes_the_sender() {
        let mut buf = Vec::new();
        emit_test_packet(&mut buf, &sample(7), Layout::FULL, (46, 1), 0x1122, 7);
        assert_eq!(buf.len(), 72);
        assert_eq!(TestPacket::parse(&buf), Some(sample(7)));
        let arrival = Arrival {
            at: NtpTime(0xe8f1_2345_9000_0000),
            ttl: Some(63),
            tos: Some(10 << 2 | 2),
        };
        let error = ErrorEstimate::for_error(2e-6, false);
        let sent = arrival.at.plus_nanos(3_000);
        let request = buf.clone();
        // A host that cannot mark each reply sends it as the request arrived, and says so.
        let tos = reflect(
            &mut buf,
            &arrival,
            Some(3),
            sent,
            error,
            CosPolicy::AsArrived,
        );
        assert_eq!(tos, Some(10 << 2 | 2));
        assert_eq!(buf.len(), 72);
        let r = Reflected::parse(&buf).unwrap();
        assert_eq!(
            r,
            Reflected {
                seq: 3,
                timestamp: sent,
                error,
                ssid: 0xbeef,
                receive: arrival.at,
                sender_seq: 7,
                sender_timestamp: sample(7).timestamp,
                sender_error: sample(7).error,
                sender_ttl: 63,
            }
        );
        assert_eq!(reply_nonce(&buf), Some((0x1122, 7)));
        assert_eq!(
            reply_cos(&buf),
            Some(CosSeen {
                dscp: 10,
                ecn: 2,
                rp: 1
            })
        );
        let flags: Vec<u8> = tlvs(&buf).map(|t| t.flags).collect();
        assert_eq!(flags, [0, 0]);
        // One that can sends it with the DSCP and ECN asked for (46, 1): RP 0.
        let mut buf = request;
        let tos = reflect(&mut buf, &arrival, Some(3), sent, error, CosPolicy::Honour);
        assert_eq!(tos, Some(46 << 2 | 1));
        assert_eq!(
            reply_cos(&buf).map(|c| (c.dscp, c.ecn, c.rp)),
            Some((10, 2, 0))
        );
    }

    /// The flags byte of each TLV header from byte 44 on, as a reflector leaves them.
    fn flags_after(packet: &[u8], at: &[usize]) -> Vec<u8> {
        at.iter().map(|&i| packet[i]).collect()
    }

    fn reflected(tlvs: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        emit_test_packet(&mut buf, &sample(1), 44, (0, 0), 0, 0);
        buf.extend_from_slice(tlvs);
        let e = ErrorEstimate::for_error(1.0, false);
        reflect(
            &mut buf,
            &Arrival::default(),
            None,
            NtpTime(1),
            e,
            CosPolicy::Honour,
        );
        buf
    }

    #[test]
    fn a_reflector_sets_each_tlvs_flags_as_rfc_8972_says() {
        // The sender's M and I and reserved bits are not echoed: 0x60 and 0x9f on known
        // types come back 0; U on an unknown type, whatever the sender set.
        let buf = reflected(&[
            0x60, 1, 0, 2, 0, 0, 0x9f, 4, 0, 4, 0, 0, 0, 0, 0x7f, 200, 0, 0,
        ]);
        assert_eq!(flags_after(&buf, &[44, 50, 58]), [0, 0, FLAG_U]);
        assert_eq!(
            Reflected::parse(&buf).unwrap().seq,
            1,
            "stateless: the sender's"
        );
    }

    #[test]
    fn the_first_malformed_tlv_is_flagged_and_ends_the_walk() {
        // A 2-byte CoS (a known type, malformed): M alone, U clear; the unknown TLV after
        // it is not looked at (its flags stay as sent).
        let buf = reflected(&[0xc0, 4, 0, 2, 0, 0, 0x80, 200, 0, 0]);
        assert_eq!(flags_after(&buf, &[44, 50]), [FLAG_M, 0x80]);
        // Extra Padding whose length runs past the end: M, U clear.
        let buf = reflected(&[0x80, 1, 0, 99, 5]);
        assert_eq!(buf[44], FLAG_M);
        // An unknown type that runs past the end: U and M.
        let buf = reflected(&[0, 200, 0, 99, 5]);
        assert_eq!(buf[44], FLAG_U | FLAG_M);
    }

    #[test]
    fn zeros_after_the_base_packet_are_padding_and_come_back_as_they_came() {
        // A TWAMP-light sender's padding (RFC 8762 §4.6): not five Reserved TLVs with U.
        let buf = reflected(&[0; 20]);
        assert!(buf[44..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_request_shorter_than_the_base_packet_gets_the_base_packet() {
        let mut request = Vec::new();
        emit_test_packet(&mut request, &sample(9), 44, (0, 0), 0, 0);
        request.truncate(14); // a TWAMP-light sender's packet without padding
        let mut reply = [0u8; MAX_REPLY];
        assert_eq!(
            Stamp.prepare(&request, &mut reply),
            Prepared::Written(BASE_LEN)
        );
        assert_eq!(
            Stamp.prepare(&request[..13], &mut reply),
            Prepared::Malformed
        );
        assert_eq!(Stamp.prepare(&[0; 44], &mut reply), Prepared::InPlace(44));
        let mut none = |_| None;
        let mut ctx = Reflecting {
            arrival: Arrival::default(),
            sent: NtpTime(7),
            clock_error: ErrorEstimate::for_error(1.0, false),
            marks_each_answer: true,
            session_seq: &mut none,
        };
        let mut reply = reply[..BASE_LEN].to_vec();
        Stamp.complete(&mut reply, &mut ctx);
        let r = Reflected::parse(&reply).unwrap();
        assert_eq!((r.sender_seq, r.sender_timestamp), (9, sample(9).timestamp));
        assert_eq!(r.ssid, 0, "the request had no SSID");
    }

    #[test]
    fn small_packets_give_up_the_cos_tlv_then_the_nonce() {
        assert_eq!(
            Layout::for_size(44),
            Layout {
                cos: None,
                nonce: None
            }
        );
        assert_eq!(Layout::for_size(63).nonce, None);
        assert_eq!(
            Layout::for_size(64),
            Layout {
                cos: None,
                nonce: Some(48)
            }
        );
        assert_eq!(Layout::for_size(71).cos, None);
        assert_eq!(Layout::for_size(72).cos, Some(44));
        for size in [44, 50, 63, 64, 71, 72, 1000] {
            let mut buf = Vec::new();
            emit_test_packet(&mut buf, &sample(1), size, (0, 0), 9, 1);
            assert_eq!(buf.len(), size);
            assert_eq!(reply_nonce(&buf).is_some(), size >= 64);
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = TestPacket::parse(&data);
            let _ = Reflected::parse(&data);
            let _ = reply_nonce(&data);
            let _ = reply_cos(&data);
            let _ = tlvs(&data).count();
        }

        #[test]
        fn reflecting_anything_never_panics_nor_changes_its_length(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            ttl in proptest::option::of(any::<u8>()),
            tos in proptest::option::of(any::<u8>()),
        ) {
            let mut packet = data.clone();
            let arrival = Arrival { at: NtpTime(5), ttl, tos };
            let e = ErrorEstimate::for_error(1e-3, false);
            let tos = reflect(&mut packet, &arrival, None, NtpTime(6), e, CosPolicy::Honour);
            prop_assert_eq!(packet.len(), data.len());
            let ok = data.len() >= BASE_LEN;
            prop_assert!(ok || (packet == data && tos.is_none()));
            if ok {
                let r = Reflected::parse(&packet).unwrap();
                let s = TestPacket::parse(&data).unwrap();
                prop_assert_eq!(r.sender_seq, s.seq);
                prop_assert_eq!(r.sender_timestamp, s.timestamp);
                prop_assert_eq!(r.ssid, s.ssid);
            }
        }

        #[test]
        fn test_packets_round_trip(
            seq in any::<u32>(), t in any::<u64>(), bits in any::<u16>(), ssid in any::<u16>(),
            size in BASE_LEN..400usize, nonce in any::<u64>(), id in any::<u64>(),
        ) {
            let packet = TestPacket { seq, timestamp: NtpTime(t), error: ErrorEstimate::from_bits(bits & 0xbfff), ssid };
            let mut buf = Vec::new();
            emit_test_packet(&mut buf, &packet, size, (1, 1), nonce, id);
            prop_assert_eq!(buf.len(), size);
            prop_assert_eq!(TestPacket::parse(&buf), Some(packet));
            prop_assert_eq!(reply_nonce(&buf), (size >= 64).then_some((nonce, id)));
        }

        #[test]
        fn nanoseconds_round_trip(t in any::<u64>(), nanos in -4_000_000_000_000i64..4_000_000_000_000) {
            let moved = NtpTime(t).plus_nanos(nanos);
            prop_assert_eq!(moved.nanos_since(NtpTime(t)), nanos);
        }
    }
}
