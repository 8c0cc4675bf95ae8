//! The layering of `src/`, read from the source: every `crate::` and `super::` path (in `use`
//! lines, grouped or not, and inline), resolved to the module it names, must point to the
//! importing module's own layer or one below it, and the modules of `src/` (at the granularity
//! of `data::tcp`, `telemetry::metrics`, `control::provider::kube`) must import one another
//! without a circle. The layers, bottom to top, are in [`LAYERS`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module prefixes by layer, bottom first; a module belongs to the layer of its longest
/// matching prefix.
const LAYERS: &[(&str, &[&str])] = &[
    ("vocabulary and syscalls", &["names", "sys"]),
    ("telemetry", &["telemetry"]),
    ("control", &["control"]),
    ("data", &["data"]),
    ("sources", &["control::provider"]),
    ("gateway", &["gateway"]),
    ("ops and status", &["ops", "status", "cli"]),
    ("process", &["process", "demo"]),
];

fn layer_of(module: &[String]) -> usize {
    let path = module.join("::");
    let mut best = (0, None);
    for (rank, (_, prefixes)) in LAYERS.iter().enumerate() {
        for prefix in *prefixes {
            let hit = path == *prefix || path.starts_with(&format!("{prefix}::"));
            if hit && prefix.len() >= best.0 {
                best = (prefix.len(), Some(rank));
            }
        }
    }
    best.1
        .unwrap_or_else(|| panic!("module {path} is in no layer: add it to LAYERS"))
}

/// The unit that circles are looked for between: `data::tcp`, `control::provider::kube`.
fn unit_of(module: &[String]) -> String {
    let depth = if module.starts_with(&["control".to_owned(), "provider".to_owned()]) {
        3
    } else {
        2
    };
    module[..module.len().min(depth)].join("::")
}

/// `src/data/health/mod.rs` → `data::health`; `src/lib.rs` → the crate root (empty).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The source without comments and string literals (so a path in a doc line or a message
/// is not an import).
fn code_only(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            // The character literal '"' is no string.
            '\'' if chars.peek() == Some(&'"') => {
                chars.next();
                out.push_str("'\"");
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Expands a `use` tree (`crate::data::{tcp::X, health::{A, B}}`) into its paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.to_owned()];
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
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| expand(&format!("{prefix}{}", p.trim())))
        .collect()
}

/// Every module path that `code` names with `crate::` or `super::`, resolved from `module`.
fn imports(code: &str, module: &[String]) -> BTreeSet<Vec<String>> {
    let mut paths = Vec::new();
    // `use` statements, grouped trees included.
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(end) = rest.find(';') else { break };
        let tree: String = rest[..end].split_whitespace().collect();
        if tree.starts_with("crate::") || tree.starts_with("super::") {
            paths.extend(expand(&tree));
        }
    }
    // Inline paths.
    for (at, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let path: String = code[at..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        // `crate::data::{…}` is a grouped `use`, read above.
        if !path.ends_with("::") {
            paths.push(path);
        }
    }
    let mut out = BTreeSet::new();
    for path in paths {
        let mut segments = path.split("::").filter(|s| !s.is_empty());
        let mut resolved: Vec<String> = match segments.next() {
            Some("crate") => Vec::new(),
            Some("super") => {
                let mut base = module.to_vec();
                base.pop();
                base
            }
            _ => continue,
        };
        for segment in segments {
            match segment {
                "super" => {
                    resolved.pop();
                }
                "self" | "*" => {}
                // Modules are lower case; the first item (type, function, constant) ends the
                // module path.
                s if s.chars().next().is_some_and(|c| c.is_ascii_lowercase()) => {
                    resolved.push(s.to_owned())
                }
                _ => break,
            }
        }
        if !resolved.is_empty() {
            out.insert(resolved);
        }
    }
    out
}

/// The known modules of `src/`, so that a trailing function name (`crate::data::tcp::reset`)
/// is cut back to its module.
fn known_module(known: &BTreeSet<Vec<String>>, path: &[String]) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| known.contains(p))
}

/// Every circle in `edges` (a unit that reaches itself), once each, as `a → b → a`.
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut circles = BTreeMap::new();
    for start in edges.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    let mut circle = path.clone();
                    circle.push(start.clone());
                    // One name per circle, whichever unit it was found from.
                    let mut key = circle[..circle.len() - 1].to_vec();
                    key.sort();
                    circles.entry(key).or_insert_with(|| circle.join(" → "));
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    circles.into_values().collect()
}

#[test]
fn every_import_points_to_its_own_layer_or_below_and_no_modules_import_in_a_circle() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    crate::support::rust_files(&src, &mut files);
    files.retain(|f| f.file_name().is_some_and(|n| n != "main.rs"));
    files.sort();
    let known: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();

    let mut upward = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        if module.is_empty() {
            continue; // the crate root declares the modules
        }
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        let from = layer_of(&module);
        for target in imports(&code, &module) {
            let Some(target) = known_module(&known, &target) else {
                continue; // an item of the crate root, or a module declared inline
            };
            if target.is_empty() {
                continue;
            }
            let to = layer_of(&target);
            if to > from {
                upward.push(format!(
                    "{} ({}) imports {} ({})",
                    file.strip_prefix(&src).unwrap().display(),
                    LAYERS[from].0,
                    target.join("::"),
                    LAYERS[to].0
                ));
            }
            let (a, b) = (unit_of(&module), unit_of(&target));
            if a != b && !b.is_empty() {
                edges.entry(a).or_default().insert(b);
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports from a lower layer to a higher one:\n  {}",
        upward.join("\n  ")
    );

    let circles = circles(&edges);
    assert!(
        circles.is_empty(),
        "modules that import each other:\n  {}",
        circles.join("\n  ")
    );
    let imports: usize = edges.values().map(BTreeSet::len).sum();
    println!(
        "{} files, {} modules, {imports} imports between modules: none upward, no circle",
        files.len(),
        edges.len()
    );
}

#[test]
fn the_reader_resolves_grouped_super_and_inline_paths() {
    let m = |s: &str| s.split("::").map(str::to_owned).collect::<Vec<_>>();
    let code = code_only(
        "use crate::data::{tcp::X, health::{A, checker::B}};\n\
         use super::forward;\n\
         // use crate::ops::admin; (a comment)\n\
         let s = \"crate::process::run\";\n\
         let t = crate::telemetry::metrics::Metrics::new();\n",
    );
    let found = imports(&code, &m("data::tcp"));
    let expected: BTreeSet<Vec<String>> = [
        m("data::tcp"),
        m("data::health"),
        m("data::health::checker"),
        m("data::forward"),
        m("telemetry::metrics"),
    ]
    .into();
    assert_eq!(found, expected);
    // `super` is the parent module, from a `mod.rs` (data::udp) as from a file (data::tcp).
    let found = imports(
        "use super::limits::X; use super::super::names::Y;",
        &m("data::udp"),
    );
    assert_eq!(found, [m("data::limits"), m("names")].into());
    assert_eq!(layer_of(&m("control::provider::kube")), 4);
    assert_eq!(layer_of(&m("control::table")), 2);
    assert_eq!(
        unit_of(&m("control::provider::kube::watch")),
        "control::provider::kube"
    );
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("data::tcp", &["data::limits", "telemetry::metrics"][..]),
        ("data::limits", &["data::tcp"][..]),
        ("telemetry::metrics", &[][..]),
    ]
    .into_iter()
    .map(|(a, bs)| (a.to_owned(), bs.iter().map(|b| b.to_string()).collect()))
    .collect();
    assert_eq!(circles(&edges), ["data::limits → data::tcp → data::limits"]);
}
