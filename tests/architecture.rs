//! The folder tree is the architecture: this test reads `src/` and fails
//! when a module imports from a layer above its own, or when modules
//! import each other in a cycle.
//!
//! Rule (from `src/lib.rs`): `pipeline ← store, telemetry ← kafka, registry ← config
//! ← admin ← service ← offline ← main`. A folder may use its own modules
//! and those of the layers before it; folders that share a rank (`store`
//! and `telemetry`, `kafka` and `registry`) do not use each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first; folders on one line share a rank.
const LAYERS: &[&[&str]] = &[
    &["pipeline"],
    &["store", "telemetry"],
    &["kafka", "registry"],
    &["config"],
    &["admin"],
    &["service"],
    &["offline"],
];

fn rank(folder: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&folder))
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file: `src/kafka/source.rs` → `kafka::source`,
/// `src/kafka/mod.rs` → `kafka`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without comments (doc links are not imports).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules a file names through `crate::…` paths, resolved to the
/// longest path that is a module of the crate.
fn imports(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code = code(text);
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let path: Vec<&str> = code[i + "crate::".len()..]
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .next()
            .unwrap()
            .split("::")
            .filter(|s| !s.is_empty())
            .collect();
        let found = (1..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|m| modules.contains(m));
        if let Some(m) = found {
            out.insert(m);
        }
    }
    out
}

/// Module → the modules it imports, for the whole of `src/` except the
/// binary and the crate root (which only declare the folders).
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let files: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|f| (module_of(src, &f), f))
        .filter(|(m, _)| m != "main" && m != "lib")
        .collect();
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    files
        .iter()
        .map(|(m, f)| {
            let text = std::fs::read_to_string(f).unwrap();
            let mut uses = imports(&text, &modules);
            uses.remove(m);
            (m.clone(), uses)
        })
        .collect()
}

/// Imports against the layer order, as "from → to" lines.
fn upward(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let folder = |m: &str| m.split("::").next().unwrap().to_string();
    let mut bad = Vec::new();
    for (from, tos) in graph {
        let f = folder(from);
        let rf = rank(&f).unwrap_or_else(|| panic!("src/{f} is in no layer of the rule"));
        for to in tos {
            let t = folder(to);
            let rt = rank(&t).unwrap_or_else(|| panic!("src/{t} is in no layer of the rule"));
            if t != f && rt >= rf {
                bad.push(format!("{from} → {to} ({f} may not use {t})"));
            }
        }
    }
    bad
}

/// One cycle of imports, if there is one (depth-first search).
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            let mut c = stack[i..].to_vec();
            c.push(m.to_string());
            return Some(c);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_string());
        for to in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(to, graph, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut done, &mut Vec::new()))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn modules_import_only_from_lower_layers() {
    let bad = upward(&graph(&src()));
    assert!(
        bad.is_empty(),
        "imports against the layer rule:\n{}",
        bad.join("\n")
    );
}

#[test]
fn modules_do_not_import_each_other_in_a_cycle() {
    if let Some(c) = cycle(&graph(&src())) {
        panic!("import cycle: {}", c.join(" → "));
    }
}

#[test]
fn the_pure_core_uses_no_io_crates() {
    let mut files = Vec::new();
    rust_files(&src().join("pipeline"), &mut files);
    for f in files {
        let text = code(&std::fs::read_to_string(&f).unwrap());
        for krate in [
            "tokio",
            "rdkafka",
            "sled",
            "fjall",
            "prometheus",
            "axum",
            "tracing",
        ] {
            assert!(
                !text.contains(&format!("{krate}::")),
                "{} uses {krate}",
                f.display()
            );
        }
    }
}

#[test]
fn only_the_kafka_folder_uses_rdkafka() {
    let src = src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        if rel.starts_with("kafka") {
            continue;
        }
        let text = code(&std::fs::read_to_string(&f).unwrap());
        assert!(
            !text.contains("rdkafka::"),
            "src/{} uses rdkafka: Kafka clients belong in src/kafka/",
            rel.display()
        );
    }
}

/// The checker itself, on small trees written to a temporary directory:
/// an upward import and a cycle are both found, and a comment is no import.
#[test]
fn the_checker_finds_an_upward_import_and_a_cycle() {
    let tree = |files: &[(&str, &str)]| {
        let dir = tempfile::tempdir().unwrap();
        for (p, text) in files {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        graph(dir.path())
    };
    let a_uses_b = ("pipeline/a.rs", "use crate::pipeline::b::B;\n");
    let store = (
        "store/mod.rs",
        "// use crate::kafka::X; in a comment is no import\n",
    );
    let kafka = ("kafka/mod.rs", "use crate::pipeline::a::A;\n");
    let g = tree(&[
        ("pipeline/mod.rs", "pub mod a;\npub mod b;\n"),
        a_uses_b,
        ("pipeline/b.rs", "use crate::pipeline::a::A; // and back\n"),
        kafka,
        store,
    ]);
    assert!(upward(&g).is_empty(), "{:?}", upward(&g));
    assert!(cycle(&g).is_some());
    let g = tree(&[
        (
            "pipeline/mod.rs",
            "pub mod a;\npub mod b;\nuse crate::kafka::Client;\n",
        ),
        a_uses_b,
        ("pipeline/b.rs", "pub struct B;\n"),
        kafka,
        store,
    ]);
    assert!(cycle(&g).is_none(), "{:?}", cycle(&g));
    assert_eq!(
        upward(&g),
        vec!["pipeline → kafka (pipeline may not use kafka)".to_string()]
    );
}
