//! Bodies of the `cargo fuzz` targets in `edge-agent/fuzz/`: the parsers of text the agent
//! reads from the device (package databases and os-release), here so stable tests run
//! them too. Each must never panic, whatever a package manager or a file holds.

/// dpkg-query, rpm, pacman and apk outputs, and os-release, all from the same bytes.
pub fn inventory(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for packages in [
        crate::inventory::parse_dpkg(&text),
        crate::inventory::parse_rpm(&text),
        crate::inventory::parse_pacman(&text),
        crate::inventory::parse_apk_installed(&text),
    ] {
        for p in packages {
            assert!(
                !p.name.is_empty() && !p.version.is_empty(),
                "a package without a name or version from {text:?}"
            );
        }
    }
    let _ = crate::probe::pretty_name(&text);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_body_survives_garbage_and_near_misses() {
        for input in [
            &b""[..],
            b"\n\n\n",
            b"\t\t\t\n",
            b"name\tversion\tarch\textra\n\t1.0\tamd64\n",
            // Found when this body first ran (the stable test below, before libFuzzer did): empty
            // `P:`/`V:` fields made nameless packages.
            b"P:\nV:\nA:\n\nP:x\n",
            b"PRETTY_NAME=\n",
            b"PRETTY_NAME=\"\n",
            b"\xff\xfe\x00",
        ] {
            super::inventory(input);
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..500 {
            let len = (x % 80) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let alphabet = b"PVAT:\t\n =\"abc1.-+~";
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            super::inventory(&bytes);
        }
    }
}
