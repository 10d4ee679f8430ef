import { BRIDGE, type MetricSpec } from './spec.ts';

/** The Kafka sink and source, and the commands the devices sink carries to devices. */
export const kafkaMetrics = [
  {
    name: 'kafka.messages.rejected',
    type: 'counter',
    unit: 'messages',
    labels: { bridge: BRIDGE },
    help: 'Messages the Kafka sink cannot write (its topic renders to an invalid name or one outside `allowedTopics`, a template field has no value, or Kafka refuses the rendered topic: not created, a refused name, not authorized), sent to the dead letters.',
  },
  {
    name: 'kafka.messages.invalid',
    type: 'counter',
    unit: 'messages',
    labels: { bridge: BRIDGE, topic: { meaning: 'the Kafka topic the record came from' } },
    help: 'Records of a `kafka` source that its sinks refused for good; the offset is committed past them and the log line names each.',
  },
  {
    name: 'kafka.messages.redelivered',
    type: 'counter',
    unit: 'messages',
    labels: { bridge: BRIDGE, topic: { meaning: 'the Kafka topic the record came from' } },
    help: 'Records of a `kafka` source delivered again after a sink refused them for now (with a backoff from `retryBackoffMs`).',
  },
  {
    name: 'kafka.partitions.paused',
    type: 'counter',
    unit: 'events',
    labels: { bridge: BRIDGE },
    help: 'Times a `kafka` source paused a partition because `maxInFlight` of its records were waiting for acknowledgement.',
  },
  { name: 'kafka.commit.failed', type: 'counter', unit: 'errors', labels: { bridge: BRIDGE }, help: 'Failed offset commits of a `kafka` source; the commit is tried again.' },
  {
    name: 'kafka.consumer.errors',
    type: 'counter',
    unit: 'errors',
    labels: { bridge: BRIDGE },
    help: "Failures of a `kafka` source's consumer (a crash, no connection at start, or a topic to read that does not exist yet, once per retry); it reconnects.",
  },
  {
    name: 'commands.delivered',
    type: 'counter',
    unit: 'messages',
    labels: {
      bridge: BRIDGE,
      qos: {
        meaning: "1 when a device's PUBACK confirmed it, 0 when it counted as delivered once sent, unknown for one read again whose answer an earlier version kept",
        values: ['0', '1', 'unknown'],
      },
    },
    help: 'Commands the `devices` sink delivered to a device.',
  },
  {
    name: 'commands.expired',
    type: 'counter',
    unit: 'messages',
    labels: { bridge: BRIDGE, reason: { meaning: 'why it was dropped', values: ['no_subscriber', 'expired', 'no_share_member'] } },
    help: 'Commands dropped and committed past: nobody was subscribed to their topic, no device acknowledged them within `expiryMs`, or the member of a shared subscription that had one left (clean session) without acknowledging it and no other member was there to take it.',
  },
  {
    name: 'commands.refused',
    type: 'counter',
    unit: 'messages',
    labels: {
      bridge: BRIDGE,
      reason: {
        meaning:
          "the PUBACK reason code, in hex (`0x80`, `0x87`...); `packet_too_large`: larger than the Maximum Packet Size the device announced; `receive_queue_full`: the device's Receive Maximum was reached with as many messages waiting behind it as the broker keeps",
      },
    },
    help: 'Commands every MQTT 5 client that could take them refused with a PUBACK reason code of 0x80 or more, or could not be sent to (larger than its Maximum Packet Size, or its Receive Maximum window full with the queue behind it full too: the broker discarded them); committed past, not sent again.',
  },
  {
    name: 'commands.deduplicated',
    type: 'counter',
    unit: 'messages',
    labels: {
      bridge: BRIDGE,
      how: {
        meaning:
          '`answered`: a device had acked or refused it, or it was sent at QoS 0 only (it counts at once as it did then: delivered, or refused with the same reason); `held`: sessions still hold it (their PUBACK settles it)',
        values: ['answered', 'held'],
      },
    },
    help: 'QoS 1 commands their source delivered again (Kafka after a restart or a rebalance, before their offset was committed; an outbox row read again) that were not sent again: the same message id to the same topic. Across a restart it needs `mqtt.persistence: sqlite`; within a run any persistence.',
  },
  {
    name: 'commands.headers_dropped',
    type: 'counter',
    unit: 'headers',
    labels: { bridge: BRIDGE },
    help: 'Headers left out of the MQTT 5 properties of commands (the command is sent without them): a name or value with NUL, a control character or a non-character, which a device may refuse the whole message for (a Kafka header holding bytes), or a `response-topic` that is no topic name or a `correlation-data` that is not base64.',
  },
  {
    name: 'commands.invalid',
    type: 'counter',
    unit: 'messages',
    labels: { bridge: BRIDGE },
    help: 'Commands refused for their topic: its template cannot be rendered (no key, a missing header), a field value is empty (an empty key) or would leave its topic level, or it renders to an invalid MQTT topic or one outside `allowedTopics`; committed past. Counted once per command, also when its source delivers it again.',
  },
] as const satisfies readonly MetricSpec[];
