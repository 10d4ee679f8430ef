# An MQTT 5 subscriber with Eclipse Paho (Debian's python3-paho-mqtt, 1.6), for the interop
# tests: connects with the CONNECT properties given, subscribes with a subscription identifier,
# prints "ready" after the SUBACK, then one JSON line per message until one carries the payload
# "last" or the time runs out.
# Usage: paho-subscriber.py HOST PORT CLIENT_ID FILTER SUBSCRIPTION_ID MAX_PACKET_SIZE TIMEOUT_S
import json
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

host, port, client_id, topic_filter, sub_id, max_packet, timeout_s = sys.argv[1:8]
done = False


def on_connect(client, userdata, flags, reason_code, properties):
    props = Properties(PacketTypes.SUBSCRIBE)
    props.SubscriptionIdentifier = int(sub_id)
    client.subscribe(topic_filter, options=SubscribeOptions(qos=1), properties=props)


def on_subscribe(client, userdata, mid, reason_codes, properties):
    print(json.dumps({"suback": [int(rc.value) for rc in reason_codes]}), flush=True)
    print("ready", flush=True)


def on_message(client, userdata, msg):
    global done
    ids = getattr(msg.properties, "SubscriptionIdentifier", None) if msg.properties else None
    print(json.dumps({"topic": msg.topic, "payload": msg.payload.decode(), "qos": msg.qos, "subscriptionIdentifier": ids}), flush=True)
    if msg.payload == b"last":
        done = True


client = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5)
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
connect_props = Properties(PacketTypes.CONNECT)
connect_props.MaximumPacketSize = int(max_packet)
client.connect(host, int(port), properties=connect_props)
client.loop_start()
deadline = time.time() + float(timeout_s)
while not done and time.time() < deadline:
    time.sleep(0.05)
client.disconnect()
client.loop_stop()
print("exit" if done else "timeout", flush=True)
