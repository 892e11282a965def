//! Small helpers to cut the fuzzer's bytes into the pieces a target needs.

/// Reads the input front to back; past its end every read returns `None` or fewer bytes.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    /// Little-endian; a lone last byte counts as the low byte.
    pub(crate) fn u16(&mut self) -> Option<u16> {
        let lo = self.u8()?;
        Some(u16::from(lo) | (u16::from(self.u8().unwrap_or(0)) << 8))
    }

    /// Up to `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }
}

/// The bytes before the first NUL and those after it (empty when there is none).
pub(crate) fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Text from bytes the way a transport that only carries UTF-8 would have it.
pub(crate) fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_and_split() {
        let mut r = Reader::new(&[1, 2, 3, 4]);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.u16(), Some(0x0302));
        assert_eq!(r.take(5), &[4]);
        assert!(r.is_empty());
        assert_eq!(r.u16(), None);
        assert_eq!(split_nul(b"ab\0cd\0e"), (&b"ab"[..], &b"cd\0e"[..]));
        assert_eq!(split_nul(b"ab"), (&b"ab"[..], &b""[..]));
    }
}
