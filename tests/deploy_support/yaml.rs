//! A reader for the YAML subset the files under `deploy/` are written in: block mappings and
//! sequences by indentation, `|` block scalars, flow `[...]`/`{...}`, quoted and plain scalars,
//! comments, `---` document separators. No anchors, tags, multi-line plain scalars or `>`.
//!
//! It exists so the tests can check structure without adding a YAML crate; a file outside the
//! subset fails loudly rather than being misread.

/// A YAML node; every scalar stays a string (the tests compare text).
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Map(Vec<(String, Yaml)>),
    Seq(Vec<Yaml>),
    Str(String),
}

static EMPTY_SEQ: Vec<Yaml> = Vec::new();

impl Yaml {
    /// The value of `key` in a mapping; panics if absent (the test names what it expected).
    pub fn get(&self, key: &str) -> &Yaml {
        self.opt(key)
            .unwrap_or_else(|| panic!("no key {key:?} in {}", self.brief()))
    }

    pub fn opt(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Follows a `/`-free path of keys: `at(&["spec", "template", "spec"])`.
    pub fn at(&self, path: &[&str]) -> &Yaml {
        path.iter().fold(self, |node, key| node.get(key))
    }

    pub fn str(&self) -> &str {
        match self {
            Yaml::Str(s) => s,
            other => panic!("expected a scalar, found {}", other.brief()),
        }
    }

    /// A sequence's items; an empty scalar (`key:` with nothing) counts as an empty sequence.
    pub fn seq(&self) -> &[Yaml] {
        match self {
            Yaml::Seq(items) => items,
            Yaml::Str(s) if s.is_empty() => &EMPTY_SEQ,
            other => panic!("expected a sequence, found {}", other.brief()),
        }
    }

    pub fn keys(&self) -> Vec<&str> {
        match self {
            Yaml::Map(entries) => entries.iter().map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// The item of a sequence of mappings whose `key` is `value`.
    pub fn find(&self, key: &str, value: &str) -> &Yaml {
        self.seq()
            .iter()
            .find(|item| {
                item.opt(key)
                    .is_some_and(|v| v == &Yaml::Str(value.to_string()))
            })
            .unwrap_or_else(|| panic!("no item with {key}: {value:?} in {}", self.brief()))
    }

    /// Scalars of a sequence of scalars.
    pub fn strs(&self) -> Vec<&str> {
        self.seq().iter().map(Yaml::str).collect()
    }

    fn brief(&self) -> String {
        let text = format!("{self:?}");
        if text.len() > 300 {
            format!("{}...", &text[..300])
        } else {
            text
        }
    }
}

/// Parses every document of a multi-document stream.
pub fn parse_all(text: &str) -> Vec<Yaml> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_end() == "---" {
            if !current.trim().is_empty() {
                docs.push(parse(&current));
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    if !current.trim().is_empty() {
        docs.push(parse(&current));
    }
    docs
}

/// Parses one document.
pub fn parse(text: &str) -> Yaml {
    let lines: Vec<&str> = text.lines().collect();
    let mut p = Parser { lines, pos: 0 };
    p.skip_blank();
    if p.pos >= p.lines.len() {
        return Yaml::Str(String::new());
    }
    let indent = indent_of(p.lines[p.pos]);
    let doc = p.block(indent);
    p.skip_blank();
    assert!(
        p.pos >= p.lines.len(),
        "yaml: unexpected line {}: {:?}",
        p.pos + 1,
        p.lines[p.pos]
    );
    doc
}

struct Parser<'a> {
    lines: Vec<&'a str>,
    pos: usize,
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

fn is_seq_item(content: &str) -> bool {
    content == "-" || content.starts_with("- ")
}

impl<'a> Parser<'a> {
    fn skip_blank(&mut self) {
        while self.pos < self.lines.len() && is_blank(self.lines[self.pos]) {
            self.pos += 1;
        }
    }

    /// The next structural line's indent and content (comments stripped), without consuming it.
    fn peek(&mut self) -> Option<(usize, String)> {
        self.skip_blank();
        let line = self.lines.get(self.pos)?;
        Some((indent_of(line), strip_comment(line.trim()).to_string()))
    }

    fn block(&mut self, indent: usize) -> Yaml {
        match self.peek() {
            Some((_, content)) if is_seq_item(&content) => self.seq(indent),
            Some(_) => self.map(indent, None),
            None => Yaml::Str(String::new()),
        }
    }

    fn seq(&mut self, indent: usize) -> Yaml {
        let mut items = Vec::new();
        while let Some((ind, content)) = self.peek() {
            if ind != indent || !is_seq_item(&content) {
                assert!(
                    ind <= indent,
                    "yaml: bad indentation at line {}",
                    self.pos + 1
                );
                break;
            }
            let rest = content[1..].trim_start().to_string();
            let rest_indent = indent + (content.len() - rest.len());
            if rest.is_empty() {
                self.pos += 1;
                match self.peek() {
                    Some((child, _)) if child > indent => items.push(self.block(child)),
                    _ => items.push(Yaml::Str(String::new())),
                }
            } else if split_key(&rest).is_some() && !rest.starts_with(['[', '{', '"', '\'']) {
                // `- key: value` opens a mapping whose keys sit at the column of `key`.
                items.push(self.map(rest_indent, Some(rest)));
            } else {
                self.pos += 1;
                items.push(flow_or_scalar(&rest));
            }
        }
        Yaml::Seq(items)
    }

    /// A mapping at `indent`; `first` is the content of its first line when it follows `- `.
    fn map(&mut self, indent: usize, mut first: Option<String>) -> Yaml {
        let mut entries: Vec<(String, Yaml)> = Vec::new();
        loop {
            let content = match first.take() {
                Some(c) => c,
                None => match self.peek() {
                    Some((ind, content)) if ind == indent && !is_seq_item(&content) => content,
                    Some((ind, _)) => {
                        assert!(
                            ind <= indent,
                            "yaml: bad indentation at line {}",
                            self.pos + 1
                        );
                        break;
                    }
                    None => break,
                },
            };
            let line_no = self.pos + 1;
            let (key, value) = split_key(&content).unwrap_or_else(|| {
                panic!("yaml: line {line_no}: expected `key: value`, got {content:?}")
            });
            let key = unquote(key);
            assert!(
                entries.iter().all(|(k, _)| *k != key),
                "yaml: line {line_no}: duplicate key {key:?}"
            );
            self.pos += 1;
            let value = value.trim();
            let node = if value == "|" || value == "|-" {
                self.block_scalar(indent, value == "|-")
            } else if value.starts_with('>') || value.starts_with('&') || value.starts_with('*') {
                panic!("yaml: line {line_no}: {value:?} is outside the supported subset");
            } else if value.is_empty() {
                match self.peek() {
                    Some((child, _)) if child > indent => self.block(child),
                    Some((child, c)) if child == indent && is_seq_item(&c) => self.seq(indent),
                    _ => Yaml::Str(String::new()),
                }
            } else {
                flow_or_scalar(value)
            };
            entries.push((key, node));
        }
        Yaml::Map(entries)
    }

    fn block_scalar(&mut self, parent: usize, strip: bool) -> Yaml {
        let mut raw = Vec::new();
        while self.pos < self.lines.len() {
            let line = self.lines[self.pos];
            if !line.trim().is_empty() && indent_of(line) <= parent {
                break;
            }
            raw.push(line);
            self.pos += 1;
        }
        while raw.last().is_some_and(|l| l.trim().is_empty()) {
            raw.pop();
        }
        let cut = raw
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| indent_of(l))
            .min()
            .unwrap_or(0);
        let mut text: String = raw
            .iter()
            .map(|l| if l.len() >= cut { &l[cut..] } else { "" })
            .collect::<Vec<_>>()
            .join("\n");
        if !strip && !text.is_empty() {
            text.push('\n');
        }
        Yaml::Str(text)
    }
}

/// Drops a trailing ` # comment` outside quotes and flow brackets' strings.
fn strip_comment(s: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && (i == 0 || prev == ' ') => return s[..i].trim_end(),
            None => {}
        }
        prev = c;
    }
    s
}

/// Splits `key: value` at the first `: ` (or a trailing `:`) outside quotes and brackets.
fn split_key(s: &str) -> Option<(&str, &str)> {
    let mut quote: Option<char> = None;
    let mut depth = 0i32;
    let bytes: Vec<char> = s.chars().collect();
    let mut offset = 0;
    for (i, &c) in bytes.iter().enumerate() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' if i == 0 => quote = Some(c),
                '[' | '{' => depth += 1,
                ']' | '}' => depth -= 1,
                ':' if depth == 0 && (i + 1 == bytes.len() || bytes[i + 1] == ' ') => {
                    return Some((s[..offset].trim(), &s[offset + 1..]));
                }
                _ => {}
            },
        }
        offset += c.len_utf8();
    }
    None
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        let mut out = String::new();
        let mut chars = s[1..s.len() - 1].chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(other) => out.push(other),
                    None => {}
                }
            } else {
                out.push(c);
            }
        }
        out
    } else if s.len() >= 2 && s.starts_with('\'') && s.ends_with('\'') {
        s[1..s.len() - 1].replace("''", "'")
    } else {
        s.to_string()
    }
}

fn flow_or_scalar(value: &str) -> Yaml {
    let value = value.trim();
    if value.starts_with('[') || value.starts_with('{') {
        let chars: Vec<char> = value.chars().collect();
        let mut pos = 0;
        let node = flow(&chars, &mut pos);
        skip_ws(&chars, &mut pos);
        assert!(
            pos == chars.len(),
            "yaml: trailing text after flow value {value:?}"
        );
        node
    } else {
        Yaml::Str(unquote(value))
    }
}

fn skip_ws(chars: &[char], pos: &mut usize) {
    while *pos < chars.len() && chars[*pos].is_whitespace() {
        *pos += 1;
    }
}

/// A flow node: `[a, b]`, `{k: v}`, a quoted string, or a plain scalar ending at `,` `]` `}`
/// (and, for a mapping key, at `: `).
fn flow(chars: &[char], pos: &mut usize) -> Yaml {
    skip_ws(chars, pos);
    match chars.get(*pos) {
        Some('[') => {
            *pos += 1;
            let mut items = Vec::new();
            loop {
                skip_ws(chars, pos);
                if chars.get(*pos) == Some(&']') {
                    *pos += 1;
                    return Yaml::Seq(items);
                }
                items.push(flow(chars, pos));
                skip_ws(chars, pos);
                match chars.get(*pos) {
                    Some(',') => *pos += 1,
                    Some(']') => {}
                    other => panic!("yaml: expected , or ] in flow sequence, got {other:?}"),
                }
            }
        }
        Some('{') => {
            *pos += 1;
            let mut entries = Vec::new();
            loop {
                skip_ws(chars, pos);
                if chars.get(*pos) == Some(&'}') {
                    *pos += 1;
                    return Yaml::Map(entries);
                }
                let key = match flow_scalar(chars, pos, true) {
                    Yaml::Str(k) => k,
                    _ => unreachable!("flow_scalar returns strings"),
                };
                skip_ws(chars, pos);
                assert_eq!(
                    chars.get(*pos),
                    Some(&':'),
                    "yaml: expected : after flow key {key:?}"
                );
                *pos += 1;
                let value = flow(chars, pos);
                entries.push((key, value));
                skip_ws(chars, pos);
                match chars.get(*pos) {
                    Some(',') => *pos += 1,
                    Some('}') => {}
                    other => panic!("yaml: expected , or }} in flow mapping, got {other:?}"),
                }
            }
        }
        _ => flow_scalar(chars, pos, false),
    }
}

fn flow_scalar(chars: &[char], pos: &mut usize, key: bool) -> Yaml {
    skip_ws(chars, pos);
    let start = *pos;
    if let Some(&q) = chars.get(*pos).filter(|c| **c == '"' || **c == '\'') {
        *pos += 1;
        while *pos < chars.len() {
            let c = chars[*pos];
            if q == '"' && c == '\\' {
                *pos += 2;
                continue;
            }
            if c == q {
                if q == '\'' && chars.get(*pos + 1) == Some(&'\'') {
                    *pos += 2;
                    continue;
                }
                *pos += 1;
                break;
            }
            *pos += 1;
        }
        let text: String = chars[start..*pos].iter().collect();
        return Yaml::Str(unquote(&text));
    }
    while *pos < chars.len() {
        let c = chars[*pos];
        if c == ',' || c == ']' || c == '}' {
            break;
        }
        if key && c == ':' && chars.get(*pos + 1).map_or(true, |n| *n == ' ') {
            break;
        }
        *pos += 1;
    }
    let text: String = chars[start..*pos].iter().collect();
    Yaml::Str(text.trim().to_string())
}
