//! The encoder against postcard: the same bytes for every part of the serde data model, at every
//! varint length, and the same errors.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

use super::encode;
use crate::value::flavor::{Count, Out, Pieces};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UnitStruct;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Newtype(u16);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TupleStruct(i8, u8, bool);

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Variant {
    Unit,
    Newtype(i32),
    Tuple(u64, i64),
    Struct { a: u128, b: i128, c: f32 },
}

/// One field for every serializer method (`collect_str` has its own test).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct All {
    b: bool,
    i8: i8,
    i16: i16,
    i32: i32,
    i64: i64,
    i128: i128,
    u8: u8,
    u16: u16,
    u32: u32,
    u64: u64,
    u128: u128,
    f32: f32,
    f64: f64,
    c: char,
    s: String,
    bytes: serde_bytes::ByteBuf,
    none: Option<u32>,
    some: Option<String>,
    unit: (),
    unit_struct: UnitStruct,
    newtype: Newtype,
    variants: Vec<Variant>,
    tuple: (u16, char),
    tuple_struct: TupleStruct,
    map: BTreeMap<String, Vec<u8>>,
}

/// xorshift64*: the test's values, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number of 0 to 128 significant bits, so that every varint length comes up; cast to a
    /// narrower type it keeps its low bits (negative numbers included).
    fn int(&mut self) -> u128 {
        let v = u128::from(self.next()) | u128::from(self.next()) << 64;
        match self.next() % 129 {
            0 => 0,
            bits => v >> (128 - bits),
        }
    }

    fn string(&mut self) -> String {
        let n = self.next() % 300;
        (0..n)
            .map(|_| char::from_u32((self.int() % 0x11_0000) as u32).unwrap_or('\u{fffd}'))
            .collect()
    }

    fn all(&mut self) -> All {
        let variants = (0..self.next() % 20)
            .map(|_| match self.next() % 4 {
                0 => Variant::Unit,
                1 => Variant::Newtype(self.int() as i32),
                2 => Variant::Tuple(self.int() as u64, self.int() as i64),
                _ => Variant::Struct {
                    a: self.int(),
                    b: self.int() as i128,
                    c: f32::from_bits(self.next() as u32),
                },
            })
            .collect();
        let map = (0..self.next() % 10)
            .map(|_| {
                (
                    self.string(),
                    vec![self.next() as u8; (self.next() % 200) as usize],
                )
            })
            .collect();
        All {
            b: self.next() % 2 == 1,
            i8: self.int() as i8,
            i16: self.int() as i16,
            i32: self.int() as i32,
            i64: self.int() as i64,
            i128: self.int() as i128,
            u8: self.int() as u8,
            u16: self.int() as u16,
            u32: self.int() as u32,
            u64: self.int() as u64,
            u128: self.int(),
            f32: f32::from_bits(self.next() as u32),
            f64: f64::from_bits(self.next()),
            c: char::from_u32((self.int() % 0x11_0000) as u32).unwrap_or('x'),
            s: self.string(),
            bytes: serde_bytes::ByteBuf::from(vec![
                self.next() as u8;
                (self.next() % 500) as usize
            ]),
            none: None,
            some: Some(self.string()),
            unit: (),
            unit_struct: UnitStruct,
            newtype: Newtype(self.int() as u16),
            variants,
            tuple: (self.int() as u16, 'é'),
            tuple_struct: TupleStruct(self.int() as i8, self.int() as u8, true),
            map,
        }
    }
}

fn postcard_bytes(value: &impl Serialize) -> postcard::Result<Vec<u8>> {
    let mut buf = vec![0u8; 1 << 20];
    Ok(postcard::to_slice(value, &mut buf)?.to_vec())
}

fn ours(value: &impl Serialize) -> postcard::Result<Vec<u8>> {
    let mut buf = vec![0u8; 1 << 20];
    let n = encode(value, Out::new(&mut buf))?;
    buf.truncate(n);
    Ok(buf)
}

#[test]
fn every_part_of_the_data_model_encodes_as_postcard_does() {
    let mut rng = Rng(0x5EED_0001);
    for i in 0..2000 {
        let value = rng.all();
        let want = postcard_bytes(&value).unwrap();
        let got = ours(&value).unwrap();
        assert_eq!(got, want, "value {i}: {value:?}");
        assert_eq!(encode(&value, Count::default()), Ok(want.len()));
        // postcard reads it back, and the value it reads encodes to the same bytes (a NaN is not
        // equal to itself, its bits are).
        let back: All = postcard::from_bytes(&got).unwrap();
        assert_eq!(ours(&back).unwrap(), want, "value {i}");
    }
}

#[test]
fn integers_at_every_varint_boundary_encode_as_postcard_does() {
    let mut edges: Vec<u128> = vec![u128::MAX];
    for bits in 0..128 {
        let p = 1u128 << bits;
        edges.extend([p - 1, p, p + 1]);
    }
    for &v in &edges {
        let (u, s) = (v, v as i128);
        let cases: [(&str, Vec<u8>, Vec<u8>); 8] = [
            (
                "u16",
                ours(&(u as u16)).unwrap(),
                postcard_bytes(&(u as u16)).unwrap(),
            ),
            (
                "u32",
                ours(&(u as u32)).unwrap(),
                postcard_bytes(&(u as u32)).unwrap(),
            ),
            (
                "u64",
                ours(&(u as u64)).unwrap(),
                postcard_bytes(&(u as u64)).unwrap(),
            ),
            ("u128", ours(&u).unwrap(), postcard_bytes(&u).unwrap()),
            (
                "i16",
                ours(&(s as i16)).unwrap(),
                postcard_bytes(&(s as i16)).unwrap(),
            ),
            (
                "i32",
                ours(&(s as i32)).unwrap(),
                postcard_bytes(&(s as i32)).unwrap(),
            ),
            (
                "i64",
                ours(&(s as i64)).unwrap(),
                postcard_bytes(&(s as i64)).unwrap(),
            ),
            ("i128", ours(&s).unwrap(), postcard_bytes(&s).unwrap()),
        ];
        for (ty, got, want) in cases {
            assert_eq!(got, want, "{ty} from {v:#x}");
        }
        for w in [s.wrapping_neg(), s.wrapping_neg().wrapping_sub(1)] {
            assert_eq!(ours(&w).unwrap(), postcard_bytes(&w).unwrap(), "i128 {w}");
        }
    }
}

#[test]
fn a_slice_too_short_is_full_at_every_length() {
    let value = Rng(0x5EED_0002).all();
    let want = postcard_bytes(&value).unwrap();
    let mut buf = vec![0u8; want.len()];
    for n in 0..want.len() {
        assert_eq!(
            encode(&value, Out::new(&mut buf[..n])),
            Err(postcard::Error::SerializeBufferFull),
            "{n} of {} bytes",
            want.len()
        );
    }
    assert_eq!(encode(&value, Out::new(&mut buf)), Ok(want.len()));
    assert_eq!(buf, want);
}

#[test]
fn pieces_of_any_size_join_into_postcards_bytes() {
    let value = Rng(0x5EED_0003).all();
    let want = postcard_bytes(&value).unwrap();
    for buf_len in [1, 3, 9, 10, 11, 17, 100, 4096] {
        let mut all = Vec::new();
        let mut sink = |piece: &[u8]| {
            all.extend_from_slice(piece);
            true
        };
        let mut buf = vec![0u8; buf_len];
        let n = encode(&value, Pieces::new(&mut buf, &mut sink)).unwrap();
        assert_eq!(n, want.len());
        assert_eq!(all, want, "buffer of {buf_len}");
    }
}

/// Serializes with `collect_str`, from `Display`.
struct Shown<D>(D);

impl<D: fmt::Display> Serialize for Shown<D> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// A `Display` that fails half-way.
struct Failing;

impl fmt::Display for Failing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("part")?;
        Err(fmt::Error)
    }
}

/// A sequence whose length is not known in advance.
struct Unknown;

impl Serialize for Unknown {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((0..3u8).filter(|_| true))
    }
}

/// A type whose `Serialize` refuses.
struct Refuses;

impl Serialize for Refuses {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("no"))
    }
}

#[test]
fn displayed_strings_and_errors_match_postcard() {
    let shown = (
        Shown(12345.5f64),
        Shown("ünï"),
        Shown(format_args!("{}-{}", 1, 2)),
    );
    assert_eq!(ours(&shown), postcard_bytes(&shown));
    assert_eq!(
        encode(&shown, Count::default()),
        Ok(postcard_bytes(&shown).unwrap().len())
    );
    for (got, want) in [
        (ours(&Shown(Failing)), postcard::Error::CollectStrError),
        (ours(&Unknown), postcard::Error::SerializeSeqLengthUnknown),
        (ours(&Refuses), postcard::Error::SerdeSerCustom),
    ] {
        assert_eq!(got, Err(want));
    }
    assert_eq!(
        postcard_bytes(&Shown(Failing)),
        Err(postcard::Error::CollectStrError)
    );
    assert_eq!(
        postcard_bytes(&Unknown),
        Err(postcard::Error::SerializeSeqLengthUnknown)
    );
}
