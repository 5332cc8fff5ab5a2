//! The edge agent: identity, MQTT session, probes, heartbeats and store-and-forward.
