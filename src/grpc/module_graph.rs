//! Keeps the modules of `src/grpc` free of import circles: reads their sources, draws an
//! edge for every `super::x` / `crate::grpc::x` path (in `use` lines and inline, comments
//! and string literals left out) and fails on a cycle, naming it.

use std::collections::{BTreeMap, BTreeSet};

/// A module's name: the file stem, `mod` for `mod.rs`.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// `source` without comments and without the contents of string and char literals, so
/// only code is searched for paths.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let at = |k: usize| chars.get(k).copied();
    let mut i = 0;
    while i < chars.len() {
        match (chars[i], at(i + 1)) {
            ('/', Some('/')) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && at(i + 1) == Some('*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && at(i + 1) == Some('/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                out.push(' ');
            }
            ('r', Some('#' | '"')) if i == 0 || !is_ident(chars[i - 1]) => {
                // A raw string: r"..." or r#"..."#, any number of hashes.
                let mut j = i + 1;
                let mut hashes = 0;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) != Some(&'"') {
                    out.push(chars[i]);
                    i += 1;
                    continue;
                }
                j += 1;
                let closes = |j: usize| {
                    chars.get(j) == Some(&'"')
                        && (1..=hashes).all(|h| chars.get(j + h) == Some(&'#'))
                };
                while j < chars.len() && !closes(j) {
                    j += 1;
                }
                i = j + 1 + hashes;
                out.push_str("\"\"");
            }
            ('"', _) => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            // A char literal ('x', '\n', '"'); a lifetime ('a) is kept.
            ('\'', Some('\\')) => {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            }
            ('\'', Some(_)) if at(i + 2) == Some('\'') => {
                i += 3;
                out.push_str("' '");
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The first segment of each item of the path that starts at `tail` (just after a
/// `super::` or `crate::grpc::`): `x` of `x::y`, each first segment of `{x::y, z}`.
fn first_segments(tail: &str) -> Vec<&str> {
    let tail = tail.trim_start();
    let Some(group) = tail.strip_prefix('{') else {
        let end = tail.find(|c: char| !is_ident(c)).unwrap_or(tail.len());
        return vec![&tail[..end]];
    };
    let mut segments = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (k, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                segments.extend(first_segments(&group[start..k]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                segments.extend(first_segments(&group[start..k]));
                start = k + 1;
            }
            _ => {}
        }
    }
    segments.retain(|s| !s.is_empty());
    segments
}

/// The import graph of the modules `files` (name, source): a child module depends on a
/// sibling it names through `super::` or `crate::grpc::`, and on `mod` for anything
/// else it takes from there; `mod` depends on a child it names in a path.
fn import_graph(files: &[(String, String)]) -> Graph {
    let names: BTreeSet<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let mut graph = Graph::new();
    for (name, source) in files {
        let code = code_only(source);
        let edges = graph.entry(name.clone()).or_default();
        if name == "mod" {
            for child in names.iter().filter(|n| **n != "mod") {
                let named = code.match_indices(&format!("{child}::")).any(|(at, _)| {
                    let before = code[..at].chars().next_back();
                    before.is_none_or(|c| !is_ident(c) && c != ':')
                        || code[..at].ends_with("self::")
                        || code[..at].ends_with("crate::grpc::")
                });
                if named {
                    edges.insert((*child).to_owned());
                }
            }
            continue;
        }
        for prefix in ["super::", "crate::grpc::"] {
            for (at, _) in code.match_indices(prefix) {
                if prefix == "super::" && code[..at].ends_with("::") {
                    continue;
                }
                for segment in first_segments(&code[at + prefix.len()..]) {
                    let to = if names.contains(segment) {
                        segment
                    } else {
                        "mod"
                    };
                    if to != name {
                        edges.insert(to.to_owned());
                    }
                }
            }
        }
    }
    graph
}

/// A cycle of `graph` as the path around it (first module repeated at the end).
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

fn files(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
        .collect()
}

#[test]
fn the_grpc_modules_import_each_other_without_circles() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/grpc");
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.map(|e| e.path()).unwrap_or_default();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().unwrap_or_default().to_string_lossy();
            let source = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            sources.push((name.into_owned(), source));
        }
    }
    let graph = import_graph(&sources);
    assert!(graph.len() > 10, "read only {:?}", graph.keys());
    // The edges the layering rests on are seen (so an empty graph cannot pass).
    assert!(graph["analytics"].contains("service_levels"), "{graph:?}");
    assert!(graph["communication"].contains("timeline"), "{graph:?}");
    assert!(graph["validate"].contains("convert"), "{graph:?}");
    if let Some(cycle) = cycle(&graph) {
        panic!(
            "src/grpc has an import circle: {}; move what both sides share into a \
             module both depend on",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn a_circle_through_use_lines_groups_or_inline_paths_is_found() {
    let circle = files(&[
        ("mod", "pub mod analytics;\npub mod service_levels;\n"),
        (
            "analytics",
            "use crate::grpc::{paging, service_levels::attention_response};",
        ),
        (
            "service_levels",
            "fn f() { super::analytics::finish(v, None) }",
        ),
        ("paging", "use super::AppState;"),
    ]);
    let graph = import_graph(&circle);
    assert_eq!(
        cycle(&graph),
        Some(vec![
            "analytics".to_owned(),
            "service_levels".to_owned(),
            "analytics".to_owned()
        ])
    );
    assert!(graph["paging"].contains("mod"), "{graph:?}");
    let through_mod = files(&[
        ("mod", "pub mod a;\npub fn f() { a::g() }"),
        ("a", "use super::{self, f};"),
    ]);
    assert!(cycle(&import_graph(&through_mod)).is_some());
}

#[test]
fn comments_strings_and_test_imports_draw_no_edge() {
    let quiet = files(&[
        ("mod", "pub mod a;\npub mod b;\n// a::g() is only mentioned\n"),
        (
            "a",
            "//! See [`super::b`].\n/* super::b::x */\nuse super::*;\nfn f() -> char { '\"' }",
        ),
        (
            "b",
            "use crate::grpc::a::f;\nconst S: &str = \"super::b\";\nconst R: &str = r#\"crate::grpc::a\"#;",
        ),
    ]);
    let graph = import_graph(&quiet);
    assert!(cycle(&graph).is_none(), "{graph:?}");
    assert!(graph["mod"].is_empty(), "{graph:?}");
    assert_eq!(graph["a"].iter().collect::<Vec<_>>(), ["mod"], "{graph:?}");
}
