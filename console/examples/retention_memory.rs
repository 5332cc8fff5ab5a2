//! Does the store's memory settle under steady ingest and retention?
//!
//! Drives a real `Store` on disk the way the soak's console does, in simulated time so
//! hours pass in seconds: every agent heartbeats each interval (a sample and its host's
//! packed hot record, in ingest rounds of a tenth of a second), one agent in fifty sends an
//! event per interval, and a retention pass every 10 minutes keeps 10 minutes of samples
//! in every tier and of events (the soak's settings). After each pass it trims the heap, as the console
//! does, and prints the resident set and sled's size on disk. Both must level off.
//!
//!     cargo run --release -p edgefleet-console --example retention_memory -- 2000 240 30
//!
//! Arguments: agents (2000), simulated minutes (240), heartbeat interval in s (30).

use edgefleet_console::memory;
use edgefleet_console::presence::HostRecord;
use edgefleet_console::store::{EventRecord, Round, Sample, Store, Tier};

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().expect("arguments are numbers"));
    let agents = args.next().unwrap_or(2000);
    let minutes = args.next().unwrap_or(240);
    let interval_ms = args.next().unwrap_or(30) * 1000;
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = Store::open(dir.path()).expect("the store opens");
    let start = 1_700_000_000_000u64;
    let mut hosts: Vec<HostRecord> = (0..agents)
        .map(|i| HostRecord::new(&format!("agent-{i:06}"), &[i as u8; 32], start))
        .collect();
    for h in &hosts {
        store
            .write_round(&Round {
                hosts: vec![h],
                ..Round::default()
            })
            .expect("write");
    }
    let keep_ms = 600_000;
    let per_round = (agents as usize).div_ceil((interval_ms / 100) as usize);
    let mut event_id = 0;
    let mut next_pass = start;
    let mut t = start;
    println!("minute\trss_mib\tsled_mib\tremoved");
    while t <= start + minutes * 60_000 {
        event_id += 1;
        for (r, chunk) in hosts.chunks_mut(per_round).enumerate() {
            let at = t + r as u64 * 100;
            for h in chunk.iter_mut() {
                h.last_seen = Some(at);
                h.last_seq.1 += 1;
            }
            let events: Vec<(String, EventRecord)> = chunk
                .iter()
                .filter(|h| h.id.ends_with("00") || h.id.ends_with("50"))
                .map(|h| {
                    let event = EventRecord {
                        event_id,
                        at,
                        level: "info".into(),
                        kind: "service".into(),
                        message: "nginx restarted".into(),
                    };
                    (h.id.clone(), event)
                })
                .collect();
            let round = Round {
                hot: chunk.iter().collect(),
                samples: chunk
                    .iter()
                    .map(|h| (h.id.clone(), at, Sample::default()))
                    .collect(),
                events,
                ..Round::default()
            };
            store.write_round(&round).expect("write");
        }
        t += interval_ms;
        if t >= next_pass {
            let mut removed = 0;
            for h in &hosts {
                removed += store
                    .expire_history(&h.id, t.saturating_sub(keep_ms))
                    .expect("expire history");
                for tier in Tier::ALL {
                    removed += store
                        .expire(&h.id, tier, t.saturating_sub(keep_ms))
                        .expect("expire");
                }
            }
            memory::trim();
            println!(
                "{}\t{:.1}\t{:.1}\t{removed}",
                (t - start) / 60_000,
                memory::resident_bytes().unwrap_or(0) as f64 / f64::from(1 << 20),
                store.size_on_disk() as f64 / f64::from(1 << 20),
            );
            next_pass += keep_ms;
        }
    }
}
