//! Frame decoding (client to server, always masked) and encoding (server to
//! client, never masked).

use super::Opcode;

/// A complete message or control frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    /// The client's close, with its code if it sent one.
    Close(Option<u16>),
}

/// Why the connection must be closed, with the close code to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("message larger than {0} bytes")]
    TooBig(usize),
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
}

impl DecodeError {
    pub fn close_code(&self) -> u16 {
        use natter_protocol::close;
        match self {
            Self::Protocol(_) => close::PROTOCOL_ERROR,
            Self::TooBig(_) => close::MESSAGE_TOO_BIG,
            Self::InvalidUtf8 => close::INVALID_PAYLOAD,
        }
    }
}

/// A message being received in several frames.
#[derive(Debug)]
struct Fragmented {
    text: bool,
    data: Vec<u8>,
}

/// Turns the bytes of one connection into messages.
///
/// Holds no allocation while idle: `partial` is only non-empty while a frame
/// is incomplete, and is freed as soon as it completes.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// The start of a frame whose remaining bytes have not arrived yet.
    partial: Vec<u8>,
    /// Boxed: rare, and the decoder sits in every idle connection's task.
    fragmented: Option<Box<Fragmented>>,
}

struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
}

impl Decoder {
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            partial: Vec::new(),
            fragmented: None,
        }
    }

    /// Consumes bytes read from the socket, appending every completed message
    /// to `out`. After an error the connection must be closed.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Incoming>) -> Result<(), DecodeError> {
        if self.partial.is_empty() {
            let used = self.decode(data, out)?;
            self.partial.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(data);
            let used = self.decode(&buf, out)?;
            buf.drain(..used);
            if !buf.is_empty() {
                self.partial = buf;
            }
        }
        Ok(())
    }

    /// Decodes as many whole frames as `buf` holds; returns the bytes used.
    fn decode(&mut self, buf: &[u8], out: &mut Vec<Incoming>) -> Result<usize, DecodeError> {
        let mut used = 0;
        while let Some(header) = self.header(&buf[used..])? {
            let end = used + header.header_len + header.payload_len;
            if buf.len() < end {
                break;
            }
            let mut payload = buf[used + header.header_len..end].to_vec();
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= header.mask[i % 4];
            }
            used = end;
            if let Some(message) = self.complete(header.fin, header.opcode, payload)? {
                out.push(message);
            }
        }
        Ok(used)
    }

    /// Parses a frame header, or `None` if more bytes are needed.
    fn header(&self, buf: &[u8]) -> Result<Option<Header>, DecodeError> {
        let [b0, b1, rest @ ..] = buf else {
            return Ok(None);
        };
        if b0 & 0x70 != 0 {
            return Err(DecodeError::Protocol("reserved bits set"));
        }
        if b1 & 0x80 == 0 {
            return Err(DecodeError::Protocol("client frames must be masked"));
        }
        let (len, ext) = match b1 & 0x7F {
            126 => match rest {
                [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
                _ => return Ok(None),
            },
            127 => match rest.get(..8) {
                Some(bytes) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(bytes);
                    (u64::from_be_bytes(be), 8)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), 0),
        };
        let opcode = b0 & 0x0F;
        let fin = b0 & 0x80 != 0;
        if opcode & 0x8 != 0 && (!fin || len > 125) {
            return Err(DecodeError::Protocol("bad control frame"));
        }
        let so_far = self.fragmented.as_ref().map_or(0, |f| f.data.len() as u64);
        if len.saturating_add(so_far) > self.max_message as u64 {
            return Err(DecodeError::TooBig(self.max_message));
        }
        let Some(mask) = rest.get(ext..ext + 4) else {
            return Ok(None);
        };
        Ok(Some(Header {
            fin,
            opcode,
            mask: [mask[0], mask[1], mask[2], mask[3]],
            header_len: 2 + ext + 4,
            payload_len: len as usize,
        }))
    }

    /// Assembles fragments and interprets control frames.
    fn complete(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: Vec<u8>,
    ) -> Result<Option<Incoming>, DecodeError> {
        let (text, data) = match opcode {
            0x0 => {
                let Some(mut f) = self.fragmented.take() else {
                    return Err(DecodeError::Protocol("continuation without a start"));
                };
                f.data.extend_from_slice(&payload);
                if !fin {
                    self.fragmented = Some(f);
                    return Ok(None);
                }
                (f.text, f.data)
            }
            0x1 | 0x2 => {
                if self.fragmented.is_some() {
                    return Err(DecodeError::Protocol("new message inside a fragmented one"));
                }
                if !fin {
                    self.fragmented = Some(Box::new(Fragmented {
                        text: opcode == 0x1,
                        data: payload,
                    }));
                    return Ok(None);
                }
                (opcode == 0x1, payload)
            }
            0x8 => return close_frame(&payload).map(Some),
            0x9 => return Ok(Some(Incoming::Ping(payload))),
            0xA => return Ok(Some(Incoming::Pong)),
            _ => return Err(DecodeError::Protocol("unknown opcode")),
        };
        if !text {
            return Ok(Some(Incoming::Binary));
        }
        String::from_utf8(data)
            .map(|s| Some(Incoming::Text(s)))
            .map_err(|_| DecodeError::InvalidUtf8)
    }
}

fn close_frame(payload: &[u8]) -> Result<Incoming, DecodeError> {
    match payload {
        [] => Ok(Incoming::Close(None)),
        [_] => Err(DecodeError::Protocol("close frame with a 1-byte body")),
        [a, b, reason @ ..] => {
            if std::str::from_utf8(reason).is_err() {
                return Err(DecodeError::InvalidUtf8);
            }
            Ok(Incoming::Close(Some(u16::from_be_bytes([*a, *b]))))
        }
    }
}

/// Appends one unmasked frame to `out`.
pub fn encode_frame(opcode: Opcode, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode as u8);
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Appends a close frame with a code and a reason (cut to fit 125 bytes).
pub fn encode_close(code: u16, reason: &str, out: &mut Vec<u8>) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode_frame(Opcode::Close, &payload, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn decodes_across_arbitrary_splits() {
        let mut bytes = client_frame(true, 1, b"hello");
        bytes.extend(client_frame(false, 1, "wörld ".as_bytes()));
        bytes.extend(client_frame(true, 9, b"p"));
        bytes.extend(client_frame(true, 0, &[b'x'; 300]));
        bytes.extend(client_frame(true, 2, &[0xFF; 70_000]));
        for split in [1, 2, 3, 7, 100, bytes.len()] {
            let mut d = Decoder::new(100_000);
            let mut out = Vec::new();
            for chunk in bytes.chunks(split) {
                d.feed(chunk, &mut out).expect("valid");
            }
            assert_eq!(out.len(), 4, "split {split}");
            assert_eq!(out[0], Incoming::Text("hello".into()));
            assert_eq!(out[1], Incoming::Ping(b"p".to_vec()));
            assert_eq!(out[2], Incoming::Text(format!("wörld {}", "x".repeat(300))));
            assert_eq!(out[3], Incoming::Binary);
            assert!(d.partial.capacity() == 0, "idle decoder holds no buffer");
        }
    }

    #[test]
    fn errors_carry_the_right_close_code() {
        let mut out = Vec::new();
        let e = Decoder::new(10).feed(&client_frame(true, 1, &[b'a'; 11]), &mut out);
        assert_eq!(e.map_err(|e| e.close_code()), Err(1009));
        let e = Decoder::new(10).feed(&client_frame(true, 1, &[0xC3, 0x28]), &mut out);
        assert_eq!(e.map_err(|e| e.close_code()), Err(1007));
        let e = Decoder::new(10).feed(&[0x81, 0x01, b'a'], &mut out);
        assert_eq!(e.map_err(|e| e.close_code()), Err(1002));
        let e = Decoder::new(10).feed(&client_frame(true, 0, b"a"), &mut out);
        assert_eq!(e.map_err(|e| e.close_code()), Err(1002));
        let mut d = Decoder::new(10);
        d.feed(&client_frame(false, 1, b"123456"), &mut out)
            .expect("first part fits");
        let e = d.feed(&client_frame(true, 0, b"123456"), &mut out);
        assert_eq!(e.map_err(|e| e.close_code()), Err(1009));
    }

    #[test]
    fn close_frames() {
        let mut out = Vec::new();
        let mut body = 1000u16.to_be_bytes().to_vec();
        body.extend_from_slice(b"bye");
        Decoder::new(10)
            .feed(&client_frame(true, 8, &body), &mut out)
            .expect("valid");
        assert_eq!(out, vec![Incoming::Close(Some(1000))]);
    }

    #[test]
    fn encodes_lengths() {
        for len in [0usize, 125, 126, 65_535, 65_536] {
            let mut out = Vec::new();
            encode_frame(Opcode::Text, &vec![b'a'; len], &mut out);
            let header = match len {
                0..=125 => 2,
                126..=65_535 => 4,
                _ => 10,
            };
            assert_eq!(out.len(), header + len);
            assert_eq!(out[0], 0x81);
        }
        let mut out = Vec::new();
        encode_close(1008, "Authentication failed", &mut out);
        assert_eq!(&out[..4], &[0x88, 23, 0x03, 0xF0]);
    }
}
