//! Text from a response, cut to a bounded length where it is shown or kept (logs, the report,
//! the status page): a backend may send an id or a value of any length.

use std::borrow::Cow;

/// How much of an issue's message or a fixed value logs and the report keep: enough for any
/// message the rules write, with the value it quotes cut.
pub const SHOWN_TEXT_BYTES: usize = 512;

/// `text` if it fits in `max` bytes; else its first `max` bytes (back to a character boundary)
/// and a marker saying how many bytes were cut: `abc…[+1234 bytes]`.
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…[+{} bytes]", &text[..end], text.len() - end))
}

#[cfg(test)]
mod tests {
    //! Unit tests for the cut.

    use super::*;

    #[test]
    fn short_text_is_left_whole() {
        assert_eq!(cut("task-1", 6), "task-1");
    }

    #[test]
    fn long_text_keeps_its_start_and_says_what_was_cut() {
        assert_eq!(cut("abcdefgh", 3), "abc…[+5 bytes]");
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        // "é" is two bytes: a cut inside it goes back to before it.
        assert_eq!(cut("aé", 2), "a…[+2 bytes]");
    }
}
