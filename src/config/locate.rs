//! Finds where in a config file a problem is: the line of a dotted key, and the key of
//! a byte offset serde reported.

use super::problems::Problem;

pub(super) fn toml_problem(text: &str, e: &toml::de::Error) -> Problem {
    let key = e
        .span()
        .and_then(|span| KeyLocator::new(text).key_at(span.start))
        .unwrap_or_default();
    Problem {
        key,
        line: e.span().map(|span| line_of_offset(text, span.start)),
        message: e.message().trim().to_string(),
    }
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Finds the line of a dotted key path (`server.listen`, `callers.0.name`) in the
/// original text, using `toml_edit`'s spans so formatting and comments do not matter.
pub(super) struct KeyLocator<'a> {
    text: &'a str,
    document: Option<toml_edit::Document<&'a str>>,
}

impl<'a> KeyLocator<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        KeyLocator {
            text,
            document: toml_edit::Document::parse(text).ok(),
        }
    }

    pub(super) fn line_of(&self, key_path: &str) -> Option<usize> {
        /// Array-of-tables elements are `Table`s, everything else is reached as an `Item`.
        enum Node<'d> {
            Item(&'d toml_edit::Item),
            Table(&'d toml_edit::Table),
        }
        let document = self.document.as_ref()?;
        let mut node = Node::Item(document.as_item());
        let mut best_span = None;
        for segment in key_path.split('.') {
            if let (Node::Item(toml_edit::Item::ArrayOfTables(array)), Ok(index)) =
                (&node, segment.parse::<usize>())
            {
                let Some(table) = array.get(index) else { break };
                best_span = table.span().or(best_span);
                node = Node::Table(table);
                continue;
            }
            let table_like: Option<&dyn toml_edit::TableLike> = match node {
                Node::Item(item) => item.as_table_like(),
                Node::Table(table) => Some(table),
            };
            let Some((key, value)) = table_like.and_then(|t| t.get_key_value(segment)) else {
                break;
            };
            best_span = key.span().or(value.span()).or(best_span);
            node = Node::Item(value);
        }
        best_span.map(|span| line_of_offset(self.text, span.start))
    }

    /// The dotted path of the innermost key whose value covers `offset` (where serde
    /// reported a type error), so that such errors name their key too.
    fn key_at(&self, offset: usize) -> Option<String> {
        fn search(table: &dyn toml_edit::TableLike, offset: usize, path: &mut Vec<String>) -> bool {
            for (key, item) in table.iter() {
                let covers = item.span().is_some_and(|s| s.contains(&offset));
                path.push(key.to_string());
                match item {
                    toml_edit::Item::ArrayOfTables(array) => {
                        for (index, element) in array.iter().enumerate() {
                            path.push(index.to_string());
                            if search(element, offset, path) {
                                return true;
                            }
                            path.pop();
                        }
                    }
                    _ => {
                        if let Some(inner) = item.as_table_like() {
                            if search(inner, offset, path) {
                                return true;
                            }
                        }
                    }
                }
                if covers && item.as_table_like().is_none() {
                    return true;
                }
                path.pop();
            }
            false
        }
        let document = self.document.as_ref()?;
        let mut path = Vec::new();
        search(document.as_table(), offset, &mut path).then(|| path.join("."))
    }
}
