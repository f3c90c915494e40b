//! Content-Encoding for inspection: decode within a bound, and encode a patched body the same way.

use std::io::{Read, Write};

use bytes::Bytes;
use flate2::read::{DeflateDecoder, GzDecoder, ZlibDecoder};
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use flate2::Compression;

/// A body coding the layer can read and write back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    /// RFC 9110 "deflate": a zlib stream.
    Zlib,
    /// "deflate" sent as a raw deflate stream, as some servers do.
    RawDeflate,
}

/// Why a coded body was not inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Inflates past the bound (a decompression bomb, or just large).
    TooLarge,
    /// Not a valid stream in its declared coding.
    Corrupt,
}

impl Coding {
    /// The coding named by a `Content-Encoding` value; `None` for codings we do not handle
    /// (br, zstd, stacked codings), which stream through uninspected.
    pub fn from_header(value: Option<&str>) -> Option<Coding> {
        match value.map(str::trim) {
            None | Some("") => Some(Coding::Identity),
            Some(v) if v.eq_ignore_ascii_case("identity") => Some(Coding::Identity),
            Some(v) if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") => {
                Some(Coding::Gzip)
            }
            Some(v) if v.eq_ignore_ascii_case("deflate") => Some(Coding::Zlib),
            Some(_) => None,
        }
    }

    /// Decodes at most `limit` bytes. For "deflate" the result names the variant actually found,
    /// so re-encoding matches what the client already accepts.
    pub fn decode(self, body: &Bytes, limit: usize) -> Result<(Bytes, Coding), DecodeError> {
        match self {
            Coding::Identity => Ok((body.clone(), Coding::Identity)),
            Coding::Gzip => read_bounded(GzDecoder::new(&body[..]), limit).map(|b| (b, self)),
            Coding::Zlib | Coding::RawDeflate => {
                match read_bounded(ZlibDecoder::new(&body[..]), limit) {
                    Ok(b) => Ok((b, Coding::Zlib)),
                    Err(DecodeError::TooLarge) => Err(DecodeError::TooLarge),
                    Err(DecodeError::Corrupt) => {
                        read_bounded(DeflateDecoder::new(&body[..]), limit)
                            .map(|b| (b, Coding::RawDeflate))
                    }
                }
            }
        }
    }

    /// Encodes a patched body in this coding.
    pub fn encode(self, body: &[u8]) -> std::io::Result<Bytes> {
        fn finish<W: Write>(
            mut w: W,
            body: &[u8],
            done: impl FnOnce(W) -> std::io::Result<Vec<u8>>,
        ) -> std::io::Result<Bytes> {
            w.write_all(body)?;
            done(w).map(Bytes::from)
        }
        let level = Compression::default();
        match self {
            Coding::Identity => Ok(Bytes::copy_from_slice(body)),
            Coding::Gzip => finish(GzEncoder::new(Vec::new(), level), body, |w| w.finish()),
            Coding::Zlib => finish(ZlibEncoder::new(Vec::new(), level), body, |w| w.finish()),
            Coding::RawDeflate => {
                finish(DeflateEncoder::new(Vec::new(), level), body, |w| w.finish())
            }
        }
    }
}

/// Reads a decoder to its end, refusing to hold more than `limit` bytes.
fn read_bounded(decoder: impl Read, limit: usize) -> Result<Bytes, DecodeError> {
    let mut out = Vec::new();
    let mut bounded = decoder.take(limit as u64 + 1);
    bounded
        .read_to_end(&mut out)
        .map_err(|_| DecodeError::Corrupt)?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    //! Unit tests for bounded decoding and same-coding re-encoding.
    use super::*;

    #[test]
    fn round_trips_each_coding() {
        let body = br#"{"status":"completed","stage":"completed"}"#;
        for coding in [Coding::Gzip, Coding::Zlib, Coding::RawDeflate] {
            let encoded = coding.encode(body).unwrap();
            let header = if coding == Coding::Gzip {
                "gzip"
            } else {
                "deflate"
            };
            let declared = Coding::from_header(Some(header)).unwrap();
            let (decoded, found) = declared.decode(&encoded, 1024).unwrap();
            assert_eq!(&decoded[..], &body[..]);
            assert_eq!(found, coding);
        }
    }

    #[test]
    fn bomb_is_refused_without_inflating_it() {
        let bomb = Coding::Gzip.encode(&vec![b' '; 4 << 20]).unwrap();
        assert!(bomb.len() < 64 << 10);
        assert_eq!(
            Coding::Gzip.decode(&bomb, 1 << 20),
            Err(DecodeError::TooLarge)
        );
    }

    #[test]
    fn corrupt_and_unknown_codings() {
        let junk = Bytes::from_static(b"not gzip at all");
        assert_eq!(Coding::Gzip.decode(&junk, 1024), Err(DecodeError::Corrupt));
        assert_eq!(Coding::Zlib.decode(&junk, 1024), Err(DecodeError::Corrupt));
        assert_eq!(Coding::from_header(Some("br")), None);
        assert_eq!(Coding::from_header(Some("gzip, gzip")), None);
        assert_eq!(Coding::from_header(Some("GZIP")), Some(Coding::Gzip));
    }
}
