//! Round-trips, pinned bytes and the malformed-input corpus for every decoder.

use std::collections::BTreeMap;

use edgefleet_codec::*;
use proptest::prelude::*;

fn agent() -> Identity {
    Identity::from_seed(&[1; 32])
}
fn console() -> Identity {
    Identity::from_seed(&[2; 32])
}
fn mac() -> MacKey {
    MacKey::derive_agent(&agent(), &console().public_key()).expect("contributory")
}

// ---- strategies -------------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    "[ -~]{0,24}"
}
fn package() -> impl Strategy<Value = Package> {
    (text(), text(), text(), text()).prop_map(|(name, version, arch, source)| Package {
        name,
        version,
        arch,
        source,
    })
}
fn app_status() -> impl Strategy<Value = AppStatus> {
    prop_oneof![
        Just(AppStatus::Unknown),
        Just(AppStatus::Active),
        Just(AppStatus::Inactive),
        Just(AppStatus::Failed),
        Just(AppStatus::Activating),
    ]
}
fn app() -> impl Strategy<Value = AppState> {
    (text(), app_status(), proptest::option::of(text())).prop_map(|(id, status, version)| {
        AppState {
            id,
            status,
            version,
        }
    })
}

fn agent_message() -> impl Strategy<Value = AgentMessage> {
    let seqs = (any::<u64>(), any::<u64>());
    prop_oneof![
        (seqs, any::<bool>(), any::<bool>()).prop_map(|((bd_seq, seq), online, clean)| {
            AgentMessage::Status(Status {
                bd_seq,
                seq,
                online,
                clean,
            })
        }),
        (
            seqs,
            text(),
            text(),
            proptest::collection::vec(text(), 0..4),
            any::<u64>(),
            proptest::collection::vec(app(), 0..5),
            proptest::option::of(any::<[u8; 8]>()),
            any::<u32>()
        )
            .prop_map(
                |((bd_seq, seq), hostname, os, ips, boot_time, apps, inventory_digest, hb)| {
                    AgentMessage::Birth(Birth {
                        bd_seq,
                        seq,
                        hostname,
                        os: os.clone(),
                        kernel: os.clone(),
                        arch: os,
                        ips,
                        agent_version: "0.1.0".into(),
                        boot_time,
                        apps,
                        inventory_digest,
                        heartbeat_interval_s: hb,
                        inventory_interval_s: None,
                        labels: Default::default(),
                    })
                }
            ),
        (
            seqs,
            proptest::option::of(0u8..=100),
            proptest::option::of(any::<u16>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|((bd_seq, seq), cpu, load, up, rx, at)| {
                AgentMessage::Heartbeat(Heartbeat {
                    bd_seq,
                    seq,
                    cpu_pct: cpu,
                    mem_pct: cpu,
                    disk_pct: None,
                    load_centi: load,
                    uptime_s: up,
                    rx_bps: rx,
                    tx_bps: rx,
                    apps_digest: load,
                    at,
                    apps: load.map(|l| {
                        vec![edgefleet_codec::AppState {
                            id: format!("app{l}"),
                            status: edgefleet_codec::AppStatus::Active,
                            version: (l % 2 == 0).then(|| l.to_string()),
                        }]
                    }),
                    inventory_digest: at.map(|a| a.to_be_bytes()),
                })
            }),
        (
            seqs,
            any::<u32>(),
            any::<u16>(),
            any::<bool>(),
            text(),
            proptest::option::of(any::<[u8; 8]>()),
            proptest::collection::vec(package(), 0..6)
        )
            .prop_map(
                |((bd_seq, seq), scan_id, index, is_last, source, digest, packages)| {
                    AgentMessage::InventoryChunk(InventoryChunk {
                        bd_seq,
                        seq,
                        scan_id,
                        index,
                        is_last,
                        digest,
                        packages_z: InventoryChunk::split(scan_id, &source, &packages)
                            .remove(0)
                            .packages_z,
                        source,
                    })
                }
            ),
        (
            seqs,
            any::<[u8; 8]>(),
            any::<[u8; 8]>(),
            proptest::collection::vec(package(), 0..3),
            proptest::collection::vec(package(), 0..3)
        )
            .prop_map(|((bd_seq, seq), base_digest, new_digest, added, removed)| {
                AgentMessage::InventoryDelta(InventoryDelta {
                    bd_seq,
                    seq,
                    base_digest,
                    new_digest,
                    changed: added.clone(),
                    added,
                    removed,
                    source: "dpkg".into(),
                })
            }),
        (seqs, any::<u64>(), any::<u64>(), text(), text()).prop_map(
            |((bd_seq, seq), event_id, at_ms, kind, message)| {
                AgentMessage::Event(Event {
                    bd_seq,
                    seq,
                    event_id,
                    at_ms,
                    level: EventLevel::Warn,
                    kind,
                    message,
                })
            }
        ),
        (seqs, any::<[u8; 16]>(), text(), any::<u64>()).prop_map(
            |((bd_seq, seq), command_id, message, at_ms)| {
                AgentMessage::CommandResult(CommandResult {
                    bd_seq,
                    seq,
                    command_id,
                    outcome: CommandOutcome::RolledBack,
                    message,
                    at_ms,
                })
            }
        ),
        (
            seqs,
            any::<[u8; 16]>(),
            text(),
            proptest::option::of(0u8..=100),
            any::<u64>()
        )
            .prop_map(|((bd_seq, seq), command_id, step, pct, at_ms)| {
                AgentMessage::CommandProgress(CommandProgress {
                    bd_seq,
                    seq,
                    command_id,
                    step,
                    pct,
                    at_ms,
                })
            }),
    ]
}

fn command_action() -> impl Strategy<Value = CommandAction> {
    prop_oneof![
        text().prop_map(|app| CommandAction::RestartApp { app }),
        (
            text(),
            proptest::collection::btree_map(
                text(),
                prop_oneof![
                    any::<bool>().prop_map(ConfigValue::Bool),
                    any::<i64>().prop_map(ConfigValue::Int),
                    (-1e9f64..1e9).prop_map(ConfigValue::Float),
                    text().prop_map(ConfigValue::Str),
                ],
                0..4
            )
        )
            .prop_map(|(app, values)| CommandAction::PushConfig { app, values }),
        (text(), text(), text(), any::<[u8; 32]>()).prop_map(|(app, url, version, sha256)| {
            CommandAction::UpdateApp {
                app,
                url,
                version,
                sha256,
            }
        }),
        Just(CommandAction::RequestHeartbeat),
        Just(CommandAction::RescanInventory),
    ]
}

// ---- round trips ------------------------------------------------------------------------

proptest! {
    #[test]
    fn every_agent_message_round_trips_through_mac0(msg in agent_message()) {
        let id = agent().agent_id();
        let sealed = seal_agent(&msg, &id, &mac());
        prop_assert!(sealed.len() <= msg::MAX_PAYLOAD);
        prop_assert_eq!(open_agent(&sealed, &id, &mac()), Ok(msg.clone()));
        prop_assert_eq!(AgentMessage::from_stored(&msg.to_stored()), Ok(msg));
    }

    #[test]
    fn commands_round_trip_through_sign1(action in command_action(), id in any::<[u8; 16]>(), exp in any::<u64>()) {
        let target = agent().agent_id();
        let cmd = ConsoleMessage::Command(Command { id, target: target.to_string(), issued_at: 1, expires_at: exp, action });
        let signed = sign_console(&cmd, Some(&target), &console());
        prop_assert_eq!(open_console(&signed, Some(&target), &console().public_key()), Ok(cmd));
    }

    #[test]
    fn enrollment_and_console_state_round_trip(epoch in any::<u64>(), at in any::<u64>(), receipts in any::<bool>(), reason in text(), host in text()) {
        let c = console();
        let state = ConsoleState { online: true, epoch, public_key: *c.public_key().as_bytes(), at, receipts };
        let signed = sign_console(&ConsoleMessage::ConsoleState(state.clone()), None, &c);
        prop_assert_eq!(open_console_state_pinning(&signed, &c.public_key().fingerprint()), Ok(state.clone()));
        prop_assert_eq!(open_console_state_self_signed(&signed), Ok(state.clone()));
        prop_assert_eq!(open_console(&signed, None, &c.public_key()), Ok(ConsoleMessage::ConsoleState(state)));

        let a = agent();
        let resp = ConsoleMessage::EnrollResponse(EnrollResponse { agent_id: a.agent_id().to_string(), decision: EnrollDecision::Rejected { reason }, at });
        let signed = sign_console(&resp, Some(&a.agent_id()), &c);
        prop_assert_eq!(open_console(&signed, Some(&a.agent_id()), &c.public_key()), Ok(resp));

        let token = EnrollToken::generate(c.public_key().fingerprint());
        let req = EnrollRequest { agent_id: a.agent_id().to_string(), public_key: *a.public_key().as_bytes(), hostname: host, os: "Debian".into(), ips: vec![], token_id: token.id.clone(), proof: token.proof(&a.public_key()), at };
        let signed = sign_enroll_request(&req, &a);
        prop_assert_eq!(open_enroll_request(&signed, &a.agent_id()), Ok(req));
    }

    #[test]
    fn random_bytes_never_panic_any_decoder(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        for (_, target) in fuzzing::TARGETS {
            target(&data);
        }
    }

    #[test]
    fn mutated_valid_messages_never_panic_and_never_verify(msg in agent_message(), flip in any::<(usize, u8)>()) {
        let id = agent().agent_id();
        let mut sealed = seal_agent(&msg, &id, &mac());
        let at = flip.0 % sealed.len();
        let mask = flip.1.max(1);
        sealed[at] ^= mask;
        for (_, target) in fuzzing::TARGETS {
            target(&sealed);
        }
        // A flipped bit anywhere must be caught: by the header check, CBOR structure or tag.
        prop_assert!(open_agent(&sealed, &id, &mac()).is_err());
    }
}

// ---- pinned bytes -----------------------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn status_and_heartbeat_bytes_are_pinned() {
    // If one of these changes, the wire changed: that needs a new wire version, not a new
    // expected string.
    let status = AgentMessage::Status(Status {
        bd_seq: 3,
        seq: 0,
        online: false,
        clean: false,
    });
    assert_eq!(hex(&status.to_stored()), "10a40003010002f403f4");
    let hb = AgentMessage::Heartbeat(Heartbeat {
        bd_seq: 5,
        seq: 120,
        cpu_pct: Some(37),
        load_centi: Some(85),
        ..Heartbeat::default()
    });
    assert_eq!(hex(&hb.to_stored()), "12a40005011878021825051855");
    let sealed = seal_agent(&status, &agent().agent_id(), &mac());
    // Header byte, array(4), empty protected bstr, empty unprotected map, then the payload.
    assert_eq!(hex(&sealed[..4]), "108440a0", "{}", hex(&sealed));
    assert_eq!(
        sealed.len(),
        4 + 1 + 9 + 1 + 8,
        "payload bstr and 8-byte tag"
    );
}

// ---- the malformed corpus ---------------------------------------------------------------

fn heartbeat_sealed() -> Vec<u8> {
    let hb = AgentMessage::Heartbeat(Vitals::default().keyframe());
    seal_agent(&hb, &agent().agent_id(), &mac())
}

#[test]
fn malformed_inputs_are_typed_errors() {
    let id = agent().agent_id();
    let k = mac();
    let decode = |r: Result<AgentMessage, VerifyError>| match r {
        Err(VerifyError::Decode(e)) => e,
        other => panic!("expected a decode error, got {other:?}"),
    };
    assert_eq!(decode(open_agent(&[], &id, &k)), DecodeError::Empty);
    assert_eq!(
        decode(open_agent(&[0x22, 0x84], &id, &k)),
        DecodeError::UnsupportedVersion(2)
    );
    assert_eq!(
        decode(open_agent(&[0x1e, 0x84], &id, &k)),
        DecodeError::UnknownKind(14)
    );
    assert!(matches!(
        decode(open_agent(&[0x12], &id, &k)),
        DecodeError::Malformed(_)
    ));
    assert_eq!(
        decode(open_agent(&vec![0x12; msg::MAX_PAYLOAD + 1], &id, &k)),
        DecodeError::TooLarge {
            len: msg::MAX_PAYLOAD + 1,
            max: msg::MAX_PAYLOAD
        }
    );
    // A Sign1 kind on an agent topic.
    assert!(matches!(
        decode(open_agent(&[0x19, 0x84], &id, &k)),
        DecodeError::WrongKind { .. }
    ));
    // CBOR claiming enormous lengths: an array of 2^63 items, a bstr of 2^63 bytes.
    let huge_array = [0x12, 0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    let huge_bstr = [
        0x12, 0x84, 0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];
    assert!(open_agent(&huge_array, &id, &k).is_err());
    assert!(open_agent(&huge_bstr, &id, &k).is_err());
    // Deep nesting.
    let mut deep = vec![0x12];
    deep.extend(std::iter::repeat_n(0x81, 10_000));
    assert!(open_agent(&deep, &id, &k).is_err());
}

#[test]
fn every_truncation_and_trailing_garbage_is_rejected() {
    let id = agent().agent_id();
    let sealed = heartbeat_sealed();
    for cut in 0..sealed.len() {
        assert!(
            open_agent(&sealed[..cut], &id, &mac()).is_err(),
            "truncated at {cut}"
        );
    }
    let mut trailing = sealed.clone();
    trailing.push(0);
    assert!(open_agent(&trailing, &id, &mac()).is_err());
    assert!(open_agent(&sealed, &id, &mac()).is_ok());
}

#[test]
fn a_valid_mac0_cannot_be_moved_to_another_agent_or_kind() {
    let sealed = heartbeat_sealed();
    let other = Identity::from_seed(&[9; 32]);
    let other_key = MacKey::derive_console(&console(), &other.public_key()).expect("contributory");
    assert_eq!(
        open_agent(&sealed, &other.agent_id(), &other_key),
        Err(VerifyError::BadTag)
    );
    // Same key but another agent id in the AAD.
    assert_eq!(
        open_agent(&sealed, &other.agent_id(), &mac()),
        Err(VerifyError::BadTag)
    );
    let mut as_event = sealed.clone();
    as_event[0] = Kind::Event.header();
    assert_eq!(
        open_agent(&as_event, &agent().agent_id(), &mac()),
        Err(VerifyError::BadTag)
    );
    let mut flipped = sealed.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(
        open_agent(&flipped, &agent().agent_id(), &mac()),
        Err(VerifyError::BadTag)
    );
}

#[test]
fn both_sides_derive_the_same_mac_key() {
    let a = agent();
    let c = console();
    let from_agent = MacKey::derive_agent(&a, &c.public_key()).expect("contributory");
    let from_console = MacKey::derive_console(&c, &a.public_key()).expect("contributory");
    let msg = AgentMessage::Status(Status {
        bd_seq: 1,
        seq: 1,
        online: true,
        clean: false,
    });
    let sealed = seal_agent(&msg, &a.agent_id(), &from_agent);
    assert_eq!(open_agent(&sealed, &a.agent_id(), &from_console), Ok(msg));
}

#[test]
fn low_order_keys_are_refused() {
    // The identity point: Ed25519 encoding of (0, 1).
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    let weak = PublicKey::from_bytes(identity_point);
    assert_eq!(
        MacKey::derive_console(&console(), &weak).err(),
        Some(VerifyError::WeakKey)
    );
}

#[test]
fn sign1_from_another_key_or_scope_is_refused() {
    let c = console();
    let target = agent().agent_id();
    let cmd = ConsoleMessage::Command(Command {
        id: [1; 16],
        target: target.to_string(),
        issued_at: 10,
        expires_at: 20,
        action: CommandAction::PushConfig {
            app: "a".into(),
            values: BTreeMap::new(),
        },
    });
    let signed = sign_console(&cmd, Some(&target), &c);
    let impostor = Identity::from_seed(&[8; 32]);
    assert_eq!(
        open_console(&signed, Some(&target), &impostor.public_key()),
        Err(VerifyError::WrongKeyId)
    );
    let other = Identity::from_seed(&[9; 32]).agent_id();
    assert_eq!(
        open_console(&signed, Some(&other), &c.public_key()),
        Err(VerifyError::BadSignature)
    );
    let forged = sign_console(&cmd, Some(&target), &impostor);
    assert_eq!(
        open_console_state_pinning(&forged, &c.public_key().fingerprint())
            .err()
            .map(|e| e.reason()),
        Some("wrong_kind")
    );
    let mut bad_sig = signed.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    assert_eq!(
        open_console(&bad_sig, Some(&target), &c.public_key()),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn expired_or_misaddressed_commands_are_refused() {
    let me = agent().agent_id();
    let cmd = Command {
        id: [1; 16],
        target: me.to_string(),
        issued_at: 10,
        expires_at: 20,
        action: CommandAction::RequestHeartbeat,
    };
    assert_eq!(cmd.check(&me, 19), Ok(()));
    assert_eq!(cmd.check(&me, 20), Err(VerifyError::Expired));
    assert_eq!(
        cmd.check(&Identity::from_seed(&[9; 32]).agent_id(), 19),
        Err(VerifyError::WrongTarget)
    );
}

#[test]
fn commands_issued_beyond_the_clock_skew_are_refused() {
    let me = agent().agent_id();
    let now = 1_800_000_000;
    let at = |issued_at| Command {
        id: [1; 16],
        target: me.to_string(),
        issued_at,
        expires_at: issued_at + 600,
        action: CommandAction::RequestHeartbeat,
    };
    let skew = edgefleet_codec::connect::MAX_SKEW_SECS;
    assert_eq!(at(now).check(&me, now), Ok(()));
    assert_eq!(at(now + skew).check(&me, now), Ok(()), "within the skew");
    assert_eq!(
        at(now + skew + 1).check(&me, now),
        Err(VerifyError::NotYetValid)
    );
    assert_eq!(
        at(now + 365 * 86400).check(&me, now),
        Err(VerifyError::NotYetValid)
    );
    assert_eq!(VerifyError::NotYetValid.reason(), "not_yet_valid");
    // Far future and near the end of time: no overflow.
    assert_eq!(at(u64::MAX - 600).check(&me, u64::MAX - 700), Ok(()));
}

#[test]
fn console_state_with_an_unpinned_key_is_refused() {
    let impostor = Identity::from_seed(&[8; 32]);
    let state = ConsoleState {
        online: true,
        epoch: 1,
        public_key: *impostor.public_key().as_bytes(),
        at: 0,
        receipts: false,
    };
    let signed = sign_console(&ConsoleMessage::ConsoleState(state), None, &impostor);
    assert_eq!(
        open_console_state_pinning(&signed, &console().public_key().fingerprint()),
        Err(VerifyError::WrongKeyId)
    );
    // Claims the real console's key but is signed by the impostor.
    let lying = ConsoleState {
        online: true,
        epoch: 1,
        public_key: *console().public_key().as_bytes(),
        at: 0,
        receipts: false,
    };
    let signed = sign_console(&ConsoleMessage::ConsoleState(lying), None, &impostor);
    assert_eq!(
        open_console_state_pinning(&signed, &console().public_key().fingerprint()),
        Err(VerifyError::WrongKeyId)
    );
}

#[test]
fn enroll_request_for_another_id_is_refused() {
    let a = agent();
    let req = EnrollRequest {
        agent_id: a.agent_id().to_string(),
        public_key: *a.public_key().as_bytes(),
        hostname: "h".into(),
        os: "o".into(),
        ips: vec![],
        token_id: "t".into(),
        proof: [0; 32],
        at: 0,
    };
    let signed = sign_enroll_request(&req, &a);
    let other = Identity::from_seed(&[9; 32]).agent_id();
    assert_eq!(
        open_enroll_request(&signed, &other),
        Err(VerifyError::AgentIdMismatch)
    );
    // Signed by someone else than the key it carries.
    let forged = sign_enroll_request(&req, &Identity::from_seed(&[9; 32]));
    assert_eq!(
        open_enroll_request(&forged, &a.agent_id()),
        Err(VerifyError::WrongKeyId)
    );
}

#[test]
fn an_event_receipt_round_trips_only_for_its_agent_and_a_full_one_fits_a_packet() {
    let c = console();
    let target = agent().agent_id();
    let receipt = ConsoleMessage::EventReceipt(EventReceipt {
        at: u64::MAX,
        event_ids: (u64::MAX - MAX_RECEIPT_IDS as u64..u64::MAX).collect(),
    });
    let signed = sign_console(&receipt, Some(&target), &c);
    assert_eq!(signed[0], Kind::EventReceipt.header());
    assert!(
        signed.len() <= MAX_PAYLOAD,
        "{} bytes for the largest receipt",
        signed.len()
    );
    assert_eq!(
        open_console(&signed, Some(&target), &c.public_key()),
        Ok(receipt)
    );
    let other = Identity::from_seed(&[9; 32]).agent_id();
    assert_eq!(
        open_console(&signed, Some(&other), &c.public_key()),
        Err(VerifyError::BadSignature),
        "a receipt cannot be moved to another agent's topic"
    );
    assert!(
        open_agent(
            &signed,
            &target,
            &MacKey::derive_console(&c, &agent().public_key()).unwrap()
        )
        .is_err(),
        "not agent telemetry"
    );
}
