//! The configuration's two descriptions agree with its schema.
//!
//! The schema is `hubgate::Config`: its keys and defaults are read by serializing
//! `Config::default()` to JSON and flattening the tables to dotted keys (`server.listen`).
//! Its two descriptions are the shipped `config.toml` (every key with its default) and the
//! reference tables of `docs/configuration.md`. The tests check that
//!
//! - (a) every key `config.toml` sets exists in the schema with the same default;
//! - (b) every key in the reference tables exists in the schema with the same default;
//! - (c) every schema key is in both, so nothing is silently undocumented.
//!
//! Arrays of tables (`[[callers]]`, `[[credentials]]`, `[[budgets.owners]]`,
//! `[[budgets.exempt]]`) have no fields in a default config, so their fields come from the
//! commented example of each in `config.toml`: the example (uncommented) is deserialized
//! into a `Config` and serialized back, which names every field of the element, and each
//! field's default is found by deserializing the example without that field (refused:
//! "required"; `null`: "unset"; otherwise the value serde filled in). The reference tables
//! document each array as `[[name]]` plus one row per field, `name[].field`.
//!
//! Reference table rows look like ``| `server.listen` | `"127.0.0.1:8080"` | meaning |``: the
//! default cell starts with a TOML value in backticks, or with the word `required` or
//! `unset`; anything after it is commentary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

/// One documented default.
#[derive(Debug, Clone, PartialEq)]
enum Given {
    /// A TOML value, converted to JSON for comparison with the schema.
    Literal(Value),
    /// A field of an array-of-tables element with no default: it must be given.
    Required,
    /// An optional field whose default is its absence.
    Unset,
    /// Prose instead of a value (only the default exemption list may say so).
    Text(String),
}

/// One row of a reference table in `docs/configuration.md`.
#[derive(Debug)]
struct DocRow {
    key: String,
    default: Given,
    line: usize,
}

/// What `config.toml` says, as text and as values.
struct Shipped {
    text: String,
    /// Every key the file sets (uncommented), flattened to dotted keys.
    set: BTreeMap<String, Value>,
    /// Keys that appear only as commented lines (`# key = ...`) in their section.
    commented: BTreeSet<String>,
    /// Each array of tables' commented example, uncommented: `[[name]]` and its lines.
    examples: BTreeMap<String, Example>,
}

struct Example {
    /// `[[name]]` followed by the example's `field = value` lines.
    lines: Vec<String>,
    /// The comment lines just before the example, and the example itself: where each
    /// field must be shown as `field = ...`.
    neighbourhood: String,
}

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Tables become dotted keys; everything else (arrays included) is a leaf.
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                flatten(&join(prefix, key), value, out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

/// The schema's keys with their defaults.
fn schema() -> BTreeMap<String, Value> {
    let value = serde_json::to_value(hubgate::Config::default()).expect("Config serializes");
    let mut out = BTreeMap::new();
    flatten("", &value, &mut out);
    out
}

/// A TOML value written as text (`"x"`, `10`, `[]`) as JSON.
fn toml_literal(text: &str) -> Result<Value, String> {
    let table: toml::Table =
        toml::from_str(&format!("v = {text}")).map_err(|e| format!("not a TOML value: {e}"))?;
    serde_json::to_value(&table["v"]).map_err(|e| e.to_string())
}

fn shipped() -> Shipped {
    let text = read("config.toml");
    let table: toml::Table = toml::from_str(&text).expect("config.toml is TOML");
    let mut set = BTreeMap::new();
    flatten(
        "",
        &serde_json::to_value(&table).expect("TOML as JSON"),
        &mut set,
    );

    let lines: Vec<&str> = text.lines().collect();
    let mut commented = BTreeSet::new();
    let mut examples = BTreeMap::new();
    let mut section = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim_matches(['[', ']']).to_string();
        } else if let Some(name) = line.strip_prefix("# [[").and_then(|l| l.strip_suffix("]]")) {
            // The example: the header and the `# key = value` lines right after it (the
            // same rule as the test that checks the examples are valid).
            let mut example = vec![line[2..].to_string()];
            let mut end = i + 1;
            while end < lines.len() && lines[end].starts_with("# ") && lines[end].contains(" = ") {
                example.push(lines[end][2..].to_string());
                end += 1;
            }
            let mut start = i;
            while start > 0 && lines[start - 1].starts_with('#') {
                start -= 1;
            }
            examples.insert(
                name.to_string(),
                Example {
                    lines: example,
                    neighbourhood: lines[start..end].join("\n"),
                },
            );
            i = end;
            continue;
        } else if let Some(rest) = line.strip_prefix('#') {
            if let Some((key, _)) = rest.trim_start().split_once('=') {
                let key = key.trim();
                if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    commented.insert(join(&section, key));
                }
            }
        }
        i += 1;
    }
    Shipped {
        text,
        set,
        commented,
        examples,
    }
}

/// The cells of a markdown table row (the outer pipes dropped; `\|` stays inside a cell).
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                cells.last_mut().unwrap().push('|');
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells.into_iter().map(|c| c.trim().to_string()).collect()
}

/// The first backticked span of a cell, if the cell starts with one.
fn code(cell: &str) -> Option<&str> {
    cell.strip_prefix('`')?.split('`').next()
}

fn parse_default(cell: &str) -> Result<Given, String> {
    if let Some(literal) = code(cell) {
        return toml_literal(literal).map(Given::Literal);
    }
    Ok(match cell.split_whitespace().next() {
        Some("required") => Given::Required,
        Some("unset") => Given::Unset,
        _ => Given::Text(cell.to_string()),
    })
}

/// The rows of every table whose header is `| key | default | meaning |`, and the rows of
/// every table whose header is `header`.
fn tables(doc: &str, header: &[&str]) -> Vec<(usize, Vec<String>)> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for (n, line) in doc.lines().enumerate() {
        if !line.trim_start().starts_with('|') {
            in_table = false;
            continue;
        }
        let row = cells(line);
        if row.iter().map(String::as_str).eq(header.iter().copied()) {
            in_table = true;
        } else if in_table && !row.iter().all(|c| c.chars().all(|c| "-: ".contains(c))) {
            rows.push((n + 1, row));
        }
    }
    rows
}

fn doc() -> (String, Vec<DocRow>, Vec<String>) {
    let text = read("docs/configuration.md");
    let mut problems = Vec::new();
    let mut rows = Vec::new();
    for (line, row) in tables(&text, &["key", "default", "meaning"]) {
        let Some(key) = row.first().and_then(|c| code(c)) else {
            problems.push(format!(
                "docs/configuration.md:{line}: the key cell must be a key in backticks"
            ));
            continue;
        };
        match row.get(1).map(|c| parse_default(c)) {
            Some(Ok(default)) => rows.push(DocRow {
                key: key.to_string(),
                default,
                line,
            }),
            Some(Err(e)) => problems.push(format!("docs/configuration.md:{line}: `{key}`: {e}")),
            None => problems.push(format!("docs/configuration.md:{line}: no default cell")),
        }
    }
    assert!(
        rows.len() > 20,
        "docs/configuration.md has reference tables (| key | default | meaning |)"
    );
    (text, rows, problems)
}

/// The JSON of an array element's fields, from `config` serialized.
fn element(config: &hubgate::Config, array: &str) -> Option<serde_json::Map<String, Value>> {
    let mut value = serde_json::to_value(config).ok()?;
    for part in array.split('.') {
        value = value.get(part)?.clone();
    }
    value.get(0)?.as_object().cloned()
}

/// The fields of one array of tables with their defaults, from its `config.toml` example.
fn element_fields(array: &str, example: &Example) -> Result<BTreeMap<String, Given>, String> {
    let text = example.lines.join("\n");
    let config: hubgate::Config = toml::from_str(&text)
        .map_err(|e| format!("the config.toml example of [[{array}]] does not parse: {e}"))?;
    let fields = element(&config, array)
        .ok_or_else(|| format!("the config.toml example of [[{array}]] has no element"))?;
    let mut out = BTreeMap::new();
    for field in fields.keys() {
        let without: Vec<&str> = example
            .lines
            .iter()
            .map(String::as_str)
            .filter(|l| l.split('=').next().map(str::trim) != Some(field.as_str()))
            .collect();
        let default = match toml::from_str::<hubgate::Config>(&without.join("\n")) {
            Err(_) => Given::Required,
            Ok(config) => match element(&config, array).and_then(|e| e.get(field).cloned()) {
                Some(Value::Null) | None => Given::Unset,
                Some(value) => Given::Literal(value),
            },
        };
        out.insert(field.clone(), default);
    }
    Ok(out)
}

/// Whether `text` shows `field = ...` (the name as a whole word, then `=`).
fn shows_assignment(text: &str, field: &str) -> bool {
    text.match_indices(field).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + field.len()..].trim_start_matches(' ');
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && after.starts_with('=')
    })
}

fn arrays(schema: &BTreeMap<String, Value>) -> BTreeSet<String> {
    schema
        .iter()
        .filter(|(_, v)| v.is_array())
        .map(|(k, _)| k.clone())
        .collect()
}

fn assert_none(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

#[test]
fn every_key_config_toml_sets_is_in_the_schema_with_its_default() {
    let schema = schema();
    let shipped = shipped();
    let mut problems = Vec::new();
    for (key, value) in &shipped.set {
        match schema.get(key) {
            None => problems.push(format!("config.toml sets `{key}`, which the schema lacks")),
            Some(default) if default != value => problems.push(format!(
                "config.toml: `{key}` = {value}, but its default is {default}"
            )),
            Some(_) => {}
        }
    }
    for (array, example) in &shipped.examples {
        if !schema.get(array).is_some_and(Value::is_array) {
            problems.push(format!(
                "config.toml shows [[{array}]], which is not an array in the schema"
            ));
            continue;
        }
        match element_fields(array, example) {
            Err(e) => problems.push(e),
            Ok(fields) => {
                for line in &example.lines[1..] {
                    let field = line.split('=').next().unwrap_or_default().trim();
                    if !fields.contains_key(field) {
                        problems.push(format!(
                            "config.toml's [[{array}]] example sets `{field}`, which the schema lacks"
                        ));
                    }
                }
            }
        }
    }
    assert_none("config.toml disagrees with the schema", problems);
}

#[test]
fn every_documented_key_is_in_the_schema_with_its_default() {
    let schema = schema();
    let shipped = shipped();
    let (_, rows, mut problems) = doc();
    let mut seen = BTreeSet::new();
    for row in &rows {
        let at = format!("docs/configuration.md:{}: `{}`", row.line, row.key);
        if !seen.insert(row.key.clone()) {
            problems.push(format!("{at} is documented twice"));
        }
        if let Some(array) = row
            .key
            .strip_prefix("[[")
            .and_then(|k| k.strip_suffix("]]"))
        {
            match (schema.get(array), &row.default) {
                (Some(Value::Array(_)), Given::Literal(v)) if Some(v) == schema.get(array) => {}
                // A non-empty default list is documented as a list of its own (checked by
                // the exemption test below), not as one TOML value in a cell.
                (Some(Value::Array(d)), Given::Text(_)) if !d.is_empty() => {}
                (Some(Value::Array(d)), other) => problems.push(format!(
                    "{at}: default {other:?}, but the schema's is {}",
                    Value::Array(d.clone())
                )),
                _ => problems.push(format!("{at}: not an array of tables in the schema")),
            }
        } else if let Some((array, field)) = row.key.split_once("[].") {
            let Some(example) = shipped.examples.get(array) else {
                problems.push(format!("{at}: config.toml shows no [[{array}]] example"));
                continue;
            };
            match element_fields(array, example) {
                Err(e) => problems.push(e),
                Ok(fields) => match fields.get(field) {
                    None => problems.push(format!("{at}: [[{array}]] has no field `{field}`")),
                    Some(default) if *default != row.default => problems.push(format!(
                        "{at}: documented default {:?}, but the schema's is {default:?}",
                        row.default
                    )),
                    Some(_) => {}
                },
            }
        } else {
            match (schema.get(&row.key), &row.default) {
                (None, _) => problems.push(format!("{at}: not a key of the schema")),
                (Some(v), Given::Literal(d)) if v == d => {}
                (Some(Value::Null), Given::Unset) => {}
                (Some(v), d) => {
                    problems.push(format!("{at}: documented default {d:?}, but it is {v}"))
                }
            }
        }
    }
    assert_none("docs/configuration.md disagrees with the schema", problems);
}

#[test]
fn every_schema_key_is_documented_in_config_toml_and_the_reference() {
    let schema = schema();
    let shipped = shipped();
    let (_, rows, mut problems) = doc();
    let documented: BTreeSet<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let arrays = arrays(&schema);
    for (key, default) in &schema {
        // A list of values (documented as a plain row) is checked like any key; only a
        // list of tables needs a `[[…]]` row and example.
        if arrays.contains(key) && !documented.contains(key.as_str()) {
            if !documented.contains(format!("[[{key}]]").as_str()) {
                problems.push(format!("docs/configuration.md lacks a row for `[[{key}]]`"));
            }
            if shipped.set.contains_key(key) {
                continue;
            }
            let Some(example) = shipped.examples.get(key) else {
                problems.push(format!("config.toml shows no commented [[{key}]] example"));
                continue;
            };
            match element_fields(key, example) {
                Err(e) => problems.push(e),
                Ok(fields) => {
                    for field in fields.keys() {
                        if !documented.contains(format!("{key}[].{field}").as_str()) {
                            problems.push(format!(
                                "docs/configuration.md lacks a row for `{key}[].{field}`"
                            ));
                        }
                        if !shows_assignment(&example.neighbourhood, field) {
                            problems.push(format!(
                                "config.toml's [[{key}]] example never shows `{field} = ...`"
                            ));
                        }
                    }
                }
            }
            continue;
        }
        if !documented.contains(key.as_str()) {
            problems.push(format!("docs/configuration.md lacks a row for `{key}`"));
        }
        // A key whose default is "nothing" (an empty string or no value) may be shown as a
        // commented example instead, e.g. `# redis_url = "redis://127.0.0.1:6379"`.
        let nothing = default.is_null() || default.as_str() == Some("");
        let shown_as_example = nothing && shipped.commented.contains(key);
        if !shipped.set.contains_key(key) && !shown_as_example {
            problems.push(format!("config.toml does not list `{key}`"));
        }
    }
    assert!(
        shipped.text.contains("[server]"),
        "config.toml is the shipped configuration"
    );
    assert_none("keys of the schema left undocumented", problems);
}

/// `[[budgets.exempt]]` defaults to HubSpot's exemption list. `config.toml` can only
/// summarise it in prose (a commented list would read as a replacement list), so the exact
/// comparison is with the list in `docs/configuration.md`: every rule's method, path and
/// `daily`, in order.
#[test]
fn the_documented_default_exemptions_are_the_schemas() {
    let (text, _, _) = doc();
    let schema = schema();
    let mut problems = Vec::new();
    let expected: Vec<(Option<String>, String, bool)> = schema["budgets.exempt"]
        .as_array()
        .expect("budgets.exempt is a list")
        .iter()
        .map(|rule| {
            (
                rule["method"].as_str().map(str::to_string),
                rule["path"].as_str().unwrap_or_default().to_string(),
                rule["daily"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    let mut documented = Vec::new();
    for (line, row) in tables(&text, &["method", "path", "daily"]) {
        let [method, path, daily] = &row[..] else {
            problems.push(format!(
                "docs/configuration.md:{line}: three cells expected"
            ));
            continue;
        };
        let method = (method != "any").then(|| method.trim_matches('`').to_string());
        let daily = match daily.as_str() {
            "yes" => true,
            "no" => false,
            other => {
                problems.push(format!(
                    "docs/configuration.md:{line}: daily is `yes` or `no`, not `{other}`"
                ));
                continue;
            }
        };
        documented.push((method, path.trim_matches('`').to_string(), daily));
    }
    for i in 0..documented.len().max(expected.len()) {
        let (doc, schema) = (documented.get(i), expected.get(i));
        if doc != schema {
            problems.push(format!(
                "rule {i} of the default exemptions: docs/configuration.md has {doc:?}, the schema {schema:?}"
            ));
        }
    }
    assert_none("default exemptions", problems);
}
