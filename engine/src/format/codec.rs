//! Little-endian byte encoding helpers. Pure: no I/O. The [`Reader`] never panics: every
//! read is bounds-checked and every length read from disk is checked against a cap.

use crate::error::{CorruptKind, DecodeError};

/// Appends little-endian fields to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }
    /// Writes one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// Writes a u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Writes a u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Writes a u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Writes an i64.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Writes raw bytes with no length.
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// Writes a u32 length, then the bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(u32::try_from(v.len()).expect("field longer than 4 GiB"));
        self.raw(v)
    }
}

/// Reads little-endian fields from a byte slice.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn short(len: usize, avail: usize) -> DecodeError {
    DecodeError(CorruptKind::Length { len: len as u64, limit: avail as u64 })
}

impl<'a> Reader<'a> {
    /// Reads from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Current position.
    pub fn pos(&self) -> usize {
        self.pos
    }
    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(short(n, self.remaining()));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    /// Reads a u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// Reads a u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// Reads a u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// Reads an i64.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    /// Reads a u32 length (at most `cap`), then that many bytes.
    pub fn bytes(&mut self, cap: usize) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        if n > cap {
            return Err(DecodeError(CorruptKind::Length { len: n as u64, limit: cap as u64 }));
        }
        self.take(n)
    }
    /// Reads a u32 count of items, capped, and also bounded by the bytes left given the
    /// smallest encoding of one item, so a hostile count never drives a large allocation.
    pub fn count(&mut self, cap: usize, min_item_len: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        let limit = cap.min(self.remaining() / min_item_len.max(1));
        if n > limit {
            return Err(DecodeError(CorruptKind::Length { len: n as u64, limit: limit as u64 }));
        }
        Ok(n)
    }
    /// Fails unless every byte was consumed.
    pub fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(DecodeError(CorruptKind::Malformed(what)));
        }
        Ok(())
    }
}
