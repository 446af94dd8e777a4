//! HubSpot's path vocabulary: object type names and numeric ids, and date-versioned paths
//! (`/crm/objects/2025-09/...`) mapped onto their v3 equivalents.

/// Accepts names, singular names and HubSpot's numeric object type ids.
pub(super) fn object_type(raw: &str) -> String {
    let lower = raw.to_ascii_lowercase();
    match lower.as_str() {
        "0-1" | "contact" => "contacts".into(),
        "0-2" | "company" => "companies".into(),
        "0-3" | "deal" => "deals".into(),
        "0-5" | "ticket" => "tickets".into(),
        "0-7" | "product" => "products".into(),
        "0-8" | "line_item" => "line_items".into(),
        "0-14" | "quote" => "quotes".into(),
        _ => lower,
    }
}

/// The numeric id HubSpot reports for an object type; custom types keep their name.
pub(super) fn type_id_of(ty: &str) -> String {
    match ty {
        "contacts" => "0-1",
        "companies" => "0-2",
        "deals" => "0-3",
        "tickets" => "0-5",
        "products" => "0-7",
        "line_items" => "0-8",
        "quotes" => "0-14",
        other => other,
    }
    .to_string()
}

/// How HubSpot names an object type in messages: `CONTACT` for `contacts`.
pub(super) fn display_name(ty: &str) -> String {
    ty.strip_suffix("ies")
        .map(|stem| format!("{stem}y"))
        .or_else(|| ty.strip_suffix('s').map(str::to_string))
        .unwrap_or_else(|| ty.to_string())
        .to_ascii_uppercase()
}

/// True for `YYYY-MM` and `YYYY-MM-beta`, HubSpot's date-versioned API segments.
pub(super) fn is_date_version(s: &str) -> bool {
    let core = s.strip_suffix("-beta").unwrap_or(s);
    let b = core.as_bytes();
    b.len() == 7
        && b[4] == b'-'
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[5..].iter().all(u8::is_ascii_digit)
}

/// Maps date-versioned object paths onto their v3 equivalents.
pub(crate) fn normalize<'a>(segments: &[&'a str]) -> Vec<&'a str> {
    match segments {
        ["crm", "objects", ver, rest @ ..] if is_date_version(ver) => {
            let mut v = vec!["crm", "v3", "objects"];
            v.extend_from_slice(rest);
            v
        }
        _ => segments.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_versions() {
        assert!(is_date_version("2025-09"));
        assert!(is_date_version("2026-03-beta"));
        assert!(!is_date_version("v3"));
        assert_eq!(
            normalize(&["crm", "objects", "2025-09", "contacts", "search"]),
            vec!["crm", "v3", "objects", "contacts", "search"]
        );
    }
}
