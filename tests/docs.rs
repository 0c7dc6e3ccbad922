//! The documentation points at things that exist: in the README, every
//! file of docs/ and every other markdown file of the repository (outside
//! build output), every relative link resolves to a file or folder and
//! every `#anchor` to a heading of its file; every backticked repository
//! path (`src/…`, `tests/…`, `docs/…`, …) exists; and the module map of
//! docs/development.md ("Layout") names every file of `src/` and nothing
//! that is not there; the feature table of docs/model.md is the one the
//! code's feature table makes. Each failure names the markdown file, its
//! line and the link or path at fault.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Folders never searched for markdown: git's own, and build output
/// (`target/` at any depth, which covers `fuzz/target/`).
const SKIPPED_DIRS: &[&str] = &[".git", "target"];

/// Backticked paths that name something absent from the repository on
/// purpose. Empty today: files the service writes at run time are named
/// without a repository prefix (`data/state`), so they are not checked.
const ALLOWED_MISSING: &[&str] = &[];

/// The first segments that make a backticked text a repository path.
const REPO_PREFIXES: &[&str] = &[
    "src/", "tests/", "scripts/", "deploy/", "docs/", "models/", "benches/", "schemas/", "proto/",
    ".ci/",
];

/// Characters that make a backticked path a pattern or a placeholder, not
/// a path to check.
const PLACEHOLDERS: &[char] = &['<', '>', '*', '{', '}', '$', '…'];

fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                if !SKIPPED_DIRS.contains(&name.as_str()) {
                    walk(&p, out);
                }
            } else if name.ends_with(".md") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root(), &mut out);
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root())
        .unwrap_or(p)
        .to_string_lossy()
        .to_string()
}

/// A markdown file with its fenced code blocks blanked out (line numbers
/// kept), so that shell comments and TOML in them are neither headings
/// nor links.
struct Doc {
    /// The text outside fenced code blocks, one entry per line.
    prose: Vec<String>,
}

impl Doc {
    fn read(path: &Path) -> Doc {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut prose = Vec::new();
        let mut fence: Option<String> = None;
        for line in text.lines() {
            let t = line.trim_start();
            let marker: String = t.chars().take_while(|&c| c == '`' || c == '~').collect();
            let is_fence = marker.len() >= 3
                && (marker.chars().all(|c| c == '`') || marker.chars().all(|c| c == '~'));
            match &fence {
                Some(open) => {
                    if is_fence && marker.starts_with(open.as_str()) && t.trim() == marker {
                        fence = None;
                    }
                    prose.push(String::new());
                }
                None if is_fence => {
                    fence = Some(marker);
                    prose.push(String::new());
                }
                None => prose.push(line.to_string()),
            }
        }
        Doc { prose }
    }

    /// Inline code spans (`…`, or ``…`` with longer runs) with the line
    /// they start on, and the prose with those spans blanked.
    fn code_spans(&self) -> (Vec<(usize, String)>, Vec<String>) {
        let text = self.prose.join("\n");
        let chars: Vec<char> = text.chars().collect();
        let mut spans = Vec::new();
        let mut blanked = chars.clone();
        let mut line = 1;
        let mut i = 0;
        while i < chars.len() {
            if chars[i] == '\n' {
                line += 1;
                i += 1;
                continue;
            }
            if chars[i] != '`' {
                i += 1;
                continue;
            }
            let run = chars[i..].iter().take_while(|&&c| c == '`').count();
            // The closing run of the same length, within the paragraph.
            let mut j = i + run;
            let mut close = None;
            while j < chars.len() {
                if chars[j] == '\n' && chars.get(j + 1) == Some(&'\n') {
                    break;
                }
                if chars[j] == '`' {
                    let r = chars[j..].iter().take_while(|&&c| c == '`').count();
                    if r == run {
                        close = Some(j);
                        break;
                    }
                    j += r;
                } else {
                    j += 1;
                }
            }
            match close {
                Some(j) => {
                    let content: String = chars[i + run..j].iter().collect();
                    spans.push((line, content.trim().to_string()));
                    for c in blanked.iter_mut().take(j + run).skip(i) {
                        if *c != '\n' {
                            *c = ' ';
                        }
                    }
                    line += chars[i..j].iter().filter(|&&c| c == '\n').count();
                    i = j + run;
                }
                None => i += run,
            }
        }
        let blanked: String = blanked.into_iter().collect();
        (spans, blanked.lines().map(str::to_string).collect())
    }

    /// `[text](target)`, `![alt](target)` and `[label]: target`, with
    /// their line, outside code.
    fn links(&self) -> Vec<(usize, String)> {
        let (_, lines) = self.code_spans();
        let mut out = Vec::new();
        for (n, line) in lines.iter().enumerate() {
            let mut rest = line.as_str();
            while let Some(at) = rest.find("](") {
                let after = &rest[at + 2..];
                let end = after.find(')').unwrap_or(after.len());
                let target = after[..end].split_whitespace().next().unwrap_or("");
                let target = target.trim_start_matches('<').trim_end_matches('>');
                out.push((n + 1, target.to_string()));
                rest = &after[end..];
            }
            let t = line.trim_start();
            if let (true, Some(close)) = (t.starts_with('['), t.find("]:")) {
                if let Some(target) = t[close + 2..].split_whitespace().next() {
                    out.push((n + 1, target.to_string()));
                }
            }
        }
        out
    }

    /// The anchors GitHub makes of the file's ATX headings.
    fn anchors(&self) -> BTreeSet<String> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut out = BTreeSet::new();
        for line in &self.prose {
            let hashes = line.chars().take_while(|&c| c == '#').count();
            if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
                continue;
            }
            let text = line[hashes..].trim().trim_end_matches('#').trim();
            let base = slug(text);
            let n = seen.entry(base.clone()).or_insert(0);
            out.insert(if *n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            });
            *n += 1;
        }
        out
    }
}

/// GitHub's heading anchor: the heading's text (a link's text only),
/// lowercased, without punctuation other than `-` and `_`, spaces as `-`.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    while let Some(at) = rest.find("](") {
        text.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        rest = &after[after.find(')').map_or(after.len(), |e| e + 1)..];
    }
    text.push_str(rest);
    text.to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn slugs_follow_githubs_rules() {
    assert_eq!(
        slug("Training: `simulate`, `train`, `score`, `backtest`"),
        "training-simulate-train-score-backtest"
    );
    assert_eq!(
        slug("Schema Registry (Avro, protobuf, JSON Schema)"),
        "schema-registry-avro-protobuf-json-schema"
    );
    assert_eq!(slug("state_v4 and co-op"), "state_v4-and-co-op");
}

#[test]
fn the_markdown_files_include_the_manual() {
    let files: Vec<String> = markdown_files().iter().map(|p| rel(p)).collect();
    for f in [
        "README.md",
        "docs/configuration.md",
        "docs/development.md",
        "models/README.md",
    ] {
        assert!(
            files.iter().any(|x| x == f),
            "{f} not found among {files:?}"
        );
    }
    assert!(
        !files
            .iter()
            .any(|f| f.starts_with("target/") || f.contains("/target/")),
        "{files:?}"
    );
}

#[test]
fn relative_links_and_their_anchors_resolve() {
    let mut problems = Vec::new();
    let mut anchors_of: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    let mut checked = 0;
    for path in markdown_files() {
        let doc = Doc::read(&path);
        let dir = path.parent().unwrap();
        for (line, target) in doc.links() {
            let lower = target.to_ascii_lowercase();
            if target.is_empty()
                || lower.starts_with("http://")
                || lower.starts_with("https://")
                || lower.starts_with("mailto:")
            {
                continue;
            }
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved = if file.is_empty() {
                path.clone()
            } else {
                dir.join(file)
            };
            if !resolved.exists() {
                problems.push(format!(
                    "{}:{line}: link `{target}`: {} does not exist",
                    rel(&path),
                    rel(&resolved)
                ));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if resolved.extension().and_then(|e| e.to_str()) != Some("md") {
                continue;
            }
            let key = resolved.canonicalize().unwrap();
            let anchors = anchors_of
                .entry(key)
                .or_insert_with(|| Doc::read(&resolved).anchors());
            if !anchors.contains(anchor) {
                problems.push(format!(
                    "{}:{line}: link `{target}`: {} has no heading with the anchor #{anchor} (it has: {})",
                    rel(&path),
                    rel(&resolved),
                    anchors.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
    assert!(checked > 20, "only {checked} relative links found");
}

/// A backticked text as a repository path to check, if it is one.
fn repository_path(code: &str) -> Option<String> {
    if !REPO_PREFIXES.iter().any(|p| code.starts_with(p))
        || code.contains(PLACEHOLDERS)
        || code.chars().any(char::is_whitespace)
    {
        return None;
    }
    let mut p = code.split('#').next().unwrap();
    // A trailing `:line` (or `:line:column`).
    while let Some((head, tail)) = p.rsplit_once(':') {
        if !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit() || c == '-') {
            p = head;
        } else {
            break;
        }
    }
    Some(p.trim_end_matches(['.', ',', ';', ':', ')']).to_string())
}

#[test]
fn repository_paths_are_read_as_such() {
    assert_eq!(
        repository_path("src/main.rs:12").as_deref(),
        Some("src/main.rs")
    );
    assert_eq!(
        repository_path("docs/runbooks.md#x").as_deref(),
        Some("docs/runbooks.md")
    );
    assert_eq!(repository_path("deploy/k8s/"), Some("deploy/k8s/".into()));
    assert_eq!(repository_path("scripts/soak.sh [SECONDS]"), None);
    assert_eq!(repository_path("schemas/<id>.json"), None);
    assert_eq!(repository_path("data/state"), None);
}

#[test]
fn backticked_repository_paths_exist() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for path in markdown_files() {
        let (spans, _) = Doc::read(&path).code_spans();
        for (line, code) in spans {
            let Some(p) = repository_path(&code) else {
                continue;
            };
            checked += 1;
            if !root().join(&p).exists() && !ALLOWED_MISSING.contains(&p.as_str()) {
                problems.push(format!(
                    "{}:{line}: `{code}`: {p} does not exist in the repository",
                    rel(&path)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
    assert!(checked > 20, "only {checked} repository paths found");
}

/// The module map: the first ``` block after the "## Layout" heading of
/// docs/development.md. Each line starting with `src/` opens the entry of
/// that folder (`src/<dir>/`) or of `src/` itself (`src/main.rs, …`);
/// indented lines continue it; any other line ends it. Returns the
/// entries' names of files (`*.rs`, `*.html`) by folder ("" for `src/`),
/// with the line of the block each is on.
fn module_map() -> BTreeMap<String, Vec<(usize, String)>> {
    let text = std::fs::read_to_string(root().join("docs/development.md")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let layout = lines
        .iter()
        .position(|l| *l == "## Layout")
        .expect("docs/development.md has no \"## Layout\" heading");
    let open = layout
        + lines[layout..]
            .iter()
            .position(|l| l.starts_with("```"))
            .expect("docs/development.md: no ``` block under \"## Layout\"");
    let close = open
        + 1
        + lines[open + 1..]
            .iter()
            .position(|l| l.starts_with("```"))
            .expect("docs/development.md: the module map's block is not closed");
    let mut map: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (i, line) in lines.iter().enumerate().take(close).skip(open + 1) {
        if let Some(rest) = line.strip_prefix("src/") {
            let first = rest.split_whitespace().next().unwrap_or("");
            let dir = match first.strip_suffix('/') {
                Some(d) => d.to_string(),
                None => String::new(),
            };
            map.entry(dir.clone()).or_default();
            current = Some(dir);
        } else if !line.starts_with(' ') {
            current = None;
        }
        if let Some(dir) = &current {
            for w in words(line) {
                let name = w.strip_prefix("src/").unwrap_or(w);
                if name.ends_with(".rs") || name.ends_with(".html") {
                    map.get_mut(dir).unwrap().push((i + 1, name.to_string()));
                }
            }
        }
    }
    map
}

/// Words of a line: runs of characters that can be in a file name.
fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| !(c.is_alphanumeric() || "_.-/".contains(c)))
        .map(|w| w.trim_end_matches('.'))
        .filter(|w| !w.is_empty())
}

/// Every file (`*.rs`, `*.html`) and folder under `src/`, relative to it.
fn source_tree() -> (BTreeSet<String>, BTreeSet<String>) {
    fn walk(dir: &Path, base: &Path, files: &mut BTreeSet<String>, dirs: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let r = p.strip_prefix(base).unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                dirs.insert(r);
                walk(&p, base, files, dirs);
            } else if r.ends_with(".rs") || r.ends_with(".html") {
                files.insert(r);
            }
        }
    }
    let (mut files, mut dirs) = (BTreeSet::new(), BTreeSet::new());
    let src = root().join("src");
    walk(&src, &src, &mut files, &mut dirs);
    (files, dirs)
}

#[test]
fn the_module_map_names_every_source_file_and_no_other() {
    let map = module_map();
    let (files, dirs) = source_tree();
    let mut problems = Vec::new();
    for d in &dirs {
        if !map.contains_key(d) {
            problems.push(format!(
                "docs/development.md module map: the folder src/{d}/ has no entry (a line starting `src/{d}/`)"
            ));
        }
    }
    for d in map.keys().filter(|d| !d.is_empty()) {
        if !dirs.contains(d) {
            problems.push(format!(
                "docs/development.md module map: src/{d}/ does not exist"
            ));
        }
    }
    for f in &files {
        let (dir, name) = match f.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", f.as_str()),
        };
        let shown = if dir.is_empty() {
            "src/".to_string()
        } else {
            format!("src/{dir}/")
        };
        if let Some(names) = map.get(dir) {
            if !names.iter().any(|(_, n)| n == name) {
                problems.push(format!(
                    "docs/development.md module map: src/{f} is not named in the entry of {shown}"
                ));
            }
        }
    }
    for (dir, names) in &map {
        for (line, name) in names {
            let f = if dir.is_empty() {
                name.clone()
            } else {
                format!("{dir}/{name}")
            };
            if !files.contains(&f) {
                problems.push(format!(
                    "docs/development.md module map, line {line} of the file: names src/{f}, which does not exist"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// Where docs/model.md holds the feature table, which
/// `churn_alert::pipeline::feature_defs::markdown` makes from the code's
/// one table of features.
const FEATURE_TABLE: (&str, &str) = (
    "<!-- the feature table: made from src/pipeline/feature_defs.rs; UPDATE_DOCS=1 cargo test --test docs writes it -->\n",
    "<!-- end of the feature table -->",
);

#[test]
fn the_model_docs_feature_table_is_the_codes() {
    let path = root().join("docs/model.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (begin, end) = FEATURE_TABLE;
    let start = doc
        .find(begin)
        .expect("docs/model.md has the feature table's begin marker")
        + begin.len();
    let stop = start
        + doc[start..]
            .find(end)
            .expect("docs/model.md has the feature table's end marker");
    let table = churn_alert::pipeline::feature_defs::markdown();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        let updated = format!("{}{table}{}", &doc[..start], &doc[stop..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert!(
        doc[start..stop] == table,
        "docs/model.md: the feature table differs from src/pipeline/feature_defs.rs; \
         `UPDATE_DOCS=1 cargo test --test docs` writes it:\n{table}"
    );
}
