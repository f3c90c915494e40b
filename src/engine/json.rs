//! A validating JSON scanner: checks the whole document and records the byte spans of the
//! records' own top-level fields, skipping everything else without building values.
//!
//! Only string contents may hold non-ASCII bytes, so only strings that do are checked for UTF-8.
//! Acceptance follows `serde_json` (RFC 8259, at most 127 nested containers, no number that
//! overflows `f64`, no lone surrogate escape), so whatever the engine checks, clients parse.

use std::borrow::Cow;

use super::route::{head, RouteSpec, Segment};

/// Most nested arrays/objects accepted; `serde_json` refuses the 128th level.
pub(crate) const MAX_DEPTH: usize = 127;

/// Integers longer than this may overflow `f64`, so they are parsed to check.
const LONG_DIGITS: usize = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Str,
    Num,
    Bool(bool),
    Null,
    Object,
    Array,
}

/// A value's bytes `start..end` (strings include their quotes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ValueSpan {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
    /// A string containing a backslash escape (must be decoded to compare).
    pub escaped: bool,
}

/// Where one logical field occurs in a record; JSON parsers keep the last occurrence.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSpans {
    pub last: Option<ValueSpan>,
    /// Earlier occurrences of a duplicated key (rare); patched along with the last.
    pub earlier: Vec<ValueSpan>,
}

/// One record's task fields and task id, by slot.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordSpans {
    pub fields: [FieldSpans; 4],
    /// Rank in the route's task id list, and the value.
    pub task_id: Option<(usize, ValueSpan)>,
}

/// The body is not valid JSON (or is too deep, or has a number out of range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unparseable;

type Res<T> = Result<T, Unparseable>;

/// Validates `text` and returns the route's records, in document order.
pub(crate) fn scan(body: &[u8], route: &RouteSpec) -> Res<Vec<RecordSpans>> {
    let mut s = Scanner {
        b: body,
        pos: 0,
        depth: 0,
        route,
    };
    let mut out = Vec::new();
    s.ws();
    s.walk(0, &mut out)?;
    s.ws();
    if s.pos != s.b.len() {
        return Err(Unparseable);
    }
    Ok(out)
}

/// Decodes the contents of a validated JSON string (without its quotes).
pub(crate) fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let decoded = match chars.next() {
            Some('b') => '\u{8}',
            Some('f') => '\u{c}',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            Some('u') => {
                let hi = hex4(&mut chars);
                if (0xD800..0xDC00).contains(&hi) {
                    // Validated: a low surrogate escape follows.
                    chars.next();
                    chars.next();
                    let lo = hex4(&mut chars);
                    char::from_u32(
                        0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF),
                    )
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
                } else {
                    char::from_u32(hi).unwrap_or(char::REPLACEMENT_CHARACTER)
                }
            }
            Some(other) => other,
            None => break,
        };
        out.push(decoded);
    }
    out
}

fn hex4(chars: &mut std::str::Chars<'_>) -> u32 {
    (0..4).fold(0, |n, _| {
        n * 16 + chars.next().and_then(|c| c.to_digit(16)).unwrap_or(0)
    })
}

/// The text of a span the scanner validated (so it is UTF-8 and on character boundaries).
pub(crate) fn str_at(body: &[u8], start: usize, end: usize) -> &str {
    body.get(start..end)
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("")
}

/// The text of a string span, decoded only when it has escapes.
pub(crate) fn string_text<'a>(body: &'a [u8], span: &ValueSpan) -> Cow<'a, str> {
    let inner = str_at(body, span.start + 1, span.end - 1);
    if span.escaped {
        Cow::Owned(unescape(inner))
    } else {
        Cow::Borrowed(inner)
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// High bits flag the bytes among 8 that may be `"`, `\` or a control character; nonzero
/// exactly when one is, and the lowest flag is exact.
#[inline]
fn special(w: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    zero(w ^ (ONES * u64::from(b'"')))
        | zero(w ^ (ONES * u64::from(b'\\')))
        | (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
}

struct Scanner<'a, 'r> {
    b: &'a [u8],
    pos: usize,
    /// Containers open around `pos` (walked ones; `skip_container` adds its own).
    depth: usize,
    route: &'r RouteSpec,
}

// === impl Scanner ===

impl Scanner<'_, '_> {
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.pos) {
            self.pos += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Res<u8> {
        self.b.get(self.pos).copied().ok_or(Unparseable)
    }

    #[inline]
    fn expect(&mut self, c: u8) -> Res<()> {
        if self.peek()? != c {
            return Err(Unparseable);
        }
        self.pos += 1;
        Ok(())
    }

    /// At `"`: moves past the closing quote; returns the contents' range and whether it has
    /// escapes. Contents with non-ASCII bytes are checked to be UTF-8 (nothing else can be).
    #[inline]
    fn string(&mut self) -> Res<(usize, usize, bool)> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        let mut high = 0u64;
        loop {
            // Eight bytes at a time to the first quote, backslash or control byte.
            while let Some(chunk) = self.b.get(self.pos..self.pos + 8) {
                let w = u64::from_le_bytes(chunk.try_into().map_err(|_| Unparseable)?);
                let m = special(w);
                if m != 0 {
                    // The lowest flagged byte is exact (false flags only sit above a true one).
                    let at = m.trailing_zeros();
                    high |= w & HIGH & ((1u64 << at) - 1);
                    self.pos += (at / 8) as usize;
                    break;
                }
                high |= w & HIGH;
                self.pos += 8;
            }
            match self.peek()? {
                b'"' => {
                    let end = self.pos;
                    self.pos += 1;
                    if high != 0 && std::str::from_utf8(&self.b[start..end]).is_err() {
                        return Err(Unparseable);
                    }
                    return Ok((start, end, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                c if c < 0x20 => return Err(Unparseable),
                c => {
                    high |= u64::from(c & 0x80);
                    self.pos += 1;
                }
            }
        }
    }

    /// At `\`: validates one escape (a surrogate pair counts as one).
    fn escape(&mut self) -> Res<()> {
        let c = *self.b.get(self.pos + 1).ok_or(Unparseable)?;
        self.pos += 2;
        match c {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(()),
            b'u' => match self.hex4()? {
                0xDC00..=0xDFFF => Err(Unparseable),
                0xD800..=0xDBFF => {
                    if self.b.get(self.pos..self.pos + 2) != Some(b"\\u") {
                        return Err(Unparseable);
                    }
                    self.pos += 2;
                    match self.hex4()? {
                        0xDC00..=0xDFFF => Ok(()),
                        _ => Err(Unparseable),
                    }
                }
                _ => Ok(()),
            },
            _ => Err(Unparseable),
        }
    }

    fn hex4(&mut self) -> Res<u32> {
        let digits = self.b.get(self.pos..self.pos + 4).ok_or(Unparseable)?;
        let mut n = 0;
        for &d in digits {
            n = n * 16 + char::from(d).to_digit(16).ok_or(Unparseable)?;
        }
        self.pos += 4;
        Ok(n)
    }

    #[inline]
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.b.get(self.pos) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Res<()> {
        let start = self.pos;
        if self.b.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let int_digits = match self.peek()? {
            b'0' => {
                self.pos += 1;
                1
            }
            b'1'..=b'9' => self.digits(),
            _ => return Err(Unparseable),
        };
        let mut may_overflow = int_digits > LONG_DIGITS;
        if self.b.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Unparseable);
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.b.get(self.pos) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Unparseable);
            }
            may_overflow = true;
        }
        if may_overflow {
            let text = std::str::from_utf8(&self.b[start..self.pos]).map_err(|_| Unparseable)?;
            if !text.parse::<f64>().map_err(|_| Unparseable)?.is_finite() {
                return Err(Unparseable);
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Res<()> {
        if self.b.get(self.pos..self.pos + word.len()) != Some(word) {
            return Err(Unparseable);
        }
        self.pos += word.len();
        Ok(())
    }

    /// Validates and skips one value at `pos`; returns its kind and whether a string has escapes.
    #[inline]
    fn value(&mut self) -> Res<(Kind, bool)> {
        let kind = match self.peek()? {
            b'"' => return self.string().map(|(_, _, esc)| (Kind::Str, esc)),
            b'-' | b'0'..=b'9' => return self.number().map(|()| (Kind::Num, false)),
            b't' => return self.literal(b"true").map(|()| (Kind::Bool(true), false)),
            b'f' => return self.literal(b"false").map(|()| (Kind::Bool(false), false)),
            b'n' => return self.literal(b"null").map(|()| (Kind::Null, false)),
            b'{' => Kind::Object,
            b'[' => Kind::Array,
            _ => return Err(Unparseable),
        };
        self.skip_container()?;
        Ok((kind, false))
    }

    /// At `{` or `[`: validates and skips the container, iteratively (bit stack of open kinds).
    fn skip_container(&mut self) -> Res<()> {
        // Bit 0 is the innermost container: 1 for an object.
        let mut stack: u128 = 0;
        let mut depth = 0usize;
        'value: loop {
            match self.peek()? {
                c @ (b'{' | b'[') => {
                    if self.depth + depth >= MAX_DEPTH {
                        return Err(Unparseable);
                    }
                    let object = c == b'{';
                    stack = (stack << 1) | u128::from(object);
                    depth += 1;
                    self.pos += 1;
                    self.ws();
                    if self.peek()? == if object { b'}' } else { b']' } {
                        self.pos += 1;
                        stack >>= 1;
                        depth -= 1;
                    } else {
                        if object {
                            self.member_key()?;
                        }
                        continue 'value;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b'-' | b'0'..=b'9' => self.number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return Err(Unparseable),
            }
            // After a value: close containers until one continues with a comma.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                self.ws();
                let object = stack & 1 == 1;
                match self.peek()? {
                    b',' => {
                        self.pos += 1;
                        self.ws();
                        if object {
                            self.member_key()?;
                        }
                        continue 'value;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    _ => return Err(Unparseable),
                }
                self.pos += 1;
                stack >>= 1;
                depth -= 1;
            }
        }
    }

    /// At a member: `"key" :` and the whitespace after; returns the key's contents range.
    #[inline]
    fn member_key(&mut self) -> Res<(usize, usize, bool)> {
        if self.peek()? != b'"' {
            return Err(Unparseable);
        }
        let key = self.string()?;
        self.ws();
        self.expect(b':')?;
        self.ws();
        Ok(key)
    }

    /// After a member value: `,` (then whitespace) → true, `}`/`]` → false.
    #[inline]
    fn next_member(&mut self, close: u8) -> Res<bool> {
        self.ws();
        match self.peek()? {
            b',' => {
                self.pos += 1;
                self.ws();
                Ok(true)
            }
            c if c == close => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(Unparseable),
        }
    }

    fn open(&mut self) -> Res<()> {
        if self.depth >= MAX_DEPTH {
            return Err(Unparseable);
        }
        self.depth += 1;
        self.pos += 1;
        self.ws();
        Ok(())
    }

    fn key_is(&self, (start, end, escaped): (usize, usize, bool), name: &str) -> bool {
        let raw = str_at(self.b, start, end);
        if escaped {
            unescape(raw) == name
        } else {
            raw == name
        }
    }

    /// Follows the record pointer from segment `seg` through the value at `pos`.
    fn walk(&mut self, seg: usize, out: &mut Vec<RecordSpans>) -> Res<()> {
        let route = self.route;
        let Some(segment) = route.selector.get(seg) else {
            return self.record(out);
        };
        match self.peek()? {
            b'{' => {
                self.open()?;
                if self.peek()? == b'}' {
                    self.pos += 1;
                } else {
                    // Records under an earlier duplicate of the key are dropped: the last wins.
                    let mut mark = None;
                    loop {
                        let key = self.member_key()?;
                        let hit = match segment {
                            Segment::Each => true,
                            Segment::Member { name, .. } => self.key_is(key, name),
                        };
                        if hit {
                            if let (Segment::Member { .. }, Some(m)) = (segment, mark) {
                                out.truncate(m);
                            }
                            mark = Some(out.len());
                            self.walk(seg + 1, out)?;
                        } else {
                            self.value()?;
                        }
                        if !self.next_member(b'}')? {
                            break;
                        }
                    }
                }
                self.depth -= 1;
            }
            b'[' => {
                self.open()?;
                if self.peek()? == b']' {
                    self.pos += 1;
                } else {
                    let mut i = 0;
                    loop {
                        let hit = match segment {
                            Segment::Each => true,
                            Segment::Member { index, .. } => *index == Some(i),
                        };
                        if hit {
                            self.walk(seg + 1, out)?;
                        } else {
                            self.value()?;
                        }
                        i += 1;
                        if !self.next_member(b']')? {
                            break;
                        }
                    }
                }
                self.depth -= 1;
            }
            _ => {
                self.value()?;
            }
        }
        Ok(())
    }

    /// The value at `pos` is selected: an object is a record, anything else is skipped.
    fn record(&mut self, out: &mut Vec<RecordSpans>) -> Res<()> {
        if self.peek()? != b'{' {
            return self.value().map(|_| ());
        }
        self.open()?;
        let mut rec = RecordSpans::default();
        if self.peek()? == b'}' {
            self.pos += 1;
        } else {
            loop {
                let key = self.member_key()?;
                let start = self.pos;
                let (kind, escaped) = self.value()?;
                let span = ValueSpan {
                    start,
                    end: self.pos,
                    kind,
                    escaped,
                };
                self.assign(&mut rec, key, span);
                if !self.next_member(b'}')? {
                    break;
                }
            }
        }
        self.depth -= 1;
        out.push(rec);
        Ok(())
    }

    /// Files a member under the logical fields and task id keys its key names.
    #[inline]
    fn assign(
        &self,
        rec: &mut RecordSpans,
        (start, end, escaped): (usize, usize, bool),
        span: ValueSpan,
    ) {
        let raw = self.b.get(start..end).unwrap_or_default();
        let decoded;
        let key = if escaped {
            decoded = unescape(str_at(self.b, start, end));
            decoded.as_bytes()
        } else {
            raw
        };
        let key_head = head(key);
        for (i, name) in self.route.keys.iter().enumerate() {
            if name.matches(key, key_head) {
                let field = &mut rec.fields[i];
                if let Some(prev) = field.last.replace(span) {
                    field.earlier.push(prev);
                }
            }
        }
        // Only a string or a number names a task; the first key in the list wins.
        if matches!(span.kind, Kind::Str | Kind::Num) {
            if let Some(rank) = self
                .route
                .task_ids
                .iter()
                .position(|n| n.matches(key, key_head))
            {
                if rec.task_id.is_none_or(|(r, _)| rank <= r) {
                    rec.task_id = Some((rank, span));
                }
            }
        }
    }
}
