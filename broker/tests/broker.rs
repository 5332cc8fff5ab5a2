//! The embedded broker against real rumqttc clients over loopback TCP.

use std::sync::Arc;
use std::time::Duration;

use edgefleet_broker::{BrokerConfig, ConnectPolicy, EmbeddedBroker};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS};
use tokio::time::timeout;

fn config() -> BrokerConfig {
    BrokerConfig {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        ..BrokerConfig::default()
    }
}

fn allow_password(pw: &'static str) -> ConnectPolicy {
    Arc::new(move |attempt| attempt.password == pw)
}

fn client(broker: &EmbeddedBroker, id: &str, pw: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let addr = broker.mqtt_addr();
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_credentials(id, pw);
    opts.set_keep_alive(Duration::from_secs(5));
    AsyncClient::new(opts, 16)
}

/// Polls until the CONNACK (or a connection error) and returns the return code.
async fn connack(eventloop: &mut rumqttc::EventLoop) -> Result<ConnectReturnCode, String> {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => return Ok(ack.code),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[tokio::test]
async fn console_link_receives_client_publishes_and_retained_reaches_clients() {
    let filters = vec!["ef/a/+/+".to_string()];
    let (broker, link, mut inbound) =
        EmbeddedBroker::start(&config(), allow_password("ok"), &filters).expect("broker starts");

    let (client_a, mut el) = client(&broker, "aaaaaaaaaaaaaaaa", "ok");
    let code = timeout(Duration::from_secs(5), connack(&mut el))
        .await
        .expect("connack in time");
    assert_eq!(code, Ok(ConnectReturnCode::Success));
    client_a
        .publish(
            "ef/a/aaaaaaaaaaaaaaaa/hb",
            QoS::AtLeastOnce,
            false,
            vec![1, 2, 3],
        )
        .await
        .expect("queued");
    let driver = tokio::spawn(async move { while el.poll().await.is_ok() {} });

    let got = timeout(Duration::from_secs(5), inbound.recv())
        .await
        .expect("console receives in time")
        .expect("channel open");
    assert_eq!(got.topic, "ef/a/aaaaaaaaaaaaaaaa/hb");
    assert_eq!(&got.payload[..], &[1, 2, 3]);

    link.publish("ef/c/state", vec![9, 9], true)
        .await
        .expect("router up");
    let (sub, mut sub_el) = client(&broker, "bbbbbbbbbbbbbbbb", "ok");
    sub.subscribe("ef/c/state", QoS::AtMostOnce)
        .await
        .expect("queued");
    let retained = timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = sub_el.poll().await {
                return p;
            }
        }
    })
    .await
    .expect("retained state arrives");
    assert!(retained.retain);
    assert_eq!(&retained.payload[..], &[9, 9]);
    driver.abort();
}

#[tokio::test]
async fn unsafe_client_ids_and_policy_refusals_are_refused_at_connect() {
    let (broker, _link, _inbound) =
        EmbeddedBroker::start(&config(), allow_password("ok"), &[]).expect("broker starts");

    for bad_id in ["a/b", "a+b", "a#", "$sys", "UPPER", "edgefleet-console"] {
        let (_c, mut el) = client(&broker, bad_id, "ok");
        let result = timeout(Duration::from_secs(5), connack(&mut el))
            .await
            .expect("answer in time");
        assert!(
            !matches!(result, Ok(ConnectReturnCode::Success)),
            "client id {bad_id:?} must be refused, got {result:?}"
        );
    }
    let (_c, mut el) = client(&broker, "cccccccccccccccc", "wrong");
    let result = timeout(Duration::from_secs(5), connack(&mut el))
        .await
        .expect("answer in time");
    assert!(
        !matches!(result, Ok(ConnectReturnCode::Success)),
        "policy refusal, got {result:?}"
    );

    let stats = broker.stats();
    assert_eq!(
        stats
            .refused_client_id
            .load(std::sync::atomic::Ordering::Relaxed),
        6
    );
    assert_eq!(
        stats
            .refused_policy
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn binding_a_used_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let cfg = BrokerConfig {
        listen: taken.local_addr().expect("addr"),
        ..BrokerConfig::default()
    };
    let err = EmbeddedBroker::start(&cfg, allow_password("ok"), &[]).expect_err("port in use");
    assert!(err.to_string().contains("cannot listen on"), "{err}");
}
