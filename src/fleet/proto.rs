//! The two messages of Envoy's rate-limit service protocol the gateway speaks
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`), written and read by hand:
//! a few dozen bytes each way, no protobuf runtime in the `.wasm`.
//!
//! Field numbers are those of `envoy/service/ratelimit/v3/rls.proto` and
//! `envoy/extensions/common/ratelimit/v3/ratelimit.proto`:
//! `RateLimitRequest{domain = 1, descriptors = 2, hits_addend = 3}`,
//! `RateLimitDescriptor{entries = 1 {key = 1, value = 2}, limit = 2 {requests_per_unit = 1,
//! unit = 2}}`, `RateLimitResponse{overall_code = 1, statuses = 2 {code = 1,
//! current_limit = 2, limit_remaining = 3, duration_until_reset = 4 {seconds = 1,
//! nanos = 2}}}`. Everything else in an answer is skipped.

/// The gRPC method, as the `:path` of the HTTP/2 request that carries it.
pub const SHOULD_RATE_LIMIT_PATH: &str =
    "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// `RateLimitResponse.RateLimit.Unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Second = 1,
    Minute = 2,
    Hour = 3,
    Day = 4,
    /// 365 days in envoyproxy/ratelimit (`UnitToDivider`), aligned to the epoch.
    Year = 6,
}

/// A descriptor's own limit (`RateLimitDescriptor.limit`): envoyproxy/ratelimit uses it
/// instead of looking the descriptor up in its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitOverride {
    pub requests_per_unit: u32,
    pub unit: Unit,
}

/// One descriptor: its (key, value) entries, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor<'a> {
    pub entries: Vec<(&'a str, &'a str)>,
    pub limit: Option<LimitOverride>,
}

/// `RateLimitResponse.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unknown,
    Ok,
    OverLimit,
}

impl Code {
    fn of(value: u64) -> Code {
        match value {
            1 => Code::Ok,
            2 => Code::OverLimit,
            _ => Code::Unknown,
        }
    }
}

/// One descriptor's status, as far as the gateway reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub limit_remaining: u32,
    /// Until the descriptor's window ends, when the service says (envoyproxy/ratelimit does,
    /// Limitador sends no statuses).
    pub until_reset_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub overall: Code,
    pub statuses: Vec<Status>,
}

/// A `RateLimitRequest` in one gRPC frame (uncompressed), ready to be an HTTP/2 body.
/// `hits_addend` `None` leaves the field out, which the services read as 1.
pub fn request_frame(domain: &str, descriptors: &[Descriptor<'_>], hits: Option<u32>) -> Vec<u8> {
    let mut message = Vec::with_capacity(64);
    put_bytes(&mut message, 1, domain.as_bytes());
    let mut descriptor = Vec::with_capacity(48);
    let mut entry = Vec::with_capacity(32);
    for d in descriptors {
        descriptor.clear();
        for (key, value) in &d.entries {
            entry.clear();
            put_bytes(&mut entry, 1, key.as_bytes());
            put_bytes(&mut entry, 2, value.as_bytes());
            put_bytes(&mut descriptor, 1, &entry);
        }
        if let Some(limit) = d.limit {
            entry.clear();
            put_varint_field(&mut entry, 1, u64::from(limit.requests_per_unit));
            put_varint_field(&mut entry, 2, limit.unit as u64);
            put_bytes(&mut descriptor, 2, &entry);
        }
        put_bytes(&mut message, 2, &descriptor);
    }
    if let Some(hits) = hits {
        put_varint_field(&mut message, 3, u64::from(hits));
    }
    let mut frame = Vec::with_capacity(message.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

/// Why an answer could not be read: each means "the service did not answer", and the
/// configured failure mode applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// No message: a gRPC error travels in trailers only (or the body was cut short).
    NoMessage,
    Compressed,
    Malformed,
}

/// The `RateLimitResponse` in the body of a gRPC answer.
pub fn parse_answer(body: &[u8]) -> Result<Answer, Unreadable> {
    let (Some(&flag), Some(length)) = (body.first(), body.get(1..5)) else {
        return Err(Unreadable::NoMessage);
    };
    if flag != 0 {
        return Err(Unreadable::Compressed);
    }
    let length = u32::from_be_bytes(length.try_into().map_err(|_| Unreadable::Malformed)?);
    let end = usize::try_from(length)
        .ok()
        .and_then(|n| n.checked_add(5))
        .ok_or(Unreadable::Malformed)?;
    let message = body.get(5..end).ok_or(Unreadable::NoMessage)?;
    let mut answer = Answer {
        overall: Code::Unknown,
        statuses: Vec::new(),
    };
    for field in Fields(message) {
        match field? {
            (1, Value::Varint(v)) => answer.overall = Code::of(v),
            (2, Value::Bytes(status)) => answer.statuses.push(parse_status(status)?),
            _ => {}
        }
    }
    Ok(answer)
}

fn parse_status(bytes: &[u8]) -> Result<Status, Unreadable> {
    let mut status = Status {
        code: Code::Unknown,
        limit_remaining: 0,
        until_reset_ms: None,
    };
    for field in Fields(bytes) {
        match field? {
            (1, Value::Varint(v)) => status.code = Code::of(v),
            (3, Value::Varint(v)) => status.limit_remaining = v.min(u64::from(u32::MAX)) as u32,
            (4, Value::Bytes(duration)) => {
                let (mut seconds, mut nanos) = (0u64, 0u64);
                for f in Fields(duration) {
                    match f? {
                        (1, Value::Varint(v)) => seconds = v,
                        (2, Value::Varint(v)) => nanos = v,
                        _ => {}
                    }
                }
                status.until_reset_ms = Some(
                    seconds
                        .saturating_mul(1000)
                        .saturating_add(nanos / 1_000_000),
                );
            }
            _ => {}
        }
    }
    Ok(status)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    put_varint(out, field << 3);
    put_varint(out, v);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one message, in order; an error ends the iteration.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, Unreadable> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first().ok_or(Unreadable::Malformed)?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(Unreadable::Malformed)
    }

    fn skip(&mut self, n: usize) -> Result<&'a [u8], Unreadable> {
        if n > self.0.len() {
            return Err(Unreadable::Malformed);
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn field(&mut self) -> Result<(u64, Value<'a>), Unreadable> {
        let tag = self.varint()?;
        let value = match tag & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Value::Fixed
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| Unreadable::Malformed)?;
                Value::Bytes(self.skip(n)?)
            }
            5 => {
                self.skip(4)?;
                Value::Fixed
            }
            _ => return Err(Unreadable::Malformed),
        };
        Ok((tag >> 3, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), Unreadable>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            self.0 = &[];
        }
        Some(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes of a request as `protoc --encode` writes them for
    /// `domain: "d" descriptors { entries { key: "k" value: "v" } }`.
    #[test]
    fn a_request_is_the_protobuf_encoding_in_one_frame() {
        let frame = request_frame(
            "d",
            &[Descriptor {
                entries: vec![("k", "v")],
                limit: None,
            }],
            None,
        );
        let message = [
            0x0a, 1, b'd', // domain
            0x12, 8, // descriptors, 8 bytes
            0x0a, 6, // entries, 6 bytes
            0x0a, 1, b'k', 0x12, 1, b'v',
        ];
        let mut expected = vec![0, 0, 0, 0, message.len() as u8];
        expected.extend_from_slice(&message);
        assert_eq!(frame, expected);
    }

    #[test]
    fn a_limit_override_and_hits_are_encoded() {
        let frame = request_frame(
            "llm-gateway",
            &[Descriptor {
                entries: vec![("key", "abc")],
                limit: Some(LimitOverride {
                    requests_per_unit: 300,
                    unit: Unit::Minute,
                }),
            }],
            Some(0),
        );
        let message = &frame[5..];
        // ... descriptor { ... limit { requests_per_unit: 300 (0xac 0x02) unit: MINUTE } }
        assert!(message
            .windows(7)
            .any(|w| w == [0x12, 5, 0x08, 0xac, 0x02, 0x10, 2]));
        assert_eq!(&message[message.len() - 2..], [0x18, 0]);
        let length = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
        assert_eq!(length as usize, message.len());
    }

    fn frame_of(message: &[u8]) -> Vec<u8> {
        let mut f = vec![0];
        f.extend_from_slice(&(message.len() as u32).to_be_bytes());
        f.extend_from_slice(message);
        f
    }

    #[test]
    fn an_answer_is_read_with_its_statuses() {
        // overall_code: OVER_LIMIT, statuses { code: OVER_LIMIT current_limit { requests_per_unit: 30
        // unit: MINUTE } limit_remaining: 0 duration_until_reset { seconds: 12 nanos: 500000000 } },
        // response_headers_to_add { key: "x" value: "y" } (skipped)
        let status = [
            0x08, 2, 0x12, 4, 0x08, 30, 0x10, 2, 0x18, 0, 0x22, 8, 0x08, 12, 0x10, 0x80, 0xca,
            0xb5, 0xee, 0x01,
        ];
        let mut message = vec![0x08, 2, 0x12, status.len() as u8];
        message.extend_from_slice(&status);
        message.extend_from_slice(&[0x1a, 6, 0x0a, 1, b'x', 0x12, 1, b'y']);
        let answer = parse_answer(&frame_of(&message)).unwrap();
        assert_eq!(answer.overall, Code::OverLimit);
        assert_eq!(
            answer.statuses,
            vec![Status {
                code: Code::OverLimit,
                limit_remaining: 0,
                until_reset_ms: Some(12_500),
            }]
        );
        assert_eq!(
            parse_answer(&frame_of(&[0x08, 1])).unwrap().overall,
            Code::Ok
        );
        // Limitador: an OK with no statuses; an empty message is UNKNOWN.
        assert_eq!(parse_answer(&frame_of(&[])).unwrap().overall, Code::Unknown);
    }

    #[test]
    fn what_is_not_an_answer_says_why() {
        assert_eq!(parse_answer(&[]), Err(Unreadable::NoMessage));
        assert_eq!(
            parse_answer(&[0, 0, 0, 0, 9, 8]),
            Err(Unreadable::NoMessage)
        );
        assert_eq!(parse_answer(&[1, 0, 0, 0, 0]), Err(Unreadable::Compressed));
        // A length running past the message, an unknown wire type, a varint that never ends.
        assert_eq!(
            parse_answer(&frame_of(&[0x12, 9, 1])),
            Err(Unreadable::Malformed)
        );
        assert_eq!(parse_answer(&frame_of(&[0x0b])), Err(Unreadable::Malformed));
        assert_eq!(
            parse_answer(&frame_of(&[0x08, 0xff, 0xff])),
            Err(Unreadable::Malformed)
        );
    }

    #[test]
    fn any_bytes_parse_without_panicking() {
        let mut rng = crate::host::SplitMix64::new(7);
        for len in 0..64 {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                let _ = parse_answer(&frame_of(&bytes));
            }
        }
    }
}
