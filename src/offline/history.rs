//! Event histories for the offline commands (`train`, `score`, `backtest`).
//!
//! A history is one or more JSON-lines files of the event contract, or
//! directories of them (one file per source system, say), in any order:
//! sorted by event time, by customer (as warehouse and CRM exports usually
//! are), or not at all. Every valid line is read back in one canonical
//! order, event time first and the line's bytes to break ties, so the same
//! events give the same replay, and so the same model, scores and backtest,
//! however they were ordered or split.
//!
//! The sort is external: lines are gathered up to a memory budget, sorted
//! and spilled to temporary run files, which are then merged. Memory stays
//! bounded by the budget whatever the size of the history.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::offline::progress::{Progress, Unit};
use crate::pipeline::event::{rfc3339, Event, Millis};

/// Default memory for sorting, in MiB.
pub const DEFAULT_SORT_BUFFER_MB: usize = 512;

/// Flags shared by the commands that read a history.
#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
    /// Event history: JSON-lines files of the event contract, or
    /// directories of them, in any order (`-` for stdin). Repeatable.
    #[arg(long, required = true, num_args = 1..)]
    pub events: Vec<PathBuf>,
    /// Memory for sorting the history by event time, in MiB; larger
    /// histories are sorted on disk (in the system's temporary directory).
    #[arg(long, default_value_t = DEFAULT_SORT_BUFFER_MB)]
    pub sort_buffer_mb: usize,
}

impl HistoryArgs {
    /// The inputs as given, for messages.
    pub fn describe(&self) -> String {
        self.events
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What reading a history found.
#[derive(Debug, Default, Clone)]
pub struct ReadSummary {
    /// Files read.
    pub files: usize,
    /// Lines read (blank ones included).
    pub lines: u64,
    /// Valid events up to the cut-off, replayed.
    pub used: u64,
    /// Valid events after the cut-off, not replayed.
    pub after: u64,
    /// Lines refused by validation.
    pub refused: u64,
    /// Refusals by reason code.
    pub refused_by: HashMap<&'static str, u64>,
    /// SHA-256 of the replayed lines in replay order: the same for the same
    /// events however they were ordered or split into files.
    pub sha256: String,
    /// Sorted runs spilled to disk (0: sorted in memory).
    pub spilled_runs: usize,
}

/// Lists the files of `inputs`: files as given, directories as their
/// regular files (not hidden ones) in name order.
pub fn expand(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p == Path::new("-") {
            out.push(p.clone());
            continue;
        }
        let meta = std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?;
        if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("listing {}", p.display()))?
                .filter_map(|e| e.ok())
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            anyhow::ensure!(!files.is_empty(), "{} holds no files", p.display());
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    anyhow::ensure!(
        out.iter().filter(|p| *p == Path::new("-")).count() <= 1,
        "standard input (-) can be read only once"
    );
    Ok(out)
}

/// One chunk of lines being gathered: bytes in one arena, entries by time.
#[derive(Default)]
struct Chunk {
    arena: Vec<u8>,
    entries: Vec<(Millis, usize, usize)>,
}

impl Chunk {
    fn push(&mut self, t: Millis, line: &[u8]) {
        self.entries.push((t, self.arena.len(), line.len()));
        self.arena.extend_from_slice(line);
    }

    fn bytes(&self) -> usize {
        self.arena.len() + self.entries.len() * std::mem::size_of::<(Millis, usize, usize)>()
    }

    fn line(&self, e: &(Millis, usize, usize)) -> &[u8] {
        &self.arena[e.1..e.1 + e.2]
    }

    /// Sorts by (event time, bytes).
    fn sort(&mut self) {
        let arena = &self.arena;
        self.entries.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| arena[a.1..a.1 + a.2].cmp(&arena[b.1..b.1 + b.2]))
        });
    }

    /// Writes the sorted chunk as a run: (time, length, bytes) records.
    fn spill(&mut self, dir: &Path, n: usize) -> anyhow::Result<PathBuf> {
        self.sort();
        let path = dir.join(format!("run-{n:05}"));
        let mut w = BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        for e in &self.entries {
            w.write_all(&e.0.to_le_bytes())?;
            w.write_all(&(e.2 as u64).to_le_bytes())?;
            w.write_all(self.line(e))?;
        }
        w.flush()
            .with_context(|| format!("writing {}", path.display()))?;
        self.arena.clear();
        self.entries.clear();
        Ok(path)
    }
}

/// A sorted run being merged.
struct Run {
    r: BufReader<std::fs::File>,
}

impl Run {
    fn next(&mut self) -> anyhow::Result<Option<(Millis, Vec<u8>)>> {
        let mut head = [0u8; 16];
        match self.r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e).context("reading a sort run"),
        }
        let t = Millis::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        let len = u64::from_le_bytes(head[8..].try_into().expect("8 bytes")) as usize;
        let mut line = vec![0u8; len];
        self.r.read_exact(&mut line).context("reading a sort run")?;
        Ok(Some((t, line)))
    }
}

/// Merges sorted runs, handing each line to `f` in order.
fn merge_runs(runs: &[PathBuf], budget: usize, mut f: impl FnMut(&[u8])) -> anyhow::Result<()> {
    let mut readers = runs
        .iter()
        .map(|p| {
            let file =
                std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
            Ok(Run {
                r: BufReader::with_capacity((budget / runs.len()).clamp(1 << 16, 8 << 20), file),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut heap = BinaryHeap::new();
    for (i, r) in readers.iter_mut().enumerate() {
        if let Some((t, line)) = r.next()? {
            heap.push(Reverse((t, line, i)));
        }
    }
    while let Some(Reverse((_, line, i))) = heap.pop() {
        f(&line);
        if let Some((t, line)) = readers[i].next()? {
            heap.push(Reverse((t, line, i)));
        }
    }
    Ok(())
}

/// Reads every event of `args` with `occurred_at <= until` and hands them,
/// with their line, to `f` in canonical order (event time, then the line's
/// bytes). Invalid lines are counted by reason, not fatal.
pub fn read_sorted(
    args: &HistoryArgs,
    config: &Config,
    until: Millis,
    mut f: impl FnMut(Event, &[u8]),
) -> anyhow::Result<ReadSummary> {
    let files = expand(&args.events)?;
    let budget = args.sort_buffer_mb.max(1) << 20;
    let v = config.validator();
    let mut sum = ReadSummary {
        files: files.len(),
        ..ReadSummary::default()
    };
    let mut chunk = Chunk::default();
    let mut tmp: Option<tempfile::TempDir> = None;
    let mut runs = Vec::new();
    // Sizes are known unless a file is standard input.
    let total_bytes = files
        .iter()
        .map(|p| {
            (p != Path::new("-"))
                .then(|| std::fs::metadata(p).ok().map(|m| m.len()))
                .flatten()
        })
        .sum::<Option<u64>>();
    let mut reading = Progress::new("reading", Unit::Bytes, total_bytes);
    let (mut bytes, mut gathered) = (0u64, 0u64);
    for path in &files {
        let reader: Box<dyn BufRead> = if path == Path::new("-") {
            Box::new(BufReader::new(std::io::stdin()))
        } else {
            Box::new(BufReader::with_capacity(
                1 << 20,
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
            ))
        };
        for line in reader.split(b'\n') {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            sum.lines += 1;
            bytes += line.len() as u64 + 1;
            reading.set(bytes, || format!("{} lines", sum.lines));
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match v.decode_line(line, Millis::MAX / 2) {
                Ok(e) if e.occurred_at <= until => {
                    chunk.push(e.occurred_at, line);
                    gathered += 1;
                }
                Ok(_) => sum.after += 1,
                Err(r) => {
                    sum.refused += 1;
                    *sum.refused_by.entry(r.code.as_str()).or_default() += 1;
                }
            }
            if chunk.bytes() >= budget {
                let dir = match &tmp {
                    Some(d) => d.path().to_path_buf(),
                    None => {
                        let d = tempfile::Builder::new()
                            .prefix("churn-alert-sort-")
                            .tempdir()
                            .context("creating a temporary directory for sorting")?;
                        let p = d.path().to_path_buf();
                        tmp = Some(d);
                        p
                    }
                };
                runs.push(chunk.spill(&dir, runs.len())?);
            }
        }
    }
    reading.finish();
    let mut hash = Sha256::new();
    let mut replaying = Progress::new("replaying", Unit::Events, Some(gathered));
    let mut emit = |line: &[u8], sum: &mut ReadSummary| {
        hash.update(line);
        hash.update(b"\n");
        sum.used += 1;
        // Valid when gathered, so valid now.
        if let Ok(e) = v.decode_line(line, Millis::MAX / 2) {
            let at = e.occurred_at;
            f(e, line);
            replaying.set(sum.used, || format!("up to {}", &rfc3339(at)[..10]));
        }
    };
    if runs.is_empty() {
        chunk.sort();
        for e in &chunk.entries {
            emit(chunk.line(e), &mut sum);
        }
    } else {
        let dir = tmp.as_ref().expect("runs live in the temporary directory");
        runs.push(chunk.spill(dir.path(), runs.len())?);
        sum.spilled_runs = runs.len();
        merge_runs(&runs, budget, |line| emit(line, &mut sum))?;
    }
    replaying.finish();
    sum.sha256 = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: usize, cust: usize, day: u32) -> String {
        format!(
            r#"{{"event_id":"e-{id}","customer_id":"c-{cust}","type":"session","occurred_at":"2026-03-{:02}T10:00:00Z"}}"#,
            day
        )
    }

    fn collect(args: &HistoryArgs) -> (Vec<String>, ReadSummary) {
        let mut ids = Vec::new();
        let sum = read_sorted(args, &Config::default(), Millis::MAX, |e, _| {
            ids.push(e.event_id)
        })
        .unwrap();
        (ids, sum)
    }

    #[test]
    fn any_order_and_split_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> = (0..300)
            .map(|i| line(i, i % 7, 1 + (i % 28) as u32))
            .collect();
        let one = dir.path().join("one.jsonl");
        std::fs::write(&one, lines.join("\n") + "\n").unwrap();
        let mut rev = lines.clone();
        rev.reverse();
        let split = dir.path().join("split");
        std::fs::create_dir(&split).unwrap();
        for (k, part) in rev.chunks(70).enumerate() {
            std::fs::write(split.join(format!("{k}.jsonl")), part.join("\n")).unwrap();
        }
        std::fs::write(split.join("bad.jsonl"), "not json\n").unwrap();
        let a = HistoryArgs {
            events: vec![one],
            sort_buffer_mb: 64,
        };
        let (ids_a, sum_a) = collect(&a);
        let b = HistoryArgs {
            events: vec![split],
            sort_buffer_mb: 64,
        };
        let (ids_b, sum_b) = collect(&b);
        assert_eq!(ids_a.len(), 300);
        assert_eq!(ids_a, ids_b);
        assert_eq!(sum_a.sha256, sum_b.sha256);
        assert_eq!((sum_b.refused, sum_b.files), (1, 6));
    }

    #[test]
    fn histories_larger_than_the_buffer_are_sorted_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        // About 2 MiB of lines against a 1 MiB buffer, by customer.
        let mut lines: Vec<String> = (0..16_000)
            .map(|i| line(i, i % 13, 1 + (i * 7 % 28) as u32))
            .collect();
        lines.sort_by_key(|l| l[30..40].to_string());
        let path = dir.path().join("by-customer.jsonl");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let small = HistoryArgs {
            events: vec![path.clone()],
            sort_buffer_mb: 1,
        };
        let (ids, sum) = collect(&small);
        assert!(sum.spilled_runs >= 2, "{sum:?}");
        let (want, all) = collect(&HistoryArgs {
            events: vec![path],
            sort_buffer_mb: 64,
        });
        assert_eq!(all.spilled_runs, 0);
        assert_eq!(ids, want);
        assert_eq!(sum.sha256, all.sha256);
    }
}
