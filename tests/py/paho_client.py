#!/usr/bin/env python3
"""An MQTT client we did not write (Eclipse paho-mqtt), for tests/it/independent.rs.

    paho_client.py observe HOST PORT CLIENT_ID USERNAME PASSWORD TOPIC...
        Subscribes (QoS 1) and prints one JSON line per message:
        {"topic": ..., "retain": true|false, "hex": ...}. Runs until stdin closes.
    paho_client.py publish HOST PORT CLIENT_ID USERNAME PASSWORD TOPIC HEX
        Publishes the bytes at QoS 1, waits for the PUBACK, exits 0.

The first line printed is {"connected": RC}. Exit code 2 if the broker refuses us.
"""

import json
import sys
import threading

import paho.mqtt.client as mqtt


def main():
    mode, host, port, client_id, username, password = sys.argv[1:7]
    rest = sys.argv[7:]
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    client.username_pw_set(username, password)
    connected = threading.Event()
    result = {}

    def on_connect(c, userdata, flags, rc, properties=None):
        result["rc"] = int(rc.value) if hasattr(rc, "value") else int(rc)
        print(json.dumps({"connected": result["rc"]}), flush=True)
        if result["rc"] == 0 and mode == "observe":
            for topic in rest:
                c.subscribe(topic, qos=1)
        connected.set()

    def on_message(c, userdata, msg):
        line = {"topic": msg.topic, "retain": bool(msg.retain), "hex": msg.payload.hex()}
        print(json.dumps(line), flush=True)

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(host, int(port), keepalive=30)
    client.loop_start()
    if not connected.wait(10) or result.get("rc") != 0:
        sys.exit(2)
    if mode == "observe":
        sys.stdin.read()  # until the test closes our stdin
    elif mode == "publish":
        topic, payload = rest[0], bytes.fromhex(rest[1])
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        if not info.is_published():
            sys.exit(3)
        print(json.dumps({"published": topic}), flush=True)
    else:
        sys.exit(f"unknown mode {mode}")
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
