//! Why the store never writes with `sled::Batch` (console/src/store.rs, "No batches").
//!
//! Writes into a fresh sled database on disk, with the console's cache and flush settings:
//! per simulated 30 s, one sample per agent, plus WRITES small writes to a second tree, as
//! single-key batches (`batch`), as plain inserts (`insert`), or as empty batches (`empty`).
//! Retention keeps 10 simulated minutes of samples. Prints the resident set and sled's size
//! every 10 simulated minutes. Run each mode in its own process:
//!
//!     cargo run --release -p edgefleet-console --example sled_batches -- batch 2000 240 1500
//!
//! Arguments: mode, agents (2000), simulated minutes (240), WRITES per 30 s (1500).

use edgefleet_console::memory;
use edgefleet_console::store::{CACHE_BYTES, FLUSH_EVERY_MS};

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "batch".into());
    let mut args = std::env::args()
        .skip(2)
        .map(|a| a.parse::<u64>().expect("arguments are numbers"));
    let agents = args.next().unwrap_or(2000);
    let minutes = args.next().unwrap_or(240);
    let writes = args.next().unwrap_or(1500);
    println!("mode\tminute\trss_mib\tsled_mib");
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(CACHE_BYTES)
        .flush_every_ms(Some(FLUSH_EVERY_MS))
        .open()
        .expect("sled opens");
    let samples = db.open_tree("raw").expect("tree");
    let other = db.open_tree("hot").expect("tree");
    let key = |agent: u64, at: u64| {
        let mut k = format!("agent-{agent:010}").into_bytes();
        k.extend_from_slice(&at.to_be_bytes());
        k
    };
    let (start, step, keep) = (1_700_000_000_000u64, 30_000, 600_000);
    let mut next_report = start + keep;
    let mut t = start;
    while t <= start + minutes * 60_000 {
        for agent in 0..agents {
            samples.insert(key(agent, t), &[1u8; 26]).expect("insert");
        }
        for i in 0..writes {
            let k = (i % agents).to_be_bytes();
            match mode.as_str() {
                "empty" => other.apply_batch(sled::Batch::default()),
                "batch" => {
                    let mut b = sled::Batch::default();
                    b.insert(&k, &[2u8; 16]);
                    other.apply_batch(b)
                }
                "insert" => other.insert(k, &[2u8; 16]).map(|_| ()),
                other => panic!("mode is batch, insert or empty, not {other:?}"),
            }
            .expect("write");
        }
        t += step;
        if t >= next_report {
            for agent in 0..agents {
                for item in samples.range(key(agent, 0)..key(agent, t - keep)) {
                    samples.remove(item.expect("read").0).expect("remove");
                }
            }
            memory::trim();
            println!(
                "{mode}\t{}\t{:.1}\t{:.1}",
                (t - start) / 60_000,
                memory::resident_bytes().unwrap_or(0) as f64 / f64::from(1 << 20),
                db.size_on_disk().unwrap_or(0) as f64 / f64::from(1 << 20),
            );
            next_report += keep;
        }
    }
}
