//! Names as a terminal shows them: a process, pod or unit name is another
//! party's bytes, and a control character, a terminal escape or a bidi
//! override in it would act on the operator's terminal (a newline forges
//! a table row). Each is shown escaped, as `\n`, `\x1b` or `\u{202e}`;
//! everything else as it is. The JSON and metrics carry the value itself
//! (their encoders escape it).

use std::borrow::Cow;

/// Whether `c` would act on a terminal rather than be shown: C0 and C1
/// controls, DEL, and the bidirectional overrides and isolates.
fn acts(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every character that acts on a terminal escaped.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(acts) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if acts(c) {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_escapes_and_bidi_overrides_are_shown_escaped() {
        assert_eq!(printable("redis-server"), "redis-server");
        assert!(matches!(printable("nginx"), Cow::Borrowed(_)));
        assert_eq!(printable("a\nESTAB forged"), "a\\nESTAB forged");
        assert_eq!(printable("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(printable("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(printable("caf\u{e9} \u{fffd}"), "caf\u{e9} \u{fffd}");
    }
}
