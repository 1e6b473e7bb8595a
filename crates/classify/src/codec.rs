//! A cursor over borrowed bytes in the style of rustls `msgs/codec.rs`.
//!
//! Every accessor returns a [`DecodeError`] instead of panicking, and names what it was
//! reading so an error says where a hostile or truncated message went wrong.

/// Why a TLS structure could not be decoded. The `&'static str` names the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside this field (or a length prefix claims more than is left).
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// Bytes were left over after this structure ended.
    #[error("trailing bytes after {0}")]
    TrailingBytes(&'static str),
    /// The field was read but its value is not allowed.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The same extension type appeared twice (RFC 8446 §4.2 forbids it, and a parser
    /// that saw the first copy while the server used the second would be evaded).
    #[error("duplicate extension {0:#06x}")]
    DuplicateExtension(u16),
}

/// A cursor over a byte slice: `take`, fixed-width integers, `sub_*` for length-prefixed
/// parts, and `all` to insist nothing is left over.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, positioned at its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes not yet read.
    pub fn left(&self) -> usize {
        self.buf.len()
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Everything not yet read.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        match self.take(1, what)? {
            [b] => Ok(*b),
            _ => Err(DecodeError::Truncated(what)),
        }
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        match self.take(2, what)? {
            [a, b] => Ok(u16::from_be_bytes([*a, *b])),
            _ => Err(DecodeError::Truncated(what)),
        }
    }

    /// A big-endian 24-bit length, as handshake headers carry.
    pub fn u24(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        match self.take(3, what)? {
            [a, b, c] => Ok(u32::from_be_bytes([0, *a, *b, *c])),
            _ => Err(DecodeError::Truncated(what)),
        }
    }

    /// A sub-reader over the next `len` bytes.
    pub fn sub(&mut self, len: usize, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        self.take(len, what).map(Reader::new)
    }

    /// A sub-reader over a part prefixed with a one-byte length (`opaque x<0..2^8-1>`).
    pub fn sub_u8(&mut self, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        let len = self.u8(what)?;
        self.sub(usize::from(len), what)
    }

    /// A sub-reader over a part prefixed with a two-byte length (`opaque x<0..2^16-1>`).
    pub fn sub_u16(&mut self, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        let len = self.u16(what)?;
        self.sub(usize::from(len), what)
    }

    /// Succeeds only if every byte has been read.
    pub fn all(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(what))
        }
    }

    /// Reads a list of `u16` values filling the rest of this reader (its length must be
    /// even).
    pub fn u16_list(mut self, what: &'static str) -> Result<Vec<u16>, DecodeError> {
        if self.left() % 2 != 0 {
            return Err(DecodeError::Invalid(what));
        }
        let mut out = Vec::with_capacity(self.left() / 2);
        while !self.is_empty() {
            out.push(self.u16(what)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_prefixes() {
        let mut r = Reader::new(&[1, 0, 2, 0, 0, 3, 2, 0xaa, 0xbb, 9]);
        assert_eq!(r.u8("a"), Ok(1));
        assert_eq!(r.u16("b"), Ok(2));
        assert_eq!(r.u24("c"), Ok(3));
        let mut sub = r.sub_u8("d").expect("two bytes follow");
        assert_eq!(sub.u16("e"), Ok(0xaabb));
        assert_eq!(sub.all("d"), Ok(()));
        assert_eq!(r.all("x"), Err(DecodeError::TrailingBytes("x")));
        assert_eq!(r.u16("f"), Err(DecodeError::Truncated("f")));
        // A failed read consumes nothing.
        assert_eq!(r.u8("g"), Ok(9));
        assert!(r.is_empty());
    }

    #[test]
    fn length_prefix_longer_than_input_is_truncation() {
        let mut r = Reader::new(&[0xff, 0xff, 1, 2]);
        assert_eq!(
            r.sub_u16("list").map(|s| s.left()),
            Err(DecodeError::Truncated("list"))
        );
    }

    #[test]
    fn odd_u16_list_is_invalid() {
        let r = Reader::new(&[0, 1, 2]);
        assert_eq!(r.u16_list("groups"), Err(DecodeError::Invalid("groups")));
    }
}
