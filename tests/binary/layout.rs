//! The source layout keeps its promises: no import cycles between the files of a crate,
//! no source file over 600 lines, and every module opens with a `//!` line saying what it
//! owns. Read from the source text, so a change that breaks one fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

/// The library crates of the workspace, by the folder their `lib.rs` is in.
const CRATES: [&str; 3] = ["src", "crates/engine/src", "crates/sim/src"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// One crate's files by module path (`["proxy", "identify", "cache"]`), and back.
struct Crate {
    files: BTreeMap<Vec<String>, PathBuf>,
    modules: BTreeSet<Vec<String>>,
    text: BTreeMap<PathBuf, String>,
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut paths = Vec::new();
        rust_files(src, &mut paths);
        let mut files = BTreeMap::new();
        let mut text = BTreeMap::new();
        for path in paths {
            let relative = path.strip_prefix(src).unwrap();
            // The binary's root is a crate of its own.
            if relative == Path::new("main.rs") {
                continue;
            }
            let mut module: Vec<String> = relative
                .iter()
                .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            text.insert(path.clone(), std::fs::read_to_string(&path).unwrap());
            files.insert(module, path);
        }
        let modules = files.keys().cloned().collect();
        Crate {
            files,
            modules,
            text,
        }
    }

    fn module_of(&self, file: &Path) -> Vec<String> {
        self.files
            .iter()
            .find(|(_, f)| f.as_path() == file)
            .map(|(m, _)| m.clone())
            .unwrap()
    }

    /// The file that defines what `path` (absolute module segments, then item names)
    /// names, looking through `pub use` re-exports of a folder's `mod.rs`.
    fn resolve(&self, path: &[String], depth: usize) -> Option<PathBuf> {
        let mut module: Vec<String> = Vec::new();
        let mut rest = path;
        while let Some((first, tail)) = rest.split_first() {
            let mut next = module.clone();
            next.push(first.clone());
            if !self.files.contains_key(&next) {
                break;
            }
            module = next;
            rest = tail;
        }
        let file = self.files.get(&module)?.clone();
        if let (Some(item), true) = (rest.first(), depth < 8) {
            if let Some(target) = self.reexport(&file, &module, item) {
                return self.resolve(&target, depth + 1).or(Some(file));
            }
        }
        Some(file)
    }

    /// Where `file` (module `module`) re-exports `item` from, as an absolute path.
    fn reexport(&self, file: &Path, module: &[String], item: &str) -> Option<Vec<String>> {
        let text = &self.text[file];
        for statement in use_statements(text) {
            if !statement.public {
                continue;
            }
            for path in expand(&statement.path) {
                if path.last().map(String::as_str) == Some(item) {
                    return absolute(&path, module, &self.modules);
                }
            }
        }
        None
    }

    /// Every file `file` imports from, in this crate.
    fn imports(&self, file: &Path) -> BTreeSet<PathBuf> {
        let module = self.module_of(file);
        let code = production_code(&self.text[file]);
        let mut paths: Vec<Vec<String>> = use_statements(&code)
            .into_iter()
            .flat_map(|s| expand(&s.path))
            .collect();
        paths.extend(inline_paths(&without_use_statements(&code)));
        paths
            .iter()
            .filter_map(|p| absolute(p, &module, &self.modules))
            .filter_map(|p| self.resolve(&p, 0))
            .filter(|target| target != file)
            .collect()
    }
}

struct UseStatement {
    public: bool,
    path: String,
}

/// `use …;` statements, whole (braces and line breaks included).
fn use_statements(text: &str) -> Vec<UseStatement> {
    let mut out = Vec::new();
    for (start, _) in text.match_indices("use ") {
        let before = &text[..start];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let prefix = before[line_start..].trim();
        if !matches!(prefix, "" | "pub" | "pub(crate)" | "pub(super)") {
            continue;
        }
        let Some(end) = text[start..].find(';') else {
            continue;
        };
        out.push(UseStatement {
            public: !prefix.is_empty(),
            path: text[start + 4..start + end]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        });
    }
    out
}

/// `a::{b, c::{d, e}}` as `a::b`, `a::c::d`, `a::c::e` (segments; `as` renames dropped).
fn expand(path: &str) -> Vec<Vec<String>> {
    fn go(prefix: &[String], text: &str, out: &mut Vec<Vec<String>>) {
        let text = text.trim();
        if let Some(open) = text.find('{') {
            let head: Vec<String> = text[..open]
                .trim_end_matches("::")
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            let mut base = prefix.to_vec();
            base.extend(head);
            let inner = &text[open + 1..text.rfind('}').unwrap()];
            let mut depth = 0;
            let mut piece = String::new();
            for c in inner.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        go(&base, &piece, out);
                        piece.clear();
                        continue;
                    }
                    _ => {}
                }
                piece.push(c);
            }
            if !piece.trim().is_empty() {
                go(&base, &piece, out);
            }
        } else {
            let name = text.split(" as ").next().unwrap_or(text).trim();
            let mut path = prefix.to_vec();
            // `a::{self, b}` names `a` itself.
            if name != "self" || prefix.is_empty() {
                path.extend(
                    name.split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
            }
            out.push(path);
        }
    }
    let mut out = Vec::new();
    go(&[], path, &mut out);
    out
}

/// `code` with its `use` statements cut out, so only paths written in code remain.
fn without_use_statements(code: &str) -> String {
    code.lines()
        .scan(false, |in_use, line| {
            let trimmed = line.trim_start();
            let starts = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
                .iter()
                .any(|p| trimmed.starts_with(p));
            let keep = !(starts || *in_use);
            *in_use = (starts || *in_use) && !line.contains(';');
            Some(if keep { line } else { "" })
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::…`, `super::…` paths written in code outside `use` statements.
fn inline_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for anchor in ["crate::", "super::"] {
        for (start, _) in code.match_indices(anchor) {
            let boundary = code[..start]
                .chars()
                .last()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
            if !boundary {
                continue;
            }
            let path: String = code[start..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(
                path.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            );
        }
    }
    out
}

/// A path made absolute from module `here`; `None` for other crates' paths. A path
/// starting with a child module of `here` is relative to it (`use child::Item`).
fn absolute(
    path: &[String],
    here: &[String],
    modules: &BTreeSet<Vec<String>>,
) -> Option<Vec<String>> {
    let (first, rest) = path.split_first()?;
    let mut base: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "self" => here.to_vec(),
        "super" => here[..here.len().checked_sub(1)?].to_vec(),
        child => {
            let mut child_module = here.to_vec();
            child_module.push(child.to_string());
            if !modules.contains(&child_module) {
                return None;
            }
            child_module
        }
    };
    let mut rest = rest;
    while rest.first().map(String::as_str) == Some("super") {
        base.pop();
        rest = &rest[1..];
    }
    base.extend(rest.iter().filter(|s| *s != "*").cloned());
    Some(base)
}

/// The code of a file without its comments and without an inline `#[cfg(test)] mod tests`
/// (which by convention closes the file): test modules import their parent, which is no
/// cycle.
fn production_code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(tests) => &text[..tests],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The files on some import cycle (Tarjan's strongly connected components of size > 1).
fn cycles(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct Search<'g> {
        graph: &'g BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'g PathBuf, usize>,
        low: BTreeMap<&'g PathBuf, usize>,
        stack: Vec<&'g PathBuf>,
        on_stack: BTreeSet<&'g PathBuf>,
        found: Vec<Vec<PathBuf>>,
    }
    impl<'g> Search<'g> {
        fn visit(&mut self, node: &'g PathBuf) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            self.on_stack.insert(node);
            for next in self.graph.get(node).into_iter().flatten() {
                let Some((next, _)) = self.graph.get_key_value(next) else {
                    continue;
                };
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[next].min(self.low[node]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(next) {
                    let low = self.index[next].min(self.low[node]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    component.push(top.clone());
                    if top == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut search = Search {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !search.index.contains_key(node) {
            search.visit(node);
        }
    }
    search.found
}

#[test]
fn no_import_cycles_between_the_files_of_any_crate() {
    for src in CRATES {
        let krate = Crate::read(&root().join(src));
        let graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> = krate
            .text
            .keys()
            .map(|file| (file.clone(), krate.imports(file)))
            .collect();
        let found = cycles(&graph);
        assert!(found.is_empty(), "import cycles in {src}: {found:#?}");
    }
}

#[test]
fn the_cycle_check_finds_a_cycle_when_there_is_one() {
    let a = PathBuf::from("a.rs");
    let b = PathBuf::from("b.rs");
    let c = PathBuf::from("c.rs");
    let graph = BTreeMap::from([
        (a.clone(), BTreeSet::from([b.clone()])),
        (b.clone(), BTreeSet::from([c.clone()])),
        (c.clone(), BTreeSet::from([a.clone()])),
    ]);
    assert_eq!(cycles(&graph).len(), 1);
    let paths = expand("super::{body::Body, peer::{self, PeerAddr}}");
    assert!(paths.contains(&vec!["super".into(), "body".into(), "Body".into()]));
    assert!(paths.contains(&vec!["super".into(), "peer".into(), "PeerAddr".into()]));
}

#[test]
fn no_source_file_is_over_600_lines_and_each_says_what_it_owns() {
    let mut files = Vec::new();
    for dir in CRATES.iter().copied().chain([
        "tests",
        "benches",
        "crates/engine/tests",
        "crates/sim/tests",
    ]) {
        rust_files(&root().join(dir), &mut files);
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines = text.lines().count();
        assert!(
            lines <= MAX_LINES,
            "{} has {lines} lines; split it by concern (tests may go to a sibling tests.rs)",
            file.display()
        );
        assert!(
            text.starts_with("//!"),
            "{} does not open with a `//!` line saying what it owns",
            file.display()
        );
    }
}
