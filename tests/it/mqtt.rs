//! A raw MQTT client with a valid identity of its own and a valid enrollment token claim:
//! it passes the broker's auth and then tries to forge or replay traffic for other agents
//! (there are no topic ACLs).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgefleet_codec::{seal_agent, AgentId, AgentMessage, Heartbeat, Identity, MacKey};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

pub struct Attacker {
    pub identity: Identity,
    client: AsyncClient,
    _driver: tokio::task::JoinHandle<()>,
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Attacker {
    pub async fn connect(broker: SocketAddr, token: &str) -> Attacker {
        let identity = Identity::generate();
        let id = identity.agent_id();
        let token: edgefleet_codec::EnrollToken = token.parse().unwrap();
        let mut opts = MqttOptions::new(format!("{id}-1"), broker.ip().to_string(), broker.port());
        opts.set_credentials(
            edgefleet_codec::connect::username(&identity, Some(&token)),
            edgefleet_codec::connect::password(&identity, now_unix()),
        );
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let driver = tokio::spawn(async move {
            let mut tx = Some(tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("attacker connects")
            .unwrap();
        Attacker {
            identity,
            client,
            _driver: driver,
        }
    }

    pub async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    /// A heartbeat for `victim` sealed with the attacker's own (wrong) MAC key.
    pub fn sealed_heartbeat_for(&self, victim: &AgentId) -> Vec<u8> {
        let wrong =
            MacKey::derive_agent(&self.identity, &Identity::generate().public_key()).unwrap();
        let hb = AgentMessage::Heartbeat(Heartbeat {
            bd_seq: 99,
            seq: 99,
            cpu_pct: Some(100),
            ..Default::default()
        });
        seal_agent(&hb, victim, &wrong)
    }
}
