//! Protobuf read in place, as prost reads it: the fields of a message in wire order, each
//! payload borrowed from the buffer. The runtime reads inject spans and checks export batches
//! with it, the filter reads the runtime's answers: neither builds prost's message trees for
//! bytes it reads once.

use alloc::format;
use alloc::string::String;
use alloc::vec;

/// How deeply prost nests messages (and skipped groups) before refusing a body.
pub const RECURSION_LIMIT: u32 = 100;

/// The refusal of a body nested deeper than [`RECURSION_LIMIT`].
pub fn nested_too_deeply() -> String {
    format!("messages nested more than {RECURSION_LIMIT} levels deep (prost's limit)")
}

/// `bytes` as text, or the refusal naming `what` (prost refuses a string that is not UTF-8).
#[inline]
pub fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, String> {
    core::str::from_utf8(bytes).map_err(|_| invalid_utf8(what))
}

// The refusals are built out of line, so the readers inlined into their callers stay small.
#[cold]
fn invalid_utf8(what: &str) -> String {
    format!("{what}: invalid UTF-8")
}

#[cold]
fn not_length_delimited(what: &str) -> String {
    format!("{what}: wrong wire type, expected length-delimited")
}

/// One field's payload.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 5 (never read).
    Fixed32,
    /// Wire type 2, borrowed.
    Bytes(&'a [u8]),
    /// A skipped group and how deeply its fields nest.
    Group {
        /// Nesting depth of the group's fields.
        depth: u32,
    },
}

impl<'a> Field<'a> {
    /// A length-delimited payload, or the refusal naming `what`.
    #[inline]
    pub fn bytes(self, what: &str) -> Result<&'a [u8], String> {
        match self {
            Field::Bytes(bytes) => Ok(bytes),
            _ => Err(not_length_delimited(what)),
        }
    }

    /// A length-delimited payload as text, or the refusal naming `what`.
    #[inline]
    pub fn text(self, what: &str) -> Result<&'a str, String> {
        utf8(self.bytes(what)?, what)
    }
}

/// The fields of one message, in wire order; stops at the first framing error.
///
/// Its steps are inlined into the loops that walk it: left to the compiler they stayed calls
/// that handed every field's `Result` back through memory, and an export's check cost more
/// than prost's whole decode of it.
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    /// The fields of the message `buf`.
    #[inline]
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64, String> {
        // Most varints (keys, short lengths) are one byte.
        if let Some(&byte) = self.buf.get(self.pos)
            && byte < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(byte));
        }
        self.long_varint()
    }

    #[inline(never)]
    fn long_varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                // The tenth byte holds bit 63 only; more would overflow (prost refuses it too).
                return if shift == 63 && byte > 1 {
                    Err("varint overflows 64 bits".into())
                } else {
                    Ok(value)
                };
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    #[inline(always)]
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| format!("field of {len} bytes overruns its message"))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// A field key as prost reads it: number and wire type.
    #[inline(always)]
    fn key(&mut self) -> Result<(u32, u64), String> {
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| format!("field key {key} out of range"))?;
        if key >> 3 == 0 {
            return Err("field number 0".into());
        }
        Ok((key >> 3, u64::from(key & 7)))
    }

    #[inline(always)]
    fn field(&mut self) -> Result<(u32, Field<'a>), String> {
        let (number, wire_type) = self.key()?;
        let field = match wire_type {
            3 => Field::Group {
                depth: self.skip_group(number)?,
            },
            4 => return Err(format!("field {number}: end-group without a start")),
            _ => self.payload(number, wire_type)?,
        };
        Ok((number, field))
    }

    /// The payload of a field of wire type 0, 1, 2 or 5.
    #[inline(always)]
    fn payload(&mut self, number: u32, wire_type: u64) -> Result<Field<'a>, String> {
        Ok(match wire_type {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().map_err(|_| "fixed64")?,
            )),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length out of range")?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed32
            }
            other => return Err(format!("field {number}: invalid wire type {other}")),
        })
    }

    /// Skips a (proto2) group up to its matching end, as prost skips one in an unknown field;
    /// returns how deeply its fields nest. Iterative, and no deeper than prost would go.
    fn skip_group(&mut self, number: u32) -> Result<u32, String> {
        let mut open = vec![number];
        let mut depth = 0;
        while let Some(&innermost) = open.last() {
            let (number, wire_type) = self.key()?;
            if wire_type == 4 {
                if number != innermost {
                    return Err(format!("group {innermost} closed by end-group {number}"));
                }
                open.pop();
                continue;
            }
            depth = depth.max(open.len() as u32);
            if depth >= RECURSION_LIMIT {
                return Err(nested_too_deeply());
            }
            if wire_type == 3 {
                open.push(number);
            } else {
                self.payload(number, wire_type)?;
            }
        }
        Ok(depth)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Field<'a>), String>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            self.pos = self.buf.len();
        }
        Some(field)
    }
}
