//! Work on a batch's partitions side by side, on threads of their own,
//! with the results in the order one after the other would give them.

/// The machine's cores (1 when unknown), read once.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `f` of each item, in their order. When `side_by_side`, the items are
/// cut into runs of neighbours of equal length (but the last), at most as
/// many as the machine has cores, each run on a thread of its own, inside
/// the caller's tracing span; a panic in one is raised here.
pub fn map_side_by_side<T: Sync, R: Send>(
    items: &[T],
    side_by_side: bool,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if !side_by_side || items.len() < 2 {
        return items.iter().map(f).collect();
    }
    let threads = cores();
    if threads < 2 {
        return items.iter().map(f).collect();
    }
    let run = items.len().div_ceil(threads.min(items.len()));
    let (f, span) = (&f, tracing::Span::current());
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(run)
            .map(|chunk| {
                let span = span.clone();
                scope.spawn(move || span.in_scope(|| chunk.iter().map(f).collect::<Vec<R>>()))
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_by_side_keeps_the_order_and_uses_threads() {
        let items: Vec<usize> = (0..10).collect();
        let run = |side_by_side| {
            map_side_by_side(&items, side_by_side, |i| (*i, std::thread::current().id()))
        };
        let (one, many) = (run(false), run(true));
        let order =
            |r: &[(usize, std::thread::ThreadId)]| r.iter().map(|x| x.0).collect::<Vec<_>>();
        assert_eq!(order(&one), items);
        assert_eq!(order(&many), items);
        let threads: std::collections::HashSet<_> = many.iter().map(|x| x.1).collect();
        let cores = cores();
        if cores >= 2 {
            assert!(
                (2..=cores).contains(&threads.len()),
                "{} threads",
                threads.len()
            );
            assert!(!threads.contains(&std::thread::current().id()));
        }
    }
}
