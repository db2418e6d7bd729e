//! The layering the README promises, checked: every `crate::` path in `src/` names its own
//! top-level module or one listed below it in the README's "Code layout" block, so imports
//! only ever point down and there is no circle. Modules on one line of that block are
//! peers and may not import each other (sources and sinks).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers of the README's code layout, top first: each line's module names.
fn readme_layers() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split("## Code layout").nth(1).expect("README has a `## Code layout` section");
    let block = section.split("```").nth(1).expect("the section has a code block");
    let mut layers = Vec::new();
    for line in block.lines() {
        // Layer lines are indented by exactly two spaces; deeper lines continue the one above.
        let Some(rest) = line.strip_prefix("  ") else { continue };
        if rest.starts_with(' ') {
            continue;
        }
        let names = rest.split("  ").next().unwrap_or("");
        let modules: Vec<String> = names
            .split(',')
            .map(str::trim)
            .filter_map(|n| n.strip_suffix('/').or_else(|| n.strip_suffix(".rs")))
            .filter(|n| *n != "main" && *n != "lib")
            .map(str::to_string)
            .collect();
        if !modules.is_empty() {
            layers.push(modules);
        }
    }
    layers
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

/// The top-level modules a file's code names as `crate::NAME` (comments left out).
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let preceded_by_ident = rest[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !preceded_by_ident && !name.is_empty() {
                found.push((number + 1, name));
            }
            rest = after;
        }
        // `use crate::{a, b}` names several at once.
        if let Some(group) = code.split("crate::{").nth(1) {
            for name in group.split(['}', ',']).map(|n| n.trim().split("::").next().unwrap_or("")) {
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    found.push((number + 1, name.to_string()));
                }
            }
        }
    }
    found
}

#[test]
fn every_import_points_down_the_readme_layers() {
    let layers = readme_layers();
    assert!(layers.len() >= 8, "the README's code layout lists too few layers: {layers:?}");
    // Rank 0 is the floor.
    let rank: BTreeMap<String, usize> = layers
        .iter()
        .rev()
        .enumerate()
        .flat_map(|(rank, modules)| modules.iter().map(move |m| (m.clone(), rank)))
        .collect();

    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.strip_suffix(".rs").unwrap_or(&first).to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&own) = rank.get(&module) else {
            problems.push(format!("src/{}: module `{module}` is not in the README's code layout", relative.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, used) in crate_paths(&text) {
            if used == module {
                continue;
            }
            match rank.get(&used) {
                Some(&theirs) if theirs < own => {}
                Some(&theirs) => problems.push(format!(
                    "src/{}:{line}: `{module}` imports `{used}`, which is {} it in the README's layers",
                    relative.display(),
                    if theirs == own { "a peer of" } else { "above" }
                )),
                None => problems.push(format!(
                    "src/{}:{line}: `crate::{used}` is not a module in the README's layers",
                    relative.display()
                )),
            }
        }
    }
    assert!(problems.is_empty(), "imports that do not point down:\n{}", problems.join("\n"));
}

#[test]
fn the_scanner_sees_what_it_must() {
    let found = crate_paths("use crate::event::Event; // crate::cli\nuse crate::{buffer::X, stats};\nfoo_crate::x");
    let names: Vec<&str> = found.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["event", "buffer", "stats"]);
}
