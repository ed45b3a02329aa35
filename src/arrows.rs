//! Checks, mechanically, the two rules of the layout (docs/ARCHITECTURE.md):
//! the monitoring core imports nothing impure or from above it, and no
//! module imports a module that imports it back. Reads the library's own
//! source (non-test code: a file up to its `#[cfg(test)]` block).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of `text` that ships: up to its test module, without comments.
fn shipped(text: &str) -> String {
    let end = text.find("\n#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module path of a library file: `src/server/http/api.rs` is
/// `server::http::api`, `src/server/mod.rs` is `server`.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The library's files (those `lib.rs` declares, and their children), with
/// their module paths; the binary's (`main.rs`, its modules) are not.
fn library() -> Vec<(Vec<String>, String)> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let top: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    let mut all = Vec::new();
    files(&src(), &mut all);
    all.into_iter()
        .map(|f| (module_of(&f), f))
        .filter(|(m, _)| m.first().is_some_and(|t| top.contains(t)))
        .map(|(m, f)| (m, shipped(&std::fs::read_to_string(f).expect("read"))))
        .collect()
}

/// The first segments of every path named after `prefix` (`crate::`,
/// `super::`) in `code`, groups (`super::{a, b::C}`) included.
fn named_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        if code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        {
            continue; // `foo_crate::`, `a::super::`
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item, mut items) = (0, String::new(), Vec::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    _ if depth == 0 => item.push(c),
                    _ => {}
                }
            }
            items.push(item);
            for item in items {
                let path: Vec<String> = item.trim().split("::").map(ident).collect();
                if path.first().is_some_and(|p| !p.is_empty()) {
                    out.push(path);
                }
            }
        } else {
            let path: Vec<String> = rest
                .split("::")
                .map(ident)
                .take_while(|s| !s.is_empty())
                .collect();
            if !path.is_empty() {
                out.push(path);
            }
        }
    }
    out
}

/// The graph of `use`s between modules: each file's module, and the
/// modules its shipped code names through `crate::` or `super::`.
fn edges() -> Vec<(Vec<String>, Vec<String>)> {
    let mut out = Vec::new();
    for (module, code) in library() {
        let is_dir = src().join(module.join("/")).is_dir();
        // `super::` of `a/b.rs` is `a`; of `a/b/mod.rs` (module `a::b`) too.
        let parent: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
        for path in named_after(&code, "crate::") {
            out.push((module.clone(), path));
        }
        for path in named_after(&code, "super::") {
            let mut full = parent.clone();
            full.extend(path);
            out.push((module.clone(), full));
        }
        // `use child::Item;` in a `mod.rs`: a path relative to itself.
        if is_dir {
            for line in code.lines() {
                let Some(used) = line.trim().strip_prefix("use ") else {
                    continue;
                };
                let first: String = used
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let child = src().join(module.join("/")).join(&first);
                if child.is_dir() || child.with_extension("rs").is_file() {
                    let mut full = module.clone();
                    full.push(first);
                    out.push((module.clone(), full));
                }
            }
        }
    }
    out
}

/// The node of a module path at `depth` segments below `under` (a path
/// outside `under` is `None`). A name that is not a module file (an item
/// of the parent, such as `server::Server`) stays at the parent.
fn node(path: &[String], under: &[String], depth: usize) -> Option<String> {
    if !path.starts_with(under) {
        return None;
    }
    let mut node: Vec<String> = under.to_vec();
    for segment in path.iter().skip(under.len()).take(depth) {
        let candidate = src().join(node.join("/")).join(segment);
        if !(candidate.is_dir() || candidate.with_extension("rs").is_file()) {
            break;
        }
        node.push(segment.clone());
    }
    Some(node.join("::"))
}

/// A cycle in the graph of modules one level below `under`, if any.
fn cycle(under: &[String]) -> Option<Vec<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in edges() {
        let depth = under.len() + 1;
        let (Some(a), Some(b)) = (node(&from, under, depth), node(&to, under, depth)) else {
            continue;
        };
        // A module's own files, and a parent naming its children, are one
        // piece: only arrows between siblings (or a child and its parent's
        // items) count.
        if a != b {
            graph.entry(a).or_default().insert(b);
        }
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if !done.insert(node.to_string()) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for start in graph.keys() {
        if let Some(found) = visit(start, &graph, &mut Vec::new(), &mut done) {
            return Some(found);
        }
    }
    None
}

#[test]
fn the_core_imports_nothing_impure_and_nothing_from_above_it() {
    // Crates and types the pure core must not name, and clock reads.
    const FORBIDDEN: [&str; 11] = [
        "tokio",
        "tracing",
        "prometheus_client",
        "redb",
        "axum",
        "reqwest",
        "UdpSocket",
        "TcpListener",
        "TcpStream",
        "Instant::now",
        "SystemTime::now",
    ];
    // Modules above (or beside) it.
    const ABOVE: [&str; 7] = [
        "server", "config", "store", "tools", "trace", "client", "status",
    ];
    let mut found = Vec::new();
    for (module, code) in library() {
        if module.first().is_none_or(|m| m != "monitor")
            || module.last().is_some_and(|m| m == "testing")
        {
            continue;
        }
        for word in FORBIDDEN {
            if code.contains(word) {
                found.push(format!("{}: {word}", module.join("::")));
            }
        }
        for (from, to) in edges().into_iter().filter(|(f, _)| *f == module) {
            if to.first().is_some_and(|t| ABOVE.contains(&t.as_str())) {
                found.push(format!("{} uses {}", from.join("::"), to.join("::")));
            }
        }
    }
    assert!(found.is_empty(), "the core must stay pure: {found:#?}");
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    assert_eq!(cycle(&[]), None, "between the top-level modules");
    assert_eq!(cycle(&["server".to_string()]), None, "inside server");
    assert_eq!(
        cycle(&["server".to_string(), "sinks".to_string()]),
        None,
        "inside server::sinks"
    );
}

#[test]
fn the_checker_sees_paths_and_groups() {
    let code = "use super::{Error, invalid};\nuse crate::monitor::{self, Event};\nlet x = crate::server::fleet::Fleet::new();";
    assert_eq!(
        named_after(code, "super::"),
        [vec!["Error".to_string()], vec!["invalid".to_string()]]
    );
    let crates = named_after(code, "crate::");
    assert_eq!(crates[0], ["monitor"]);
    assert_eq!(crates[1], ["server", "fleet", "Fleet", "new"]);
    let top = |p: &[&str]| {
        let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
        node(&p, &[], 1)
    };
    assert_eq!(
        top(&["server", "fleet", "Fleet"]).as_deref(),
        Some("server")
    );
    let p: Vec<String> = ["server", "fleet", "Fleet"].map(String::from).to_vec();
    assert_eq!(
        node(&p, &["server".to_string()], 2).as_deref(),
        Some("server::fleet")
    );
    assert_eq!(
        node(
            &["server".to_string(), "Server".to_string()],
            &["server".to_string()],
            2
        )
        .as_deref(),
        Some("server"),
        "an item of server/mod.rs is the parent node"
    );
}
