//! One incremental server-sent-events parser for every stream we read. It carries partial
//! lines across chunks, so an event split anywhere (even inside `\r\n`) comes out whole.

/// Per the SSE spec: lines end in `\n`, `\r\n` or `\r`; `data:` lines (one leading space
/// dropped) accumulate, joined by `\n`; a blank line dispatches; `:` lines are comments.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The previous chunk ended in `\r`: a `\n` opening the next one belongs to it.
    after_cr: bool,
    max_event_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseOverflow;

/// The first `\n` or `\r` in `bytes`: eight bytes at a time, then the word that has one.
fn line_end(bytes: &[u8]) -> Option<usize> {
    use crate::swar::eq_mask;
    let words = bytes
        .chunks_exact(8)
        .take_while(|word| {
            <[u8; 8]>::try_from(*word).is_ok_and(|w| {
                let w = u64::from_le_bytes(w);
                eq_mask(w, b'\n') | eq_mask(w, b'\r') == 0
            })
        })
        .count();
    let start = words * 8;
    bytes
        .get(start..)?
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .map(|i| start + i)
}

impl SseParser {
    /// `max_event_bytes` bounds what one event may hold, so a stream never grows memory
    /// without limit.
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            max_event_bytes,
            ..Default::default()
        }
    }

    /// Feed one chunk; `on_event` gets each complete event's data.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        on_event: &mut dyn FnMut(&[u8]),
    ) -> Result<(), SseOverflow> {
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some((&b'\n', tail)) = rest.split_first() {
                rest = tail;
            }
        }
        while !rest.is_empty() {
            match line_end(rest) {
                Some(i) => {
                    let (part, tail) = rest.split_at(i);
                    let (&terminator, mut tail) = match tail.split_first() {
                        Some(x) => x,
                        None => break,
                    };
                    if terminator == b'\r' {
                        match tail.split_first() {
                            Some((&b'\n', t)) => tail = t,
                            Some(_) => {}
                            None => self.after_cr = true,
                        }
                    }
                    if self.line.is_empty() {
                        self.process_line(part, on_event)?;
                    } else {
                        self.push_line(part)?;
                        let line = std::mem::take(&mut self.line);
                        let result = self.process_line(&line, on_event);
                        self.line = line;
                        self.line.clear();
                        result?;
                    }
                    rest = tail;
                }
                None => {
                    self.push_line(rest)?;
                    break;
                }
            }
        }
        Ok(())
    }

    /// End of the stream: an event not closed by a blank line is still delivered.
    pub fn finish(&mut self, on_event: &mut dyn FnMut(&[u8])) -> Result<(), SseOverflow> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, on_event)?;
        }
        self.dispatch(on_event);
        Ok(())
    }

    fn push_line(&mut self, part: &[u8]) -> Result<(), SseOverflow> {
        if self.line.len() + part.len() + self.data.len() > self.max_event_bytes {
            return Err(SseOverflow);
        }
        self.line.extend_from_slice(part);
        Ok(())
    }

    fn process_line(
        &mut self,
        line: &[u8],
        on_event: &mut dyn FnMut(&[u8]),
    ) -> Result<(), SseOverflow> {
        if line.is_empty() {
            self.dispatch(on_event);
            return Ok(());
        }
        if line.first() == Some(&b':') {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let (f, v) = line.split_at(i);
                let v = v.get(1..).unwrap_or_default();
                (f, v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        if field == b"data" {
            if self.data.len() + value.len() + 1 > self.max_event_bytes {
                return Err(SseOverflow);
            }
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        Ok(())
    }

    fn dispatch(&mut self, on_event: &mut dyn FnMut(&[u8])) {
        if self.has_data {
            on_event(&self.data);
            self.data.clear();
            self.has_data = false;
        }
    }
}

/// The events a body chunk completes (and, at the end of the stream, whatever is left):
/// their data back to back and where each ends — two buffers per chunk, not one per event.
/// `overflow` when an event outgrew the parser's bound (the events before it are kept).
pub struct Events {
    pub data: Vec<u8>,
    pub ends: Vec<usize>,
    pub overflow: bool,
}

impl Events {
    pub fn of(parser: &mut SseParser, chunk: &[u8], end_of_stream: bool) -> Events {
        let mut data: Vec<u8> = Vec::with_capacity(chunk.len());
        let mut ends: Vec<usize> = Vec::new();
        let mut keep = |e: &[u8]| {
            data.extend_from_slice(e);
            ends.push(data.len());
        };
        let fed = parser.feed(chunk, &mut keep);
        let fed = fed.and_then(|()| {
            if end_of_stream {
                parser.finish(&mut keep)
            } else {
                Ok(())
            }
        });
        Events {
            data,
            ends,
            overflow: fed.is_err(),
        }
    }

    /// Each event's data, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let e = self.data.get(start..end).unwrap_or_default();
            start = end;
            e
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], cuts: &[usize]) -> Vec<String> {
        let mut p = SseParser::new(1 << 20);
        let mut events = Vec::new();
        let mut last = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            p.feed(&input[last..cut], &mut |e| {
                events.push(String::from_utf8_lossy(e).into_owned())
            })
            .unwrap();
            last = cut;
        }
        p.finish(&mut |e| events.push(String::from_utf8_lossy(e).into_owned()))
            .unwrap();
        events
    }

    const STREAM: &[u8] = b": comment\r\ndata: {\"a\":1}\r\n\r\ndata:{\"b\":2}\n\nevent: x\ndata: one\ndata: two\n\n\rdata: crlf\r\rdata: [DONE]\n\n";

    fn expected() -> Vec<String> {
        ["{\"a\":1}", "{\"b\":2}", "one\ntwo", "crlf", "[DONE]"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn line_end_finds_the_first_terminator_anywhere() {
        for len in 0..24 {
            for at in 0..=len {
                for t in [b'\n', b'\r'] {
                    let mut v = vec![b'x'; len];
                    if at < len {
                        v[at] = t;
                        // A later terminator never wins over the first.
                        if at + 3 < len {
                            v[at + 3] = b'\n';
                        }
                    }
                    let expected = v.iter().position(|&b| b == b'\n' || b == b'\r');
                    assert_eq!(line_end(&v), expected, "len {len} at {at}");
                }
            }
        }
        assert_eq!(
            line_end(&[0x8a, 0x8d, 0x0b, 0x0c, 0xff, 0, 0x0e, 0x09, 0x0d]),
            Some(8)
        );
    }

    #[test]
    fn whole_stream() {
        assert_eq!(parse_in_pieces(STREAM, &[]), expected());
    }

    #[test]
    fn split_at_every_byte_offset() {
        for cut in 0..=STREAM.len() {
            assert_eq!(parse_in_pieces(STREAM, &[cut]), expected(), "cut at {cut}");
        }
    }

    #[test]
    fn split_at_every_pair_of_offsets() {
        for a in 0..=STREAM.len() {
            for b in a..=STREAM.len() {
                assert_eq!(parse_in_pieces(STREAM, &[a, b]), expected(), "cuts {a},{b}");
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let cuts: Vec<usize> = (1..STREAM.len()).collect();
        assert_eq!(parse_in_pieces(STREAM, &cuts), expected());
    }

    #[test]
    fn unterminated_last_event_is_delivered_at_finish() {
        assert_eq!(
            parse_in_pieces(b"data: tail", &[]),
            vec!["tail".to_string()]
        );
    }

    #[test]
    fn oversized_event_is_refused() {
        let mut p = SseParser::new(16);
        assert_eq!(
            p.feed(b"data: 0123456789ABCDEF\n", &mut |_| {}),
            Err(SseOverflow)
        );
        let mut p = SseParser::new(16);
        assert_eq!(p.feed(b"data: 01234", &mut |_| {}), Ok(()));
        assert_eq!(p.feed(b"567890", &mut |_| {}), Err(SseOverflow));
    }
}
