//! The one rule for free text the shop stores (a product's name, a card token, a reason):
//! not blank, not longer than its limit, no control characters (a NUL cannot even be
//! stored in PostgreSQL's `jsonb`) and no bidirectional formatting characters (which make
//! text shown in a console or a log read differently from what it holds).

/// Whether `text` is acceptable free text of at most `max_chars` characters.
///
/// ```
/// use demo_shop::domain::text::is_valid;
/// assert!(is_valid("Mug, blue", 100));
/// assert!(!is_valid("  ", 100));
/// assert!(!is_valid("a\0b", 100));
/// assert!(!is_valid(&"x".repeat(101), 100));
/// assert!(!is_valid("invoice\u{202E}fdp.exe", 100));
/// ```
pub fn is_valid(text: &str, max_chars: usize) -> bool {
    !text.trim().is_empty()
        && text.chars().count() <= max_chars
        && !text.chars().any(is_unprintable)
}

/// A control character, or a character that changes the direction text is shown in.
fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` made acceptable: control characters become spaces, and it is cut to `max_chars`
/// characters (with `…`); for text the shop writes itself from what another service said.
///
/// ```
/// use demo_shop::domain::text::{fitted, is_valid};
/// assert_eq!(fitted("declined:\ncard expired", 100), "declined: card expired");
/// assert_eq!(fitted("a\u{202E}b", 100), "a b");
/// let long = fitted(&"x".repeat(600), 500);
/// assert!(is_valid(&long, 500) && long.ends_with('…'));
/// ```
pub fn fitted(text: &str, max_chars: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if is_unprintable(c) { ' ' } else { c })
        .collect();
    let clean = clean.trim();
    if clean.chars().count() <= max_chars {
        return clean.to_owned();
    }
    let mut cut: String = clean.chars().take(max_chars.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The longest product name.
pub const MAX_NAME: usize = 100;
/// The longest card token.
pub const MAX_CARD: usize = 64;
/// The longest cancellation reason.
pub const MAX_REASON: usize = 500;
