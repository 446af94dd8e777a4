//! How a request path is read before anything judges it: the segments classification and
//! redaction compare (escaped unreserved characters decoded, empty segments skipped, as
//! RFC 3986 servers read them alike), and the paths refused because servers disagree on
//! what they name (a `.` or `..` segment in any disguise, a `;`).
//!
//! A path is forwarded byte for byte or refused, never rewritten: what HubSpot receives is
//! what the caller sent, and what hubgate classified is what HubSpot reads.

use std::borrow::Cow;

/// A path hubgate refuses, because the budget it spends depends on how the server reads it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmbiguousPath {
    #[error("the request path has a '.' or '..' segment (perhaps percent-encoded, or hidden behind ';' or an encoded slash), which servers resolve differently, so hubgate cannot tell which budget it spends; send the path it stands for, {instead}")]
    DotSegment { instead: String },
    #[error("the request path contains ';', which some servers read as the start of path parameters and others as data, so hubgate cannot tell which budget it spends; percent-encode it as %3B, or leave it out")]
    Semicolon,
}

/// The path's segments as classification compares them: unreserved characters decoded,
/// empty segments (a leading or trailing `/`, a `//`) skipped.
pub fn segments(path: &str) -> impl Iterator<Item = Cow<'_, str>> {
    path.split('/')
        .filter(|segment| !segment.is_empty())
        .map(decode_unreserved)
}

/// Refuses a path whose meaning depends on the server reading it; see [`AmbiguousPath`].
pub fn check(path: &str) -> Result<(), AmbiguousPath> {
    if path.contains(';') {
        return Err(AmbiguousPath::Semicolon);
    }
    let is_dot = |piece: &str| piece == "." || piece == "..";
    // Every call passes here; only a path with an escape or a backslash needs decoding.
    let dotted = if path.contains(['%', '\\']) {
        path.split('/')
            .flat_map(|segment| pieces(decode_unreserved(segment)))
            .any(|piece| is_dot(&piece))
    } else {
        path.split('/').any(is_dot)
    };
    if dotted {
        return Err(AmbiguousPath::DotSegment {
            instead: without_dot_segments(path),
        });
    }
    Ok(())
}

/// What a segment may stand for at a server that decodes an escaped slash or backslash
/// before it resolves dot segments.
fn pieces(segment: Cow<'_, str>) -> Vec<String> {
    let mut spelled = segment.into_owned();
    for slash in ["%2F", "%2f", "%5C", "%5c", "\\"] {
        spelled = spelled.replace(slash, "/");
    }
    spelled.split('/').map(str::to_string).collect()
}

/// The path with its dot segments resolved (RFC 3986 §5.2.4), reading every disguise as
/// a separator, for the refusal to name what to send instead.
fn without_dot_segments(path: &str) -> String {
    let mut kept: Vec<String> = Vec::new();
    for piece in path
        .split('/')
        .flat_map(|segment| pieces(decode_unreserved(segment)))
    {
        match piece.as_str() {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            _ => kept.push(piece),
        }
    }
    format!("/{}", kept.join("/"))
}

/// `segment` with each `%XX` that encodes an unreserved character (RFC 3986 §2.3: letters,
/// digits, `-._~`) decoded; other escapes stay as they are.
pub fn decode_unreserved(segment: &str) -> Cow<'_, str> {
    if !segment.contains('%') {
        return Cow::Borrowed(segment);
    }
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| segment.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b));
        match decoded {
            Some(b) => {
                out.push(char::from(b));
                i += 3;
            }
            None => {
                let c = segment[i..].chars().next().unwrap_or_default();
                out.push(c);
                i += c.len_utf8().max(1);
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_decode_unreserved_and_skip_empty_ones() {
        let read: Vec<_> = segments("//crm/v3//objects/%63ontacts/%2Fx%7e/search/").collect();
        assert_eq!(
            read,
            ["crm", "v3", "objects", "contacts", "%2Fx~", "search"]
        );
    }

    #[test]
    fn dot_segments_are_refused_in_every_disguise() {
        let refused = |instead: &str| {
            Err(AmbiguousPath::DotSegment {
                instead: instead.to_string(),
            })
        };
        let contacts = "/crm/v3/objects/contacts";
        for (path, instead) in [
            ("/webhooks-journal/../crm/v3/objects/contacts", contacts),
            ("/webhooks-journal/%2e%2E/crm/v3/objects/contacts", contacts),
            ("/webhooks-journal/..%2Fcrm/v3/objects/contacts", contacts),
            (
                "/webhooks-journal//../../crm/v3/objects/contacts",
                "/crm/v3/objects/contacts",
            ),
            ("/webhooks-journal/./x", "/webhooks-journal/x"),
            ("/webhooks-journal/x%5C..%5Ccrm", "/webhooks-journal/crm"),
            ("/../..", "/"),
        ] {
            assert_eq!(check(path), refused(instead), "{path}");
        }
        assert_eq!(
            check("/webhooks-journal/..;/crm"),
            Err(AmbiguousPath::Semicolon)
        );
    }

    #[test]
    fn ordinary_paths_pass() {
        for path in [
            "/",
            "/crm/v3/objects/contacts/search/",
            "/a//b/c",
            "/files/v3/files/a.b/..x/%2E%2E%2E",
            "/crm/v3/objects/contacts/a%2Fb",
            "/x/%E2%9C%93/%zz/%",
        ] {
            assert_eq!(check(path), Ok(()), "{path}");
        }
    }
}
