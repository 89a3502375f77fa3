//! The fuzz input read as a little-endian stream of integers; zeroes once it runs out. Each
//! target adds its own readers (ports, addresses) in an `impl Input` of its own.

pub struct Input<'a>(pub &'a [u8]);

#[allow(dead_code)] // each target uses a different subset
impl Input<'_> {
    pub fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, i| v | (u64::from(self.u8()) << (8 * i)))
    }
}
