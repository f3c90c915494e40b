//! The Content-Security-Policy of a page whose script and style are inline: each block named by
//! its SHA-256 (CSP Level 2 hash sources), so no `unsafe-inline` and nothing else may run.

use base64::Engine;
use sha2::{Digest, Sha256};

/// The policy for `html`: its inline `<script>` and `<style>` blocks by hash, fetches back to
/// this port only, nothing else.
pub fn for_inline_page(html: &str) -> String {
    let scripts = hashes(html, "<script>", "</script>");
    let styles = hashes(html, "<style>", "</style>");
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        or_none(&scripts),
        or_none(&styles)
    )
}

/// `'sha256-…'` of the text between each `open` and the next `close`, as the browser hashes it.
fn hashes(html: &str, open: &str, close: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(open) {
        let body = &rest[start + open.len()..];
        let Some(end) = body.find(close) else { break };
        let digest = Sha256::digest(&body.as_bytes()[..end]);
        found.push(format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        ));
        rest = &body[end + close.len()..];
    }
    found
}

fn or_none(sources: &[String]) -> String {
    if sources.is_empty() {
        "'none'".to_string()
    } else {
        sources.join(" ")
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests for the hash sources.

    use super::*;

    #[test]
    fn each_inline_block_is_named_by_its_sha256_and_nothing_is_unsafe() {
        // echo -n 'alert(1)' | openssl dgst -sha256 -binary | base64
        let csp = for_inline_page("<p><script>alert(1)</script><style>p{}</style>");
        assert!(
            csp.contains("script-src 'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(for_inline_page("<p>").contains("script-src 'none'"));
    }
}
