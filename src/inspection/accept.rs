//! The client's `Accept-Encoding` on an inspected route (RFC 9110 §12.5.3): what it accepts,
//! and the narrower list asked of the upstream so that it answers in a coding we can read.
//!
//! A browser asks for `gzip, deflate, br, zstd` and, holding a shared dictionary, `dcb` and
//! `dcz` too. A backend that prefers a coding we cannot decode would get every fix skipped, so
//! on inspected routes the request keeps only the codings [`Coding::INSPECTED`] names, with the
//! client's own weights. The rest of the request, and every other route, is untouched.

use http::header::{HeaderMap, HeaderValue, ACCEPT_ENCODING};

use crate::coding::Coding;

/// The highest weight, `q=1`, in thousandths as RFC 9110 §12.4.2 allows at most.
const FULL_WEIGHT: u16 = 1000;

/// Codings a re-encoded body may be written in, in the order ties between the client's weights
/// are broken: gzip is cheap to write and read everywhere; identity is the last resort.
const REENCODE_PREFERENCE: [Coding; 5] = [
    Coding::Gzip,
    Coding::Zstd,
    Coding::Brotli,
    Coding::Zlib,
    Coding::Identity,
];

/// What the client's `Accept-Encoding` allows, for the codings we read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCodings {
    /// No `Accept-Encoding` at all: any coding is acceptable (RFC 9110 §12.5.3).
    any: bool,
    /// The weight each of [`Coding::INSPECTED`] was given by name, in thousandths.
    named: [Option<u16>; 5],
    /// The weight of `*`, for the codings not named.
    star: Option<u16>,
}

/// One element of an `Accept-Encoding` list.
struct Element<'a> {
    /// The whole element as sent, parameters included.
    text: &'a [u8],
    /// The coding token, trimmed.
    token: &'a [u8],
    /// `None` when the weight is malformed.
    weight: Option<u16>,
}

/// What one element says of the codings we read.
enum Read {
    Named(Coding, u16),
    Star(u16),
    /// A coding we do not read, or a malformed weight: dropped when narrowing.
    Foreign,
}

// === impl ClientCodings ===

impl ClientCodings {
    /// Reads the request's `Accept-Encoding` and, when `narrow`, rewrites it to the codings we
    /// read. A header that names nothing else is left as it came, byte for byte, and costs one
    /// scan without an allocation: that is what browsers send.
    pub fn negotiate(headers: &mut HeaderMap, narrow: bool) -> ClientCodings {
        let mut codings = ClientCodings {
            any: !headers.contains_key(ACCEPT_ENCODING),
            named: [None; 5],
            star: None,
        };
        let mut foreign = false;
        for element in headers.get_all(ACCEPT_ENCODING).iter().flat_map(elements) {
            match element.read() {
                Read::Named(coding, weight) => codings.named[slot(coding)] = Some(weight),
                Read::Star(weight) => {
                    codings.star = Some(weight);
                    // An accepting wildcard is spelt out as the codings it stands for.
                    foreign |= weight > 0;
                }
                Read::Foreign => foreign = true,
            }
        }
        if narrow && foreign {
            let narrowed = codings.narrowed(headers);
            headers.insert(ACCEPT_ENCODING, narrowed);
        }
        codings
    }

    /// The `Accept-Encoding` to send upstream: the elements of ours as the client wrote them,
    /// a refusing `*` kept, an accepting one spelt out; `identity` when nothing is left.
    fn narrowed(&self, headers: &HeaderMap) -> HeaderValue {
        let mut kept: Vec<u8> = Vec::new();
        for element in headers.get_all(ACCEPT_ENCODING).iter().flat_map(elements) {
            match element.read() {
                Read::Named(..) | Read::Star(0) => push_element(&mut kept, element.text),
                Read::Star(_) | Read::Foreign => {}
            }
        }
        self.spell_out_star(&mut kept);
        if kept.is_empty() {
            kept.extend_from_slice(b"identity");
        }
        // Kept elements are bytes of a valid header value, joined by ", ".
        HeaderValue::from_bytes(&kept).unwrap_or(HeaderValue::from_static("identity"))
    }

    /// Whether the client accepts a body in `coding`.
    pub fn accepts(&self, coding: Coding) -> bool {
        if self.any {
            return true;
        }
        match self.named[slot(coding)].or(self.star) {
            Some(weight) => weight > 0,
            // identity is acceptable unless refused by name or by `*;q=0`.
            None => coding == Coding::Identity,
        }
    }

    /// The coding a patched body goes out in: the one it came in if the client accepts it,
    /// else the client's most wanted coding that we write.
    pub fn reencode_as(&self, came_in: Coding) -> Coding {
        if self.accepts(came_in) {
            return came_in;
        }
        // identity is kept as the last resort, but only its own name gives it a weight.
        let weight = |coding: Coding| match coding {
            Coding::Identity => self.named[slot(coding)].unwrap_or(0),
            _ => self.named[slot(coding)].or(self.star).unwrap_or(0),
        };
        REENCODE_PREFERENCE
            .into_iter()
            .filter(|coding| *coding == Coding::Identity || weight(*coding) > 0)
            // max_by_key keeps the last of equals; the preference order wants the first.
            .rev()
            .max_by_key(|coding| weight(*coding))
            .unwrap_or(Coding::Identity)
    }

    /// Appends, for an accepting `*`, the codings it stood for that were not named.
    fn spell_out_star(&self, kept: &mut Vec<u8>) {
        let Some(weight) = self.star.filter(|weight| *weight > 0) else {
            return;
        };
        for coding in Coding::INSPECTED {
            if self.named[slot(coding)].is_none() {
                let element = match weight {
                    FULL_WEIGHT => coding.token().to_owned(),
                    _ => format!("{};q={}", coding.token(), format_weight(weight)),
                };
                push_element(kept, element.as_bytes());
            }
        }
    }
}

// === impl Element ===

impl Element<'_> {
    fn read(&self) -> Read {
        match (self.weight, self.token) {
            (None, _) => Read::Foreign,
            (Some(weight), b"*") => Read::Star(weight),
            (Some(weight), token) => match Coding::from_token(token) {
                Some(coding) => Read::Named(coding, weight),
                None => Read::Foreign,
            },
        }
    }
}

/// Where `coding` is in [`Coding::INSPECTED`]; raw deflate shares deflate's place.
fn slot(coding: Coding) -> usize {
    match coding {
        Coding::Identity => 0,
        Coding::Gzip => 1,
        Coding::Zlib | Coding::RawDeflate => 2,
        Coding::Brotli => 3,
        Coding::Zstd => 4,
    }
}

fn push_element(list: &mut Vec<u8>, element: &[u8]) {
    if !list.is_empty() {
        list.extend_from_slice(b", ");
    }
    list.extend_from_slice(element);
}

/// The elements of one `Accept-Encoding` line; empty elements are skipped (RFC 9110 §5.6.1).
fn elements(value: &HeaderValue) -> impl Iterator<Item = Element<'_>> {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|text| !text.is_empty())
        .map(|text| {
            let mut parts = text.split(|&b| b == b';');
            let token = parts.next().unwrap_or_default().trim_ascii();
            let mut weight = Some(FULL_WEIGHT);
            for param in parts {
                let param = param.trim_ascii();
                if let Some(q) = param
                    .strip_prefix(b"q=")
                    .or_else(|| param.strip_prefix(b"Q="))
                {
                    weight = parse_weight(q);
                }
            }
            Element {
                text,
                token,
                weight,
            }
        })
}

/// A qvalue (`0`, `0.5`, `1.000`) in thousandths; `None` when it is not one.
fn parse_weight(q: &[u8]) -> Option<u16> {
    let (whole, fraction) = match q.iter().position(|&b| b == b'.') {
        Some(dot) => (&q[..dot], &q[dot + 1..]),
        None => (q, &b""[..]),
    };
    if fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for place in 0..3 {
        let digit = fraction.get(place).map_or(0, |d| u16::from(d - b'0'));
        thousandths = thousandths * 10 + digit;
    }
    match whole {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(FULL_WEIGHT),
        _ => None,
    }
}

fn format_weight(weight: u16) -> String {
    let fraction = format!("{:03}", weight % FULL_WEIGHT);
    format!("0.{}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    //! Unit tests for reading and narrowing `Accept-Encoding`.
    use super::*;

    fn negotiate(values: &[&str]) -> (ClientCodings, Vec<String>) {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
        }
        let codings = ClientCodings::negotiate(&mut headers, true);
        let sent = headers
            .get_all(ACCEPT_ENCODING)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        (codings, sent)
    }

    #[test]
    fn what_browsers_send_reaches_the_upstream_as_it_came() {
        for sent in [
            "gzip, deflate, br, zstd",
            "gzip, deflate, br",
            "deflate, gzip, br, zstd",
        ] {
            assert_eq!(negotiate(&[sent]).1, [sent]);
        }
        let (_, sent) = negotiate(&["gzip;q=1.0", "br;q=0.5"]);
        assert_eq!(sent, ["gzip;q=1.0", "br;q=0.5"], "two lines, untouched");
    }

    #[test]
    fn codings_we_cannot_read_are_dropped_and_weights_kept() {
        let (_, sent) = negotiate(&["gzip, deflate, br, zstd, dcb, dcz"]);
        assert_eq!(sent, ["gzip, deflate, br, zstd"]);
        let (_, sent) = negotiate(&["dcz;q=1, br;q=0.8, compress;q=0.9, gzip;q=0"]);
        assert_eq!(sent, ["br;q=0.8, gzip;q=0"]);
        let (_, sent) = negotiate(&["dcz, sdch"]);
        assert_eq!(sent, ["identity"], "nothing left but identity");
    }

    #[test]
    fn a_wildcard_is_spelt_out_as_the_codings_it_stands_for() {
        let (_, sent) = negotiate(&["br, *;q=0.5"]);
        assert_eq!(
            sent,
            ["br, identity;q=0.5, gzip;q=0.5, deflate;q=0.5, zstd;q=0.5"]
        );
        let (codings, sent) = negotiate(&["gzip, *;q=0"]);
        assert_eq!(sent, ["gzip, *;q=0"]);
        assert!(!codings.accepts(Coding::Identity));
        assert!(!codings.accepts(Coding::Zstd));
    }

    #[test]
    fn zero_weight_means_never() {
        let (codings, _) = negotiate(&["gzip;q=0, br"]);
        assert!(!codings.accepts(Coding::Gzip));
        assert!(codings.accepts(Coding::Brotli));
        assert!(codings.accepts(Coding::Identity));
        assert!(!codings.accepts(Coding::Zstd));
        let (codings, _) = negotiate(&["identity;q=0, gzip"]);
        assert!(!codings.accepts(Coding::Identity));
    }

    #[test]
    fn no_header_accepts_anything_and_is_not_added() {
        let mut headers = HeaderMap::new();
        let codings = ClientCodings::negotiate(&mut headers, true);
        assert!(headers.is_empty());
        for coding in Coding::INSPECTED {
            assert!(codings.accepts(coding));
            assert_eq!(codings.reencode_as(coding), coding);
        }
    }

    #[test]
    fn off_reads_without_rewriting() {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("zstd, dcz"));
        let codings = ClientCodings::negotiate(&mut headers, false);
        assert_eq!(headers[ACCEPT_ENCODING], "zstd, dcz");
        assert!(codings.accepts(Coding::Zstd));
    }

    #[test]
    fn a_patched_body_goes_out_in_a_coding_the_client_accepts() {
        let (safari, _) = negotiate(&["gzip, deflate, br"]);
        assert_eq!(safari.reencode_as(Coding::Brotli), Coding::Brotli);
        assert_eq!(safari.reencode_as(Coding::Zstd), Coding::Gzip);
        let (weighted, _) = negotiate(&["gzip;q=0.2, zstd;q=0.9"]);
        assert_eq!(weighted.reencode_as(Coding::Brotli), Coding::Zstd);
        let (identity, _) = negotiate(&["identity"]);
        assert_eq!(identity.reencode_as(Coding::Zstd), Coding::Identity);
        assert_eq!(identity.reencode_as(Coding::RawDeflate), Coding::Identity);
        let (deflate, _) = negotiate(&["deflate"]);
        assert_eq!(deflate.reencode_as(Coding::RawDeflate), Coding::RawDeflate);
    }

    #[test]
    fn weights_parse_as_rfc_9110_writes_them() {
        for (q, weight) in [
            ("1", Some(1000)),
            ("1.000", Some(1000)),
            ("0", Some(0)),
            ("0.5", Some(500)),
            ("0.125", Some(125)),
            ("1.5", None),
            ("0.1234", None),
            ("2", None),
            ("abc", None),
            ("", None),
        ] {
            assert_eq!(parse_weight(q.as_bytes()), weight, "{q}");
        }
        assert_eq!(format_weight(500), "0.5");
        assert_eq!(format_weight(125), "0.125");
    }
}
