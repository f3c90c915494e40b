//! Content codings for inspection: decode a body within a bound, and encode a patched one.
//! Pure: bytes in, bytes out, like the engine.

use std::io::{Read, Write};

use bytes::Bytes;
use flate2::read::{DeflateDecoder, GzDecoder, ZlibDecoder};
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use flate2::Compression;

/// The largest zstd window a decoder will allocate: 8 MiB, the limit RFC 9659 §3 sets for the
/// `zstd` content coding. A frame asking for more is refused rather than allocated.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;
/// zstd's default level: the ratio of gzip's default at several times its speed.
const ZSTD_LEVEL: i32 = 3;
/// Brotli quality for a re-encoded body: Flask-Compress's own default. Qualities past 5 cost
/// tens of times more CPU per byte for a few percent on bodies of a few KiB.
const BROTLI_QUALITY: i32 = 4;
/// Brotli window for a re-encoded body (256 KiB): bodies are bounded by `max_decoded_bytes`
/// and status records are small, so a larger window only costs the encoder memory.
const BROTLI_LGWIN: i32 = 18;
thread_local! {
    /// One zstd decoding context per worker thread, reused: creating one costs more than
    /// decoding a status body. Its window is capped, so it never holds more than 8 MiB.
    /// `None` if libzstd could not create it or refused the cap (then zstd is not decoded).
    static ZSTD_CONTEXT: std::cell::RefCell<Option<zstd::zstd_safe::DCtx<'static>>> =
        std::cell::RefCell::new(zstd_context());
}

fn zstd_context() -> Option<zstd::zstd_safe::DCtx<'static>> {
    let mut context = zstd::zstd_safe::DCtx::try_create()?;
    context
        .set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(
            ZSTD_WINDOW_LOG_MAX,
        ))
        .ok()?;
    Some(context)
}

/// Buffer between a brotli stream and its decoder.
const BROTLI_BUFFER: usize = 4096;

/// A body coding the layer can read and write back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    /// RFC 9110 "deflate": a zlib stream.
    Zlib,
    /// "deflate" sent as a raw deflate stream, as some servers do.
    RawDeflate,
    /// RFC 7932 Brotli, `br`.
    Brotli,
    /// RFC 8878 Zstandard, `zstd`.
    Zstd,
}

/// Why a coded body was not inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Inflates past the bound (a decompression bomb, or just large).
    TooLarge,
    /// Not a valid stream in its declared coding, or one needing a larger window than allowed.
    Corrupt,
}

impl Coding {
    /// Every coding the layer reads, each once (the two deflate variants share one name).
    pub const INSPECTED: [Coding; 5] = [
        Coding::Identity,
        Coding::Gzip,
        Coding::Zlib,
        Coding::Brotli,
        Coding::Zstd,
    ];

    /// The coding named by a `Content-Encoding` value; `None` for codings we do not handle
    /// (stacked codings, dictionary codings such as `dcb`), which stream through uninspected.
    pub fn from_header(value: Option<&str>) -> Option<Coding> {
        match value.map(str::trim) {
            None | Some("") => Some(Coding::Identity),
            Some(v) => Coding::from_token(v.as_bytes()),
        }
    }

    /// The coding a content-coding token names, case-insensitively (`x-gzip` is gzip).
    pub fn from_token(token: &[u8]) -> Option<Coding> {
        const NAMES: [(&[u8], Coding); 6] = [
            (b"identity", Coding::Identity),
            (b"gzip", Coding::Gzip),
            (b"x-gzip", Coding::Gzip),
            (b"deflate", Coding::Zlib),
            (b"br", Coding::Brotli),
            (b"zstd", Coding::Zstd),
        ];
        NAMES
            .iter()
            .find(|(name, _)| token.eq_ignore_ascii_case(name))
            .map(|(_, coding)| *coding)
    }

    /// The name `Content-Encoding` and `Accept-Encoding` give this coding.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip => "gzip",
            Coding::Zlib | Coding::RawDeflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
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
            Coding::Brotli => {
                let decoder = brotli::Decompressor::new(&body[..], BROTLI_BUFFER);
                read_bounded(decoder, limit).map(|b| (b, self))
            }
            Coding::Zstd => ZSTD_CONTEXT.with_borrow_mut(|context| {
                let context = context.as_mut().ok_or(DecodeError::Corrupt)?;
                read_bounded(zstd::Decoder::with_context(&body[..], context), limit)
                    .map(|b| (b, self))
            }),
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
            Coding::Brotli => {
                let params = brotli::enc::BrotliEncoderParams {
                    quality: BROTLI_QUALITY,
                    lgwin: BROTLI_LGWIN,
                    size_hint: body.len(),
                    ..Default::default()
                };
                let mut out = Vec::with_capacity(body.len() / 2 + 64);
                brotli::BrotliCompress(&mut &body[..], &mut out, &params)?;
                Ok(Bytes::from(out))
            }
            // One frame with its content size, so a decoder's window is no larger than the body.
            Coding::Zstd => zstd::bulk::compress(body, ZSTD_LEVEL).map(Bytes::from),
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
        for coding in [
            Coding::Gzip,
            Coding::Zlib,
            Coding::RawDeflate,
            Coding::Brotli,
            Coding::Zstd,
        ] {
            let encoded = coding.encode(body).unwrap();
            let declared = Coding::from_header(Some(coding.token())).unwrap();
            let (decoded, found) = declared.decode(&encoded, 1024).unwrap();
            assert_eq!(&decoded[..], &body[..]);
            assert_eq!(found, coding);
        }
    }

    #[test]
    fn bomb_is_refused_without_inflating_it() {
        for coding in [Coding::Gzip, Coding::Brotli, Coding::Zstd] {
            let bomb = coding.encode(&vec![b' '; 4 << 20]).unwrap();
            assert!(bomb.len() < 64 << 10, "{coding:?}");
            assert_eq!(
                coding.decode(&bomb, 1 << 20),
                Err(DecodeError::TooLarge),
                "{coding:?}"
            );
        }
    }

    #[test]
    fn a_zstd_frame_asking_for_a_window_past_8_mib_is_refused() {
        let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
        encoder.window_log(ZSTD_WINDOW_LOG_MAX + 1).unwrap();
        encoder.long_distance_matching(true).unwrap();
        encoder.write_all(b"{\"status\": \"running\"}").unwrap();
        let frame = Bytes::from(encoder.finish().unwrap());
        assert_eq!(
            Coding::Zstd.decode(&frame, 1 << 20),
            Err(DecodeError::Corrupt)
        );

        let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
        encoder.window_log(ZSTD_WINDOW_LOG_MAX).unwrap();
        encoder.write_all(b"{}").unwrap();
        let frame = Bytes::from(encoder.finish().unwrap());
        assert_eq!(&Coding::Zstd.decode(&frame, 1 << 20).unwrap().0[..], b"{}");
    }

    #[test]
    fn corrupt_and_unknown_codings() {
        let junk = Bytes::from_static(b"not gzip at all");
        assert_eq!(Coding::Gzip.decode(&junk, 1024), Err(DecodeError::Corrupt));
        assert_eq!(Coding::Zlib.decode(&junk, 1024), Err(DecodeError::Corrupt));
        assert_eq!(
            Coding::Brotli.decode(&junk, 1024),
            Err(DecodeError::Corrupt)
        );
        assert_eq!(Coding::Zstd.decode(&junk, 1024), Err(DecodeError::Corrupt));
        assert_eq!(Coding::from_header(Some("dcz")), None);
        assert_eq!(Coding::from_header(Some("gzip, br")), None);
        assert_eq!(Coding::from_header(Some("BR")), Some(Coding::Brotli));
        assert_eq!(Coding::from_header(Some("gzip, gzip")), None);
        assert_eq!(Coding::from_header(Some("GZIP")), Some(Coding::Gzip));
    }
}
