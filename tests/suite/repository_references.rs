//! Everything in this repository cites only files in this repository: whoever picks the code up
//! has a clone of it and nothing else, so a comment, test, unit, package file or doc that points
//! at a document outside it (or at an issue number) points at nothing. And what it cites inside
//! the repository exists: every `docs/NAME.md` is a file, and every section it names is a
//! heading of that file. Fails naming `file:line` for every broken citation.
//!
//! The citation forms checked (a citation may wrap onto the next comment line):
//!
//! - `docs/NAME.md §3`, `docs/NAME.md §2–§4`, `docs/NAME.md (§2, §6)`: a heading numbered
//!   `3.` (or `8.1`) in that file;
//! - `docs/NAME.md (Title)`, `docs/NAME.md, "Title"`, `docs/NAME.md "Title"`: a heading whose
//!   title is, or begins with, `Title` (its number left aside);
//! - `§3 "Title"`: both;
//! - a bare `§3` cites the `docs/` file named last before it in the same file, or, in a
//!   document under `docs/`, that document itself.

use std::fs;
use std::path::{Path, PathBuf};

/// Substrings that cite something outside the repository. Built from pieces so that this file
/// does not match them itself.
fn forbidden() -> Vec<String> {
    vec![
        concat!("..", "/shared").to_owned(),
        concat!("shared", "/spec").to_owned(),
        concat!("shared", "/reference").to_owned(),
        concat!("shared", "/seeds").to_owned(),
        concat!("agent", ".md").to_owned(),
        concat!("serial-link", ".md").to_owned(),
        concat!("paywall-api", ".md").to_owned(),
        concat!("reference", " §").to_owned(),
    ]
}

/// `issue` followed by a space and a digit: an issue number.
fn cites_issue_number(line: &str) -> bool {
    let needle = concat!("issue", " ");
    line.match_indices(needle).any(|(at, _)| {
        line[at + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            // Build output and the fuzzers' generated corpora are not written by anyone.
            if name == "target" || name == "corpus" || name == "artifacts" || name == ".git" {
                continue;
            }
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every file that may cite something: sources, tests, units, packaging, documents.
fn repository_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [
        "src",
        "tests",
        "systemd",
        "packaging",
        "docs",
        "cross",
        "fuzz",
        "benches",
        "tools",
    ] {
        walk(&root.join(dir), &mut files);
    }
    for file in [".ci/run", "README.md", "Cargo.toml"] {
        files.push(root.join(file));
    }
    assert!(
        files.iter().any(|f| f.ends_with("src/main.rs")),
        "the walk found no sources under {}",
        root.display()
    );
    files
}

fn shown(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string()
}

#[test]
fn nothing_cites_a_document_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = repository_files(root);
    let patterns = forbidden();
    let mut found = Vec::new();
    for file in &files {
        // Binary files (fuzz seeds, images) hold no citations.
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        let shown = shown(root, file);
        for (number, line) in text.lines().enumerate() {
            if patterns.iter().any(|p| line.contains(p.as_str())) || cites_issue_number(line) {
                found.push(format!("{shown}:{}: {}", number + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "cite the docs/ file in this repository instead (e.g. docs/operations.md (Operator \
         commands), docs/serial-protocol.md §3):\n{}",
        found.join("\n")
    );
}

/// The headings of a Markdown document (outside code blocks): their number (`3`, `8.1`), if
/// any, and their title without it.
fn headings(text: &str) -> Vec<(Option<String>, String)> {
    let mut in_code = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        if in_code {
            continue;
        }
        let title = heading.trim_start_matches('#').trim();
        let number_len = title
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(title.len());
        let number = title[..number_len].trim_end_matches('.');
        if number.is_empty() || !title[..number_len].starts_with(|c: char| c.is_ascii_digit()) {
            found.push((None, title.to_owned()));
        } else {
            found.push((
                Some(number.to_owned()),
                title[number_len..].trim().to_owned(),
            ));
        }
    }
    found
}

/// A comment line without its leading marker (`//!`, `///`, `//`, `#`, `*`), for joining a
/// citation that wraps.
fn continuation(line: &str) -> &str {
    let line = line.trim_start();
    for marker in ["//!", "///", "//", "#", "*"] {
        if let Some(rest) = line.strip_prefix(marker) {
            return rest.trim_start();
        }
    }
    line
}

/// The section numbers at the start of `text` (`§2`, `§2–§4`, `§2/§4`, `§1, §4`), and how many
/// bytes they take.
fn section_numbers(text: &str) -> (Vec<String>, usize) {
    let mut numbers = Vec::new();
    let mut at = 0;
    while let Some(rest) = text[at..].strip_prefix('§') {
        let len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = rest[..len].trim_end_matches('.');
        if number.is_empty() {
            break;
        }
        numbers.push(number.to_owned());
        at += '§'.len_utf8() + len;
        let next = &text[at..];
        let separator = ["–§", "-§", "/§", ", §", " and §"]
            .iter()
            .find(|s| next.starts_with(*s));
        match separator {
            Some(s) => at += s.len() - '§'.len_utf8(),
            None => break,
        }
    }
    (numbers, at)
}

/// A title quoted at the start of `text` (after `, ` or a space): `"Title"`.
fn quoted_title(text: &str) -> Option<&str> {
    let text = text.strip_prefix(',').unwrap_or(text);
    let rest = text.strip_prefix(' ')?.strip_prefix('"')?;
    rest.find('"').map(|end| &rest[..end])
}

struct Citation {
    document: String,
    numbers: Vec<String>,
    titles: Vec<String>,
}

/// The section citations that start in `line` (`next` is the line after it, for wraps).
fn citations(line: &str, next: &str, mut last_document: Option<String>) -> Vec<Citation> {
    let joined = format!("{line} {}", continuation(next));
    let mut found = Vec::new();
    let mut at = 0;
    while at < line.len() {
        let rest = &joined[at..];
        if let Some(path) = rest.strip_prefix("docs/") {
            let name_len = path
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .unwrap_or(path.len());
            if path[name_len..].starts_with(".md") {
                let document = format!("docs/{}.md", &path[..name_len]);
                let mut after = &path[name_len + 3..];
                after = after.strip_prefix('`').unwrap_or(after);
                // Section numbers read here are not read again as bare ones.
                let mut consumed = rest.len() - after.len();
                let mut citation = Citation {
                    document: document.clone(),
                    numbers: Vec::new(),
                    titles: Vec::new(),
                };
                if let Some(sections) = after
                    .strip_prefix(" (")
                    .or_else(|| after.strip_prefix(' '))
                    .filter(|s| s.starts_with('§'))
                {
                    let (numbers, len) = section_numbers(sections);
                    consumed = rest.len() - sections.len() + len;
                    citation.numbers = numbers;
                    if let Some(title) = quoted_title(&sections[len..]) {
                        citation.titles.push(title.to_owned());
                    }
                } else if let Some(inner) = after.strip_prefix(" (") {
                    let inner = inner.strip_prefix('"').unwrap_or(inner);
                    if let Some(end) = inner.find(['"', ')']) {
                        citation.titles.push(inner[..end].to_owned());
                    }
                } else if let Some(title) = quoted_title(after) {
                    citation.titles.push(title.to_owned());
                }
                found.push(citation);
                last_document = Some(document);
                at += consumed;
                continue;
            }
        }
        if rest.starts_with('§') {
            let (numbers, len) = section_numbers(rest);
            if !numbers.is_empty() {
                let titles = quoted_title(&rest[len..])
                    .map(|t| vec![t.to_owned()])
                    .unwrap_or_default();
                found.push(Citation {
                    document: last_document.clone().unwrap_or_default(),
                    numbers,
                    titles,
                });
                at += len;
                continue;
            }
        }
        at += rest.chars().next().map_or(1, char::len_utf8);
    }
    found
}

#[test]
fn every_cited_document_and_section_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let this_file = root.join("tests/suite/repository_references.rs");
    let mut broken = Vec::new();
    for file in repository_files(root) {
        if file == this_file {
            continue;
        }
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let shown = shown(root, &file);
        let in_docs = shown.starts_with("docs/") && shown.ends_with(".md");
        let lines: Vec<&str> = text.lines().collect();
        let mut last_document = None;
        for (number, line) in lines.iter().enumerate() {
            let next = lines.get(number + 1).copied().unwrap_or("");
            let context = if in_docs {
                Some(shown.clone())
            } else {
                last_document.clone()
            };
            for citation in citations(line, next, context) {
                if !in_docs {
                    last_document = Some(citation.document.clone());
                }
                let mut problem = |what: String| {
                    broken.push(format!("{shown}:{}: {what}: {}", number + 1, line.trim()));
                };
                if citation.document.is_empty() {
                    problem("a section number with no docs/ file named before it".into());
                    continue;
                }
                let Ok(document) = fs::read_to_string(root.join(&citation.document)) else {
                    problem(format!("{} does not exist", citation.document));
                    continue;
                };
                let headings = headings(&document);
                for wanted in &citation.numbers {
                    if !headings.iter().any(|(n, _)| n.as_ref() == Some(wanted)) {
                        problem(format!("{} has no section §{wanted}", citation.document));
                    }
                }
                for wanted in &citation.titles {
                    let matches = |title: &str| {
                        title == wanted
                            || title
                                .strip_prefix(wanted.as_str())
                                .is_some_and(|rest| rest.starts_with(' '))
                    };
                    if !headings.iter().any(|(_, title)| matches(title)) {
                        problem(format!(
                            "{} has no section titled {wanted:?}",
                            citation.document
                        ));
                    }
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "{} broken citations (the forms are listed at the top of \
         tests/suite/repository_references.rs):\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn the_citation_forms_are_recognised() {
    let found = citations(
        "see docs/serial-protocol.md §2–§4, then (§3 \"Errors\").",
        "",
        None,
    );
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].document, "docs/serial-protocol.md");
    assert_eq!(found[0].numbers, ["2", "4"]);
    assert_eq!(found[1].document, "docs/serial-protocol.md");
    assert_eq!(found[1].numbers, ["3"]);
    assert_eq!(found[1].titles, ["Errors"]);

    let found = citations("(docs/operations.md (Operator commands)).", "", None);
    assert_eq!(found[0].titles, ["Operator commands"]);
    let found = citations("docs/fuzzing.md (§2, §6)", "", None);
    assert_eq!(found[0].numbers, ["2", "6"]);
    let found = citations(
        "(docs/deployment.md, \"Tested under",
        "//! systemd\").",
        None,
    );
    assert_eq!(found[0].titles, ["Tested under systemd"]);
    let found = citations("the link timers (§2/§4)", "", None);
    assert_eq!(
        found[0].document, "",
        "a bare § with no document named before it"
    );

    assert_eq!(
        headings("# Title\n## 3. Messages\n### 8.1 Sale\n```sh\n# not a heading\n```\n### Errors"),
        [
            (None, "Title".to_owned()),
            (Some("3".to_owned()), "Messages".to_owned()),
            (Some("8.1".to_owned()), "Sale".to_owned()),
            (None, "Errors".to_owned()),
        ]
    );
}
