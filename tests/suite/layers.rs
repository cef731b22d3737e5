//! The crate's layering as a build fact (docs/architecture.md, "Layers"): every `crate::` and
//! `super::` path in `src/` outside unit-test modules is resolved to the module file it names,
//! and the test fails when a module uses one of a higher layer, or when two files use each other
//! (directly or round a longer loop). The layer table is read from docs/architecture.md itself,
//! so the document and the rule cannot drift apart.
//!
//! What it reads is source text, not the compiler's name resolution: `use` trees (braces
//! expanded), paths written inline (`crate::paywall::PaywallClient::new`), `super::` relative to
//! the file, and the `pub use` re-exports of a module's own file (a name a parent re-exports from
//! a child resolves to the child). A parent using its own children is not an edge: a module
//! holds its files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Layer of each top-level module, from the table of docs/architecture.md, "Layers".
fn layers() -> BTreeMap<String, usize> {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let section = doc
        .split("\n## Layers\n")
        .nth(1)
        .expect("docs/architecture.md has a section \"Layers\"");
    let section = section.split("\n## ").next().unwrap();
    let mut layers = BTreeMap::new();
    for (layer, row) in section
        .lines()
        .filter(|line| line.starts_with("| ") && !line.starts_with("| layer"))
        .enumerate()
    {
        let modules = row.split('|').nth(2).unwrap_or_default();
        for name in modules.split('`').skip(1).step_by(2) {
            layers.insert(name.to_owned(), layer);
        }
    }
    assert!(
        layers.len() > 10,
        "the layer table of docs/architecture.md was not read: {layers:?}"
    );
    layers
}

/// A source file and the module path it defines (`["agent", "core"]`; the crate root is `[]`).
struct Source {
    file: String,
    module: Vec<String>,
    text: String,
}

fn sources() -> Vec<Source> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = root().join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files.sort();
    let test_only = test_only_files(&files);
    files
        .into_iter()
        .filter(|path| !path.ends_with("main.rs") && !test_only.contains(path))
        .map(|path| {
            let relative = path.strip_prefix(&src).unwrap().with_extension("");
            let mut module: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            Source {
                file: format!("src/{}", path.strip_prefix(&src).unwrap().display()),
                module,
                text: std::fs::read_to_string(&path).unwrap(),
            }
        })
        .collect()
}

/// The files of unit tests that are modules of their own (`#[cfg(test)] mod name;`, or a
/// `cfg(all(test, ...))`): like a test module inside a file, they may use any layer.
fn test_only_files(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut test_only = BTreeSet::new();
    for path in files {
        let text = std::fs::read_to_string(path).unwrap();
        let dir = match path.file_name().and_then(|n| n.to_str()) {
            Some("mod.rs" | "lib.rs") => path.parent().unwrap().to_path_buf(),
            _ => path.with_extension(""),
        };
        let mut previous = "";
        for line in text.lines().map(str::trim) {
            if previous.starts_with("#[cfg(") && previous.contains("test") {
                if let Some(name) = line
                    .strip_prefix("mod ")
                    .and_then(|rest| rest.strip_suffix(';'))
                {
                    test_only.insert(dir.join(format!("{name}.rs")));
                    test_only.insert(dir.join(name).join("mod.rs"));
                }
            }
            previous = line;
        }
    }
    test_only
}

/// The code of a file without comments and without its unit-test modules (a `#[cfg(...test...)]`
/// attribute followed by `mod`: tests may use any layer).
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(") && trimmed.contains("test") {
            if let Some(next) = lines.peek() {
                let next = next.trim_start();
                if next.starts_with("mod ") && next.ends_with(';') {
                    // A test module in a file of its own: `test_only_files` skips that file.
                    lines.next();
                    continue;
                }
                if next.starts_with("mod ") || next.starts_with("pub(crate) mod ") {
                    // A test module runs to the end of its indentation; those of this crate are
                    // the files' last items.
                    let indent = line.len() - trimmed.len();
                    lines.next();
                    for rest in lines.by_ref() {
                        if rest.len() - rest.trim_start().len() == indent && rest.trim() == "}" {
                            break;
                        }
                    }
                    continue;
                }
            }
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let line = match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Expands a `use` tree (`crate::a::{b, c::{d, e}}`) into its paths.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree
        .replace(" as ", "@")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let Some(open) = tree.find('{') else {
        return vec![tree.split('@').next().unwrap().to_owned()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|part| !part.is_empty())
        .flat_map(expand)
        .map(|path| match path.as_str() {
            "self" => prefix.trim_end_matches("::").to_owned(),
            _ => format!("{prefix}{path}"),
        })
        .collect()
}

/// Every `crate::`/`super::` path the code names: the `use` trees, and the paths written inline.
fn paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    // The `use` statements first, each blanked out once read so the inline scan below does not
    // see a tree's prefix (`crate::a` of `crate::a::{b, c}`) as a path of its own.
    let mut code = code.to_owned();
    let mut from = 0;
    while let Some(at) = code[from..].find("use ").map(|at| from + at) {
        from = at + 4;
        if code[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let Some(end) = code[at..].find(';').map(|end| at + end) else {
            break;
        };
        let tree = code[at + 4..end].trim().to_owned();
        if tree.starts_with("crate::") || tree.starts_with("super::") {
            found.extend(expand(&tree));
        }
        code.replace_range(at..end, &" ".repeat(end - at));
    }
    let code = code.as_str();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start) {
            let at = from + at;
            from = at + start.len();
            if code[..at]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            {
                continue;
            }
            let path: String = code[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            found.push(path.trim_end_matches(':').to_owned());
        }
    }
    found
}

/// The modules of the crate (by path) and, for each, the names its own file re-exports from a
/// child (`pub use child::Name`).
struct Tree {
    modules: BTreeSet<Vec<String>>,
    reexports: BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>,
}

impl Tree {
    fn new(sources: &[Source]) -> Self {
        let modules = sources.iter().map(|s| s.module.clone()).collect();
        let mut reexports = BTreeMap::new();
        for source in sources {
            let code = code(&source.text);
            let mut names = BTreeMap::new();
            for line in code.split(';') {
                let line = line.trim();
                let Some(tree) = ["pub use ", "pub(crate) use ", "pub(super) use "]
                    .iter()
                    .find_map(|p| line.strip_prefix(p))
                else {
                    continue;
                };
                for path in expand(tree) {
                    let mut segments: Vec<String> = path.split("::").map(str::to_owned).collect();
                    if segments.first().is_some_and(|s| s == "self") {
                        segments.remove(0);
                    }
                    if segments.len() < 2 || segments[0] == "crate" || segments[0] == "super" {
                        continue;
                    }
                    let name = segments.pop().unwrap();
                    let mut child = source.module.clone();
                    child.extend(segments);
                    names.insert(name, child);
                }
            }
            reexports.insert(source.module.clone(), names);
        }
        Tree { modules, reexports }
    }

    /// The module file a path names, from the module `from`.
    fn resolve(&self, from: &[String], path: &str) -> Option<Vec<String>> {
        let mut segments = path.split("::").peekable();
        let mut module: Vec<String> = match segments.next()? {
            "crate" => Vec::new(),
            "super" => {
                let mut m = from.to_vec();
                m.pop()?;
                while segments.peek() == Some(&"super") {
                    segments.next();
                    m.pop()?;
                }
                m
            }
            _ => return None,
        };
        for segment in segments {
            let mut deeper = module.clone();
            deeper.push(segment.to_owned());
            if self.modules.contains(&deeper) {
                module = deeper;
                continue;
            }
            if let Some(child) = self.reexports.get(&module).and_then(|r| r.get(segment)) {
                module = child.clone();
            }
            break;
        }
        Some(module)
    }
}

/// Every edge `file module -> used module` of the crate, with the path that makes it.
fn edges() -> Vec<(Vec<String>, Vec<String>, String, String)> {
    let sources = sources();
    let tree = Tree::new(&sources);
    let mut edges = Vec::new();
    for source in &sources {
        for path in paths(&code(&source.text)) {
            let Some(target) = tree.resolve(&source.module, &path) else {
                continue;
            };
            // A module holds its files: a parent using its children is not a dependency.
            if target.starts_with(&source.module) {
                continue;
            }
            edges.push((source.module.clone(), target, path, source.file.clone()));
        }
    }
    edges
}

#[test]
fn no_module_uses_a_higher_layer() {
    let layers = layers();
    let mut problems = BTreeSet::new();
    for (from, to, path, file) in edges() {
        let (Some(a), Some(b)) = (from.first(), to.first()) else {
            continue;
        };
        if a == b {
            continue;
        }
        let layer = |name: &String| {
            layers.get(name).copied().unwrap_or_else(|| {
                panic!("module `{name}` is not in the layer table of docs/architecture.md")
            })
        };
        if layer(a) <= layer(b) {
            problems.insert(format!(
                "{file}: `{path}`: `{a}` (layer {}) uses `{b}` (layer {})",
                layer(a),
                layer(b)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "imports against the layer table of the architecture document:\n{}",
        problems.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn no_two_files_use_each_other() {
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut why = BTreeMap::new();
    for (from, to, path, file) in edges() {
        why.entry((from.clone(), to.clone()))
            .or_insert(format!("{file}: `{path}`"));
        graph.entry(from).or_default().insert(to);
    }
    // Depth-first search for a back edge; report each cycle once, with the paths that make it.
    let mut cycles = BTreeSet::new();
    let mut done = BTreeSet::new();
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((node, trail)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if let Some(at) = trail.iter().position(|n| n == next) {
                    let mut cycle: Vec<_> = trail[at..].to_vec();
                    let first = cycle.iter().enumerate().min_by_key(|(_, m)| *m).unwrap().0;
                    cycle.rotate_left(first);
                    let steps: Vec<String> = cycle
                        .iter()
                        .zip(cycle.iter().cycle().skip(1))
                        .map(|(a, b)| why[&(a.clone(), b.clone())].clone())
                        .collect();
                    cycles.insert(steps.join("\n    then "));
                } else if !done.contains(next) {
                    let mut longer = trail.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
        done.insert(start.clone());
    }
    assert!(
        cycles.is_empty(),
        "modules that use each other, against the architecture document:\n  {}",
        cycles.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}

#[test]
fn the_reader_sees_what_it_must() {
    // The reader itself, on text whose edges are known: a use tree with braces and a rename,
    // an inline path, `super` from a file, a name a parent re-exports from a child, a comment
    // and a unit-test module that must be skipped.
    let text = "use crate::a::{b::{C, D as E}, f};\n\
                // use crate::z::Nothing;\n\
                fn g() { crate::h::i::J::new(); }\n\
                #[cfg(test)]\n\
                mod tests {\n    use crate::y::Y;\n}\n";
    let mut found = paths(&code(text));
    found.sort();
    found.dedup();
    assert_eq!(
        found,
        [
            "crate::a::b::C",
            "crate::a::b::D",
            "crate::a::f",
            "crate::h::i::J::new"
        ]
    );
    let sources = vec![
        Source {
            file: "src/k/mod.rs".into(),
            module: vec!["k".into()],
            text: "pub use l::M;\n".into(),
        },
        Source {
            file: "src/k/l.rs".into(),
            module: vec!["k".into(), "l".into()],
            text: String::new(),
        },
        Source {
            file: "src/k/n.rs".into(),
            module: vec!["k".into(), "n".into()],
            text: String::new(),
        },
    ];
    let tree = Tree::new(&sources);
    assert_eq!(
        tree.resolve(&["k".into(), "n".into()], "super::M"),
        Some(vec!["k".into(), "l".into()])
    );
    assert_eq!(
        tree.resolve(&["k".into(), "n".into()], "crate::k::l::Q"),
        Some(vec!["k".into(), "l".into()])
    );
    assert_eq!(
        tree.resolve(&["k".into(), "n".into()], "super::Other"),
        Some(vec!["k".into()])
    );
}
