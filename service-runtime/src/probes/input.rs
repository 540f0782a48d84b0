//! What the probe endpoint takes from a request (feature `http`): a query value,
//! percent-decoded, and the short escaped prefix of it that an error body may echo.

/// At most this many characters of a request are echoed in an error body.
pub(super) const ECHO_LIMIT: usize = 64;

/// The first [`ECHO_LIMIT`] characters of `input`, every character other than printable
/// ASCII (and `<`, `>`, `&`, `\`) escaped as `\u{..}`, and `…` when there was more: an
/// error body names what it did not find without carrying a client's bytes (CR/LF, NUL,
/// HTML) back out.
pub(super) fn echo(input: &str) -> String {
    let mut out = String::with_capacity(input.len().min(ECHO_LIMIT) + 3);
    for (i, c) in input.chars().enumerate() {
        if i == ECHO_LIMIT {
            out.push('…');
            break;
        }
        match c {
            '<' | '>' | '&' | '\\' => out.extend(c.escape_unicode()),
            ' '..='~' => out.push(c),
            _ => out.extend(c.escape_unicode()),
        }
    }
    out
}

/// The value of `key` in a query string, percent-decoded.
pub(super) fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

/// `%XX` (two hex digits, nothing else: no sign) as its byte, `+` as a space; any other
/// `%` stays as it is.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push((high << 4) | low);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|value| value as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_found_and_decoded() {
        assert_eq!(
            query_value(Some("service=market_feed"), "service").as_deref(),
            Some("market_feed")
        );
        assert_eq!(
            query_value(Some("a=1&service=a%20b"), "service").as_deref(),
            Some("a b")
        );
        assert_eq!(
            query_value(Some("service=%zz%"), "service").as_deref(),
            Some("%zz%")
        );
        assert_eq!(query_value(Some("other=1"), "service"), None);
        assert_eq!(query_value(None, "service"), None);
    }

    #[test]
    fn a_sign_is_not_a_hex_digit() {
        assert_eq!(percent_decode("%+1"), "% 1");
        assert_eq!(percent_decode("%-1x"), "%-1x");
        assert_eq!(percent_decode("%2B%2b"), "++");
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[test]
    fn echoes_are_short_and_escaped() {
        assert_eq!(echo("market_feed"), "market_feed");
        assert_eq!(
            echo("a\r\nb\0<script>é"),
            "a\\u{d}\\u{a}b\\u{0}\\u{3c}script\\u{3e}\\u{e9}"
        );
        let long = echo(&"x".repeat(60 * 1024));
        assert_eq!(long, format!("{}…", "x".repeat(ECHO_LIMIT)));
        // The longest echo: every character escaped.
        assert!(echo(&"\u{10ffff}".repeat(1000)).len() <= ECHO_LIMIT * 10 + 3);
    }
}
