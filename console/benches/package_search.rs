//! Fleet-wide package search and per-host queries over a large inventory: 5,000 hosts ×
//! 1,000 packages in a real sled database on disk (override with `HOSTS=` and
//! `PACKAGES=`). The goal: a search answers in < 100 ms.
//!
//! cargo bench -p edgefleet-console --bench package_search

use std::time::{Duration, Instant};

use edgefleet_codec::{InventoryChunk, Package};
use edgefleet_console::inventory::{Inventory, ListQuery};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut f: impl FnMut(), runs: usize) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn main() {
    let (hosts, per_host) = (env("HOSTS", 5000), env("PACKAGES", 1000));
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(dir.path().join("db"))
        .cache_capacity(256 * 1024 * 1024)
        .open()
        .unwrap();
    let inv = Inventory::open(
        db.open_tree("inv_pkgs").unwrap(),
        db.open_tree("inv_index").unwrap(),
        db.open_tree("inv_hosts").unwrap(),
    );
    let versions = ["3.0.2-0ubuntu1.15", "3.0.11-1~deb12u2", "3.0.13-0ubuntu3"];
    let started = Instant::now();
    for h in 0..hosts {
        let mut pkgs: Vec<Package> = (0..per_host - 1)
            .map(|i| Package {
                name: format!("pkg{i:04}"),
                version: format!("1.{}.{}", i % 7, (i + h) % 3),
                arch: "amd64".into(),
                source: "dpkg".into(),
            })
            .collect();
        pkgs.push(Package {
            name: "openssl".into(),
            version: versions[h % 3].into(),
            arch: "amd64".into(),
            source: "dpkg".into(),
        });
        for c in InventoryChunk::split(1, "dpkg", &pkgs) {
            inv.on_chunk(&format!("host{h:05}"), &c, 1).unwrap();
        }
    }
    println!(
        "loaded {hosts} hosts × {per_host} packages in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let t = median(
        || {
            let found = inv.search("openssl").unwrap();
            assert_eq!(found.hosts, hosts);
        },
        21,
    );
    println!(
        "search openssl (on every host, 3 versions): median {:.1} ms",
        t.as_secs_f64() * 1e3
    );
    let t = median(
        || {
            inv.search("pkg0500").unwrap();
        },
        21,
    );
    println!(
        "search pkg0500 (on every host): median {:.1} ms",
        t.as_secs_f64() * 1e3
    );
    let t = median(
        || {
            inv.search("not-installed-anywhere").unwrap();
        },
        21,
    );
    println!(
        "search of a package no host has: median {:.3} ms",
        t.as_secs_f64() * 1e3
    );
    let t = median(
        || {
            inv.compare("host00001", "host00002").unwrap();
        },
        21,
    );
    println!("compare two hosts: median {:.1} ms", t.as_secs_f64() * 1e3);
    let q = ListQuery {
        q: Some("pkg05".into()),
        page: 1,
        per_page: 100,
        sort: "name".into(),
        ..Default::default()
    };
    let t = median(
        || {
            inv.list("host00003", &q, 2).unwrap();
        },
        21,
    );
    println!(
        "one host's list, filtered and paged: median {:.1} ms",
        t.as_secs_f64() * 1e3
    );
}
