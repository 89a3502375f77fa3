//! A tiny AML encoder: the handful of ACPI Machine Language constructs the VMM's DSDT needs
//! (ACPI 6.5, chapter 20): `Name`, `Scope`, `Device`, integers, strings, `EISAID`, packages,
//! buffers and resource templates with small I/O and IRQ descriptors.
//!
//! Every function returns the encoded bytes of one term or object; a containing term takes
//! its children's bytes. Nothing here evaluates AML: the tables are static data.
//!
//! The tests' [`decode`] module parses the same subset back, so the DSDT can be checked
//! structurally without an AML interpreter.

/// `NameOp`.
const NAME_OP: u8 = 0x08;
/// `ScopeOp`.
const SCOPE_OP: u8 = 0x10;
/// `BufferOp`.
const BUFFER_OP: u8 = 0x11;
/// `PackageOp`.
const PACKAGE_OP: u8 = 0x12;
/// `ExtOpPrefix`, then `DeviceOp`'s second byte.
const EXT_OP_PREFIX: u8 = 0x5b;
const DEVICE_OP: u8 = 0x82;
/// Integer constants and prefixes.
const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;
const STRING_PREFIX: u8 = 0x0d;
const QWORD_PREFIX: u8 = 0x0e;
/// Name-string prefixes.
const ROOT_CHAR: u8 = b'\\';
const DUAL_NAME_PREFIX: u8 = 0x2e;
const MULTI_NAME_PREFIX: u8 = 0x2f;

/// Small resource descriptors (ACPI 6.5, 6.4.2): the first byte is `type << 3 | length`.
pub mod resource {
    /// IRQ descriptor without the information byte (`IRQNoFlags`): 0x04 << 3 | 2.
    pub const IRQ_NO_FLAGS: u8 = 0x22;
    /// I/O port descriptor: 0x08 << 3 | 7.
    pub const IO: u8 = 0x47;
    /// End tag: 0x0F << 3 | 1.
    pub const END_TAG: u8 = 0x79;
    /// The I/O descriptor's information byte: the device decodes 16 address bits.
    pub const DECODE_16: u8 = 1;
    /// 32-bit fixed memory range descriptor (large item 0x06): 0x80 | 0x06.
    pub const MEMORY32_FIXED: u8 = 0x86;
    /// Extended interrupt descriptor (large item 0x09): 0x80 | 0x09.
    pub const EXTENDED_INTERRUPT: u8 = 0x89;
    /// Memory32Fixed's information byte: read-write (bit 0).
    pub const READ_WRITE: u8 = 1;
    /// Extended interrupt flags: the device consumes the interrupt (bit 0).
    pub const CONSUMER: u8 = 1 << 0;
    /// Extended interrupt flags: edge-triggered (bit 1; level when clear).
    pub const EDGE: u8 = 1 << 1;
    /// Extended interrupt flags: active low (bit 2; active high when clear).
    pub const ACTIVE_LOW: u8 = 1 << 2;
    /// Extended interrupt flags: shared (bit 3; exclusive when clear).
    pub const SHARED: u8 = 1 << 3;
}

/// A `PkgLength` for `len` bytes that follow it: the encoded length counts its own bytes.
fn pkg_length(len: usize) -> Vec<u8> {
    if len + 1 < 1 << 6 {
        return vec![(len + 1) as u8];
    }
    // Multi-byte: the lead byte holds the count of following bytes (bits 6-7) and the low
    // nibble of the length; the following bytes hold the rest, 8 bits each.
    for extra in 1..=3usize {
        let total = len + 1 + extra;
        if total < 1 << (4 + 8 * extra) {
            let mut out = vec![((extra as u8) << 6) | (total & 0xf) as u8];
            for i in 0..extra {
                out.push((total >> (4 + 8 * i)) as u8);
            }
            return out;
        }
    }
    panic!("AML package of {len} bytes is beyond PkgLength's 28 bits");
}

/// `len` bytes of `body` behind `op` and a `PkgLength`.
fn with_pkg_length(op: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = op.to_vec();
    out.extend(pkg_length(body.len()));
    out.extend_from_slice(body);
    out
}

/// One 4-character `NameSeg`: a leading letter or `_`, then letters, digits or `_`; shorter
/// names are padded with `_` as ASL does (`_S5` is `_S5_`).
fn name_seg(seg: &str) -> [u8; 4] {
    let b = seg.as_bytes();
    assert!(
        (1..=4).contains(&b.len()),
        "AML NameSeg '{seg}' must have 1 to 4 characters"
    );
    let mut out = [b'_'; 4];
    for (i, &c) in b.iter().enumerate() {
        let ok = c.is_ascii_uppercase() || c == b'_' || (i > 0 && c.is_ascii_digit());
        assert!(ok, "AML NameSeg '{seg}' has an invalid character");
        out[i] = c;
    }
    out
}

/// A `NameString`: an optional leading `\` (the root), then segments separated by `.`.
pub fn name_string(path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let rest = match path.strip_prefix('\\') {
        Some(r) => {
            out.push(ROOT_CHAR);
            r
        }
        None => path,
    };
    let segs: Vec<[u8; 4]> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('.').map(name_seg).collect()
    };
    match segs.len() {
        0 => out.push(0), // NullName
        1 => {}
        2 => out.push(DUAL_NAME_PREFIX),
        n => {
            assert!(n < 256, "AML name '{path}' has too many segments");
            out.push(MULTI_NAME_PREFIX);
            out.push(n as u8);
        }
    }
    for s in segs {
        out.extend_from_slice(&s);
    }
    out
}

/// An integer in its shortest encoding (`Zero`, `One`, or a byte/word/dword/qword constant).
pub fn integer(v: u64) -> Vec<u8> {
    match v {
        0 => vec![ZERO_OP],
        1 => vec![ONE_OP],
        2..=0xff => vec![BYTE_PREFIX, v as u8],
        0x100..=0xffff => {
            let mut o = vec![WORD_PREFIX];
            o.extend_from_slice(&(v as u16).to_le_bytes());
            o
        }
        0x1_0000..=0xffff_ffff => dword(v as u32),
        _ => {
            let mut o = vec![QWORD_PREFIX];
            o.extend_from_slice(&v.to_le_bytes());
            o
        }
    }
}

/// A `DWordConst` (always four bytes, as ASL's `EISAID` compiles).
fn dword(v: u32) -> Vec<u8> {
    let mut o = vec![DWORD_PREFIX];
    o.extend_from_slice(&v.to_le_bytes());
    o
}

/// A string constant (ASCII, no NUL inside).
pub fn string(s: &str) -> Vec<u8> {
    assert!(
        s.is_ascii() && !s.contains('\0'),
        "AML string {s:?} must be ASCII without NUL"
    );
    let mut o = vec![STRING_PREFIX];
    o.extend_from_slice(s.as_bytes());
    o.push(0);
    o
}

/// The 32-bit compressed EISA ID of `id` (three uppercase letters, four hex digits), as
/// ASL's `EISAID("PNP0501")` computes it: 5 bits per letter (`'A'` = 1), big-endian in the
/// first two bytes, then the product number's two bytes.
pub fn eisa_id_value(id: &str) -> u32 {
    let b = id.as_bytes();
    assert!(
        b.len() == 7
            && b[..3].iter().all(u8::is_ascii_uppercase)
            && b[3..].iter().all(u8::is_ascii_hexdigit),
        "EISA ID {id:?} must be three uppercase letters and four hex digits"
    );
    let letter = |c: u8| u32::from(c - b'@');
    let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0);
    let vendor = (letter(b[0]) << 10) | (letter(b[1]) << 5) | letter(b[2]);
    let product = b[3..].iter().fold(0, |a, &c| (a << 4) | hex(c));
    // Bytes in memory: vendor high, vendor low, product high, product low.
    u32::from_le_bytes([
        (vendor >> 8) as u8,
        vendor as u8,
        (product >> 8) as u8,
        product as u8,
    ])
}

/// `EISAID(id)` as an AML object.
pub fn eisa_id(id: &str) -> Vec<u8> {
    dword(eisa_id_value(id))
}

/// `Name(path, object)`.
pub fn name(path: &str, object: &[u8]) -> Vec<u8> {
    let mut o = vec![NAME_OP];
    o.extend(name_string(path));
    o.extend_from_slice(object);
    o
}

/// `Scope(path) { terms }`.
pub fn scope(path: &str, terms: &[Vec<u8>]) -> Vec<u8> {
    let mut body = name_string(path);
    body.extend(terms.concat());
    with_pkg_length(&[SCOPE_OP], &body)
}

/// `Device(path) { terms }`.
pub fn device(path: &str, terms: &[Vec<u8>]) -> Vec<u8> {
    let mut body = name_string(path);
    body.extend(terms.concat());
    with_pkg_length(&[EXT_OP_PREFIX, DEVICE_OP], &body)
}

/// `Package() { elements }` (at most 255 elements).
pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
    assert!(
        elements.len() < 256,
        "AML package of more than 255 elements"
    );
    let mut body = vec![elements.len() as u8];
    body.extend(elements.concat());
    with_pkg_length(&[PACKAGE_OP], &body)
}

/// `Buffer() { bytes }`.
pub fn buffer(bytes: &[u8]) -> Vec<u8> {
    let mut body = integer(bytes.len() as u64);
    body.extend_from_slice(bytes);
    with_pkg_length(&[BUFFER_OP], &body)
}

/// `ResourceTemplate() { descriptors }`: a buffer of the descriptors and the end tag (its
/// checksum byte 0, which means "no checksum").
pub fn resource_template(descriptors: &[Vec<u8>]) -> Vec<u8> {
    let mut b = descriptors.concat();
    b.extend_from_slice(&[resource::END_TAG, 0]);
    buffer(&b)
}

/// `IO(Decode16, min, max, align, len)`.
pub fn io(min: u16, max: u16, align: u8, len: u8) -> Vec<u8> {
    let mut d = vec![resource::IO, resource::DECODE_16];
    d.extend_from_slice(&min.to_le_bytes());
    d.extend_from_slice(&max.to_le_bytes());
    d.push(align);
    d.push(len);
    d
}

/// `IRQNoFlags() { irq }`: edge-triggered, active-high, exclusive (ISA semantics).
pub fn irq_no_flags(irq: u8) -> Vec<u8> {
    assert!(
        irq < 16,
        "a small IRQ descriptor names IRQs 0-15, not {irq}"
    );
    let mut d = vec![resource::IRQ_NO_FLAGS];
    d.extend_from_slice(&(1u16 << irq).to_le_bytes());
    d
}

/// A large resource descriptor: the tag, the 16-bit body length, the body.
fn large_descriptor(tag: u8, body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len()).expect("a resource descriptor body fits 16 bits");
    let mut d = vec![tag];
    d.extend_from_slice(&len.to_le_bytes());
    d.extend_from_slice(body);
    d
}

/// `Memory32Fixed(ReadWrite, base, len)` (or `ReadOnly` when `writable` is false).
pub fn memory32_fixed(writable: bool, base: u32, len: u32) -> Vec<u8> {
    let mut body = vec![if writable { resource::READ_WRITE } else { 0 }];
    body.extend_from_slice(&base.to_le_bytes());
    body.extend_from_slice(&len.to_le_bytes());
    large_descriptor(resource::MEMORY32_FIXED, &body)
}

/// `Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) { gsi }`: one GSI of any number
/// (the small IRQ descriptor names only 0-15), with `flags` from [`resource`]'s
/// `CONSUMER | EDGE | ACTIVE_LOW | SHARED` bits.
pub fn extended_interrupt(flags: u8, gsi: u32) -> Vec<u8> {
    let mut body = vec![flags, 1];
    body.extend_from_slice(&gsi.to_le_bytes());
    large_descriptor(resource::EXTENDED_INTERRUPT, &body)
}

/// A decoder for the subset above, for tests: it turns a DSDT body back into terms.
#[cfg(test)]
pub mod decode {
    /// A data object.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Obj {
        /// An integer constant.
        Int(u64),
        /// A string constant.
        Str(String),
        /// A package.
        Pkg(Vec<Obj>),
        /// A buffer.
        Buf(Vec<u8>),
    }

    /// A term of the supported subset.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Term {
        /// `Name(path, object)`.
        Name(String, Obj),
        /// `Scope(path) { ... }`.
        Scope(String, Vec<Term>),
        /// `Device(path) { ... }`.
        Device(String, Vec<Term>),
    }

    struct Reader<'a> {
        b: &'a [u8],
        at: usize,
    }

    impl<'a> Reader<'a> {
        fn byte(&mut self) -> Result<u8, String> {
            let v = *self.b.get(self.at).ok_or("unexpected end of AML")?;
            self.at += 1;
            Ok(v)
        }
        fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
            let s = self
                .b
                .get(self.at..self.at + n)
                .ok_or_else(|| format!("{n} bytes past the end at {}", self.at))?;
            self.at += n;
            Ok(s)
        }
        fn le(&mut self, n: usize) -> Result<u64, String> {
            Ok(self
                .take(n)?
                .iter()
                .rev()
                .fold(0u64, |a, &x| (a << 8) | u64::from(x)))
        }
        /// A `PkgLength`; returns where the package ends.
        fn pkg_end(&mut self) -> Result<usize, String> {
            let start = self.at;
            let lead = self.byte()?;
            let extra = usize::from(lead >> 6);
            let len = if extra == 0 {
                usize::from(lead & 0x3f)
            } else {
                if lead & 0x30 != 0 {
                    return Err(format!("PkgLength at {start}: reserved bits set"));
                }
                let mut l = usize::from(lead & 0xf);
                for i in 0..extra {
                    l |= usize::from(self.byte()?) << (4 + 8 * i);
                }
                l
            };
            let end = start + len;
            if end > self.b.len() || end < self.at {
                return Err(format!("PkgLength at {start} ({len}) out of bounds"));
            }
            Ok(end)
        }
        fn seg(&mut self) -> Result<String, String> {
            let s = self.take(4)?;
            let ok = (s[0].is_ascii_uppercase() || s[0] == b'_')
                && s[1..]
                    .iter()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_');
            if !ok {
                return Err(format!("bad NameSeg {s:?} at {}", self.at - 4));
            }
            Ok(String::from_utf8_lossy(s).into_owned())
        }
        fn name_string(&mut self) -> Result<String, String> {
            let mut out = String::new();
            if self.b.get(self.at) == Some(&b'\\') {
                self.at += 1;
                out.push('\\');
            }
            let n = match self.b.get(self.at) {
                Some(0) => {
                    self.at += 1;
                    0
                }
                Some(0x2e) => {
                    self.at += 1;
                    2
                }
                Some(0x2f) => {
                    self.at += 1;
                    usize::from(self.byte()?)
                }
                _ => 1,
            };
            let segs = (0..n).map(|_| self.seg()).collect::<Result<Vec<_>, _>>()?;
            out.push_str(&segs.join("."));
            Ok(out)
        }
        fn obj(&mut self) -> Result<Obj, String> {
            let at = self.at;
            Ok(match self.byte()? {
                0x00 => Obj::Int(0),
                0x01 => Obj::Int(1),
                0xff => Obj::Int(u64::MAX),
                0x0a => Obj::Int(self.le(1)?),
                0x0b => Obj::Int(self.le(2)?),
                0x0c => Obj::Int(self.le(4)?),
                0x0e => Obj::Int(self.le(8)?),
                0x0d => {
                    let rest = &self.b[self.at..];
                    let n = rest
                        .iter()
                        .position(|&c| c == 0)
                        .ok_or("unterminated string")?;
                    let s = String::from_utf8(rest[..n].to_vec()).map_err(|e| e.to_string())?;
                    self.at += n + 1;
                    Obj::Str(s)
                }
                0x12 => {
                    let end = self.pkg_end()?;
                    let count = usize::from(self.byte()?);
                    let mut v = Vec::new();
                    while self.at < end {
                        v.push(self.obj()?);
                    }
                    if self.at != end || v.len() != count {
                        return Err(format!("package at {at}: {} of {count} elements", v.len()));
                    }
                    Obj::Pkg(v)
                }
                0x11 => {
                    let end = self.pkg_end()?;
                    let Obj::Int(size) = self.obj()? else {
                        return Err(format!("buffer at {at}: size is not an integer"));
                    };
                    let data = self.take(end.checked_sub(self.at).ok_or("buffer overrun")?)?;
                    if size as usize != data.len() {
                        return Err(format!("buffer at {at}: size {size}, {} bytes", data.len()));
                    }
                    Obj::Buf(data.to_vec())
                }
                op => return Err(format!("unsupported data object {op:#04x} at {at}")),
            })
        }
        fn terms(&mut self, end: usize) -> Result<Vec<Term>, String> {
            let mut v = Vec::new();
            while self.at < end {
                let at = self.at;
                v.push(match self.byte()? {
                    0x08 => {
                        let n = self.name_string()?;
                        Term::Name(n, self.obj()?)
                    }
                    0x10 => {
                        let e = self.pkg_end()?;
                        let n = self.name_string()?;
                        Term::Scope(n, self.terms(e)?)
                    }
                    0x5b if self.b.get(self.at) == Some(&0x82) => {
                        self.at += 1;
                        let e = self.pkg_end()?;
                        let n = self.name_string()?;
                        Term::Device(n, self.terms(e)?)
                    }
                    op => return Err(format!("unsupported term {op:#04x} at {at}")),
                });
            }
            if self.at != end {
                return Err(format!("terms overran their package end {end}"));
            }
            Ok(v)
        }
    }

    /// Parses a term list (a DSDT without its header).
    pub fn terms(aml: &[u8]) -> Result<Vec<Term>, String> {
        Reader { b: aml, at: 0 }.terms(aml.len())
    }

    /// Parses one data object that must fill `aml`.
    pub fn object(aml: &[u8]) -> Result<Obj, String> {
        let mut r = Reader { b: aml, at: 0 };
        let o = r.obj()?;
        if r.at != aml.len() {
            return Err(format!("{} trailing bytes", aml.len() - r.at));
        }
        Ok(o)
    }

    /// The EISA ID string of a compressed 32-bit value.
    pub fn eisa_id_string(v: u32) -> String {
        let b = v.to_le_bytes();
        let vendor = (u32::from(b[0]) << 8) | u32::from(b[1]);
        let l = |s: u32| char::from(b'@' + ((vendor >> s) & 0x1f) as u8);
        format!("{}{}{}{:02X}{:02X}", l(10), l(5), l(0), b[2], b[3])
    }

    /// The resource descriptors of a buffer: (type, body). A small descriptor's type is its
    /// item name (tag >> 3, 0x00-0x0f); a large one's is its whole tag (0x80 | item name), so
    /// the two never collide.
    pub fn resources(buf: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, String> {
        let mut v = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let tag = buf[at];
            let (ty, start, len) = if tag & 0x80 != 0 {
                let l = buf
                    .get(at + 1..at + 3)
                    .ok_or_else(|| format!("large descriptor at {at} has no length"))?;
                (tag, at + 3, usize::from(u16::from_le_bytes([l[0], l[1]])))
            } else {
                (tag >> 3, at + 1, usize::from(tag & 7))
            };
            let body = buf
                .get(start..start + len)
                .ok_or_else(|| format!("descriptor at {at} overruns"))?;
            v.push((ty, body.to_vec()));
            at = start + len;
            if ty == 0x0f {
                if at != buf.len() {
                    return Err("bytes after the end tag".into());
                }
                return Ok(v);
            }
        }
        Err("no end tag".into())
    }
}

#[cfg(test)]
mod tests {
    use super::decode::{self, Obj, Term};
    use super::*;

    #[test]
    fn pkg_length_boundaries_round_trip() {
        assert_eq!(pkg_length(0), vec![1]);
        assert_eq!(pkg_length(62), vec![63]);
        // 63 bytes need a second byte: total 65 = 0x41.
        assert_eq!(pkg_length(63), vec![0x41, 0x04]);
        for len in [
            0usize,
            1,
            61,
            62,
            63,
            64,
            200,
            4092,
            4093,
            4094,
            70_000,
            1 << 20,
        ] {
            let body = vec![0xaau8; len];
            let enc = buffer(&body);
            match decode::object(&enc) {
                Ok(Obj::Buf(b)) => assert_eq!(b.len(), len, "len {len}"),
                other => panic!("len {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn integers_use_the_shortest_encoding() {
        assert_eq!(integer(0), [0x00]);
        assert_eq!(integer(1), [0x01]);
        assert_eq!(integer(5), [0x0a, 5]);
        assert_eq!(integer(0x3f8), [0x0b, 0xf8, 0x03]);
        assert_eq!(integer(0x1_0000), [0x0c, 0, 0, 1, 0]);
        assert_eq!(integer(1 << 40).len(), 9);
        for v in [
            0u64,
            1,
            2,
            0xff,
            0x100,
            0xffff,
            0x1_0000,
            u32::MAX as u64,
            1 << 40,
        ] {
            assert_eq!(decode::object(&integer(v)), Ok(Obj::Int(v)));
        }
    }

    #[test]
    fn eisa_ids_match_the_well_known_values() {
        // PNP0501 (16550A UART) and PNP0303 (PS/2 keyboard) as every firmware encodes them.
        assert_eq!(eisa_id_value("PNP0501"), 0x0105_d041);
        assert_eq!(eisa_id_value("PNP0303"), 0x0303_d041);
        assert_eq!(eisa_id("PNP0501"), [0x0c, 0x41, 0xd0, 0x05, 0x01]);
        for id in ["PNP0501", "PNP0A08", "QEM0002", "ABC1234"] {
            assert_eq!(decode::eisa_id_string(eisa_id_value(id)), id);
        }
    }

    #[test]
    fn names_scopes_and_devices_nest() {
        assert_eq!(name_string("_S5"), b"_S5_");
        assert_eq!(name_string("\\_SB_"), b"\\_SB_");
        assert_eq!(name_string("\\_SB.COM1"), b"\\\x2e_SB_COM1");
        assert_eq!(name_string("\\"), b"\\\0");
        assert_eq!(name_string("A.B.C"), b"\x2f\x03A___B___C___");
        let aml = scope(
            "\\_SB",
            &[device(
                "COM1",
                &[
                    name("_HID", &eisa_id("PNP0501")),
                    name("_STR", &string("x")),
                ],
            )],
        );
        let t = decode::terms(&aml).unwrap();
        assert_eq!(
            t,
            vec![Term::Scope(
                "\\_SB_".into(),
                vec![Term::Device(
                    "COM1".into(),
                    vec![
                        Term::Name("_HID".into(), Obj::Int(0x0105_d041)),
                        Term::Name("_STR".into(), Obj::Str("x".into())),
                    ]
                )]
            )]
        );
    }

    #[test]
    fn resource_templates_end_with_an_end_tag() {
        let rt = resource_template(&[io(0x3f8, 0x3f8, 1, 8), irq_no_flags(4)]);
        let Ok(Obj::Buf(b)) = decode::object(&rt) else {
            panic!("not a buffer")
        };
        assert_eq!(b, [0x47, 1, 0xf8, 3, 0xf8, 3, 1, 8, 0x22, 0x10, 0, 0x79, 0]);
        let r = decode::resources(&b).unwrap();
        assert_eq!(r.iter().map(|d| d.0).collect::<Vec<_>>(), [8, 4, 0xf]);
    }

    #[test]
    fn large_descriptors_have_the_spec_layout_and_decode_back() {
        // What ACPI 6.5 section 6.4.3.4 and 6.4.3.6 lay out (and iasl emits) for
        // Memory32Fixed (ReadWrite, 0xFEB00000, 0x200) and
        // Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 16 }.
        let m = memory32_fixed(true, 0xfeb0_0000, 0x200);
        assert_eq!(m, [0x86, 9, 0, 1, 0, 0, 0xb0, 0xfe, 0, 2, 0, 0]);
        assert_eq!(memory32_fixed(false, 0, 0)[3], 0, "read-only");
        use resource::{ACTIVE_LOW, CONSUMER, EDGE, SHARED};
        let i = extended_interrupt(CONSUMER | EDGE, 16);
        assert_eq!(i, [0x89, 6, 0, 3, 1, 16, 0, 0, 0]);
        assert_eq!(
            extended_interrupt(ACTIVE_LOW | SHARED, 0x1_0203)[3..],
            [0x0c, 1, 3, 2, 1, 0]
        );
        let rt = resource_template(&[m, i, irq_no_flags(4)]);
        let Ok(Obj::Buf(b)) = decode::object(&rt) else {
            panic!("not a buffer")
        };
        let r = decode::resources(&b).unwrap();
        assert_eq!(
            r.iter().map(|d| d.0).collect::<Vec<_>>(),
            [0x86, 0x89, 4, 0xf]
        );
        assert_eq!(r[0].1.len(), 9);
        assert_eq!(r[1].1, [3, 1, 16, 0, 0, 0]);
        // A large descriptor whose length runs past the buffer is an error, not a panic.
        assert!(decode::resources(&[0x86, 9, 0, 1]).is_err());
        assert!(decode::resources(&[0x86]).is_err());
    }

    #[test]
    fn packages_count_their_elements() {
        let p = package(&[integer(5), integer(0), integer(0), integer(0)]);
        assert_eq!(p, [0x12, 0x07, 0x04, 0x0a, 0x05, 0x00, 0x00, 0x00]);
        assert_eq!(
            decode::object(&p),
            Ok(Obj::Pkg(vec![
                Obj::Int(5),
                Obj::Int(0),
                Obj::Int(0),
                Obj::Int(0)
            ]))
        );
    }
}
