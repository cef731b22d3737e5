//! Everything in this repository cites only files in this repository: whoever picks the code up
//! has a clone of it and nothing else, so a comment, test, unit, package file or doc that points
//! at a document outside it (or at an issue number) points at nothing.
//! Fails naming `file:line` for every such citation.

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

#[test]
fn nothing_cites_a_document_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
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

    let patterns = forbidden();
    let mut found = Vec::new();
    for file in &files {
        // Binary files (fuzz seeds, images) hold no citations.
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        let shown = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
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
