//! Input rules shared by REST and the gateway, each with its error code. Lengths are counted in
//! Unicode scalar values (`char`s) everywhere, so a limit means the same on every path.

use switchboard_protocol::codes::error as code;
use unicode_normalization::UnicodeNormalization;

use crate::error::ApiError;

/// Longest username.
pub const USERNAME_MAX: usize = 32;
/// Shortest and longest password.
pub const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 8..=256;
/// Longest `client_msg_id`.
pub const CLIENT_MSG_ID_MAX: usize = 64;
/// Longest room name.
pub const ROOM_NAME_MAX: usize = 100;
/// Longest id accepted anywhere (room, user, message).
pub const ID_MAX: usize = 128;

/// NFKC, lowercase, then `[a-z0-9_.-]{1,32}`. NFKC folds full-width and compatibility forms,
/// and the ASCII-only rule leaves no room for homoglyphs such as a Cyrillic `а`.
pub fn username(raw: &str) -> Result<String, ApiError> {
    let name: String = raw.nfkc().collect::<String>().to_lowercase();
    let ok = (1..=USERNAME_MAX).contains(&name.chars().count())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok {
        Ok(name)
    } else {
        Err(ApiError::bad_request(
            code::INVALID_USERNAME,
            "username must be 1-32 characters of a-z, 0-9, '_', '.', '-'",
        ))
    }
}

/// Bidirectional controls: they reorder the text around them, so a name holding one can show
/// as something else (`U+202E` turns `exe.txt` round). Refused in names and ids.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Characters that show nothing: whitespace, zero-width and other format characters, and the
/// "blank" letters (Hangul fillers, the braille blank) that pass for text. A body or name made
/// only of these is empty to the eye.
pub fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || is_bidi_control(c)
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180E}'
                | '\u{200B}'..='\u{200D}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{1D159}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

fn blank(raw: &str) -> bool {
    raw.chars().all(is_invisible)
}

/// 8–256 characters.
pub fn password(raw: &str) -> Result<(), ApiError> {
    if PASSWORD_LEN.contains(&raw.chars().count()) {
        Ok(())
    } else {
        Err(ApiError::bad_request(code::INVALID_PASSWORD, "password must be 8-256 characters"))
    }
}

/// Not empty or only invisible characters, no NUL, at most `max` characters.
pub fn body(raw: &str, max: usize) -> Result<(), ApiError> {
    if blank(raw) {
        return Err(ApiError::bad_request(code::EMPTY_BODY, "message body is empty"));
    }
    if raw.chars().count() > max {
        return Err(ApiError::bad_request(
            code::BODY_TOO_LONG,
            format!("message body is longer than {max} characters"),
        ));
    }
    if raw.contains('\0') {
        return Err(ApiError::bad_request(code::INVALID_REQUEST, "message body contains NUL"));
    }
    Ok(())
}

/// 1–64 printable characters.
pub fn client_msg_id(raw: &str) -> Result<(), ApiError> {
    let n = raw.chars().count();
    if (1..=CLIENT_MSG_ID_MAX).contains(&n) && !raw.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(ApiError::bad_request(code::INVALID_REQUEST, "client_msg_id must be 1-64 printable characters"))
    }
}

/// An id-shaped string: 1–128 printable characters without bidi controls or blanks only.
/// Anything else cannot name a resource (external ids come from tokens, and show in logs).
pub fn id(raw: &str, what: &str) -> Result<(), ApiError> {
    let n = raw.chars().count();
    if (1..=ID_MAX).contains(&n) && !raw.chars().any(|c| c.is_control() || is_bidi_control(c)) && !blank(raw)
    {
        Ok(())
    } else {
        Err(ApiError::bad_request(code::INVALID_REQUEST, format!("{what} is not a valid id")))
    }
}

/// Trimmed, 1–100 characters, something visible, no control or bidi characters (may be empty
/// for a dm).
pub fn room_name(raw: &str, allow_empty: bool) -> Result<String, ApiError> {
    let name = raw.trim().to_owned();
    let n = name.chars().count();
    let clean = !name.chars().any(|c| c.is_control() || is_bidi_control(c));
    if (n == 0 && allow_empty) || ((1..=ROOM_NAME_MAX).contains(&n) && clean && !blank(&name)) {
        Ok(name)
    } else {
        Err(ApiError::bad_request(
            code::INVALID_REQUEST,
            "room name must be 1-100 characters, not all blank, without control or bidi characters",
        ))
    }
}

/// A custom status text: trimmed and NFC-normalised, at most `max` characters, without control
/// or bidi characters; empty (or only invisible characters) means "clear it".
pub fn status_text(raw: &str, max: usize) -> Result<Option<String>, ApiError> {
    use unicode_normalization::UnicodeNormalization;
    let text: String = raw.trim().nfc().collect();
    if text.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return Err(ApiError::bad_request(
            code::INVALID_REQUEST,
            "status text must not hold control or bidi characters",
        ));
    }
    if text.chars().count() > max {
        return Err(ApiError::bad_request(
            code::INVALID_REQUEST,
            format!("status text must be at most {max} characters"),
        ));
    }
    Ok((!blank(&text)).then_some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_normalised_and_homoglyphs_refused() {
        assert_eq!(username("Alice").unwrap(), "alice");
        assert_eq!(username("ＡＬＩＣＥ").unwrap(), "alice", "full-width folds by NFKC");
        assert!(username("\u{430}dmin").is_err(), "Cyrillic a is refused");
        assert!(username("").is_err());
        assert!(username(&"a".repeat(33)).is_err());
        assert!(username("a b").is_err());
        assert!(username("a\u{202e}b").is_err());
    }

    #[test]
    fn status_texts_are_bounded_and_clean() {
        assert_eq!(status_text("  lunch  ", 10).unwrap().as_deref(), Some("lunch"));
        assert_eq!(status_text("\u{200b}\u{3164}", 10).unwrap(), None, "invisible only clears");
        assert_eq!(status_text("", 10).unwrap(), None);
        assert!(status_text(&"x".repeat(11), 10).is_err());
        assert!(status_text(&format!("a{}", "\u{0301}".repeat(100)), 10).is_err(), "marks count");
        assert!(status_text("a\u{202e}b", 10).is_err());
        assert!(status_text("a\nb", 10).is_err());
        assert_eq!(status_text("e\u{301}", 10).unwrap().as_deref(), Some("\u{e9}"), "NFC");
    }

    #[test]
    fn bodies_count_characters_not_bytes() {
        assert!(body("  \n\t", 10).is_err());
        assert_eq!(body(&"é".repeat(10), 10).map_err(|e| e.code), Ok(()));
        assert_eq!(body(&"é".repeat(11), 10).unwrap_err().code, code::BODY_TOO_LONG);
        let zalgo = format!("a{}", "\u{0301}".repeat(10_000));
        assert_eq!(body(&zalgo, 4000).unwrap_err().code, code::BODY_TOO_LONG);
        assert!(body("a\0b", 10).is_err());
        assert!(body("<img src=x onerror=alert(1)>", 100).is_ok(), "markup is just text");
        for blank in ["\u{200B}", "\u{3164}\u{3164}", "\u{2800}", " \u{FEFF}\u{200D} ", "\u{202E}"] {
            assert_eq!(body(blank, 10).unwrap_err().code, code::EMPTY_BODY, "{blank:?}");
        }
        assert!(body("a\u{200B}b", 10).is_ok(), "zero-width inside text is fine");
        assert!(body("\u{202E}abc", 10).is_ok(), "bidi in a body is the author's business");
    }

    #[test]
    fn ids_and_keys_are_bounded() {
        assert!(client_msg_id("").is_err());
        assert!(client_msg_id(&"k".repeat(65)).is_err());
        assert!(client_msg_id("k\n").is_err());
        assert!(id(&"x".repeat(129), "room").is_err());
        assert!(room_name("   ", false).is_err());
        assert!(room_name("\u{200B}\u{3164}", false).is_err());
        assert!(room_name("evil\u{202E}txt.exe", false).is_err());
        assert!(room_name("café ☕", false).is_ok());
        assert!(id("user\u{202E}1", "sub").is_err());
        assert!(id("\u{2800}", "sub").is_err());
        assert_eq!(room_name("", true).unwrap(), "");
    }
}
