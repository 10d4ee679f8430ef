import type { DeviceStats } from './devices.ts';
import { topicOf } from './devices.ts';
import type { ReadMessage } from './kafka-read.ts';

/** A new seq that came before a smaller seq's first occurrence. */
export interface OrderViolation {
  readonly device: string;
  readonly seq: number;
  /** Highest seq of the device seen before this record. */
  readonly afterSeq: number;
  readonly partition: number;
  readonly offset: string;
}

export interface StreamReport {
  readonly records: number;
  /** Distinct (device, seq) pairs. */
  readonly distinct: number;
  /** Records repeating a (device, seq) already seen: `redelivered + republished`. */
  readonly duplicates: number;
  /** Duplicates with a ferry-id seen before: the gateway sent one buffered message again. */
  readonly redelivered: number;
  /** Duplicates with a new ferry-id: the device published the seq again and the gateway stored both. */
  readonly republished: number;
  /** Acknowledged (device, seq) pairs absent from the topic. */
  readonly missing: readonly { device: string; seq: number }[];
  readonly violations: readonly OrderViolation[];
  /** Records that do not belong (bad key, payload, headers, unknown device or seq). */
  readonly malformed: readonly string[];
}

/**
 * Checks a topic's records against what the devices know was acknowledged. Records of one
 * device are taken in (partition, offset) order; see the crash test for the order invariant.
 */
export function checkStreams(messages: readonly ReadMessage[], devices: readonly DeviceStats[]): StreamReport {
  const byDevice = new Map<string, ReadMessage[]>();
  const known = new Map(devices.map((d) => [d.clientId, d]));
  const malformed: string[] = [];
  for (const m of messages) {
    if (m.key === undefined || !known.has(m.key)) {
      malformed.push(`record ${m.partition}/${m.offset}: unknown key ${String(m.key)}`);
      continue;
    }
    let list = byDevice.get(m.key);
    if (list === undefined) byDevice.set(m.key, (list = []));
    list.push(m);
  }

  let distinct = 0;
  let redelivered = 0;
  let republished = 0;
  const missing: { device: string; seq: number }[] = [];
  const violations: OrderViolation[] = [];
  for (const device of devices) {
    const records = (byDevice.get(device.clientId) ?? []).sort((a, b) => a.partition - b.partition || Number(BigInt(a.offset) - BigInt(b.offset)));
    const partitions = new Set(records.map((r) => r.partition));
    if (partitions.size > 1) malformed.push(`device ${device.clientId}: records in partitions ${[...partitions].join(', ')}`);
    const seen = new Set<number>();
    const ids = new Set<string>();
    let highest = -1;
    for (const r of records) {
      const where = `record ${r.partition}/${r.offset} of ${device.clientId}`;
      let body: { device?: unknown; seq?: unknown };
      try {
        body = JSON.parse(r.value?.toString() ?? 'null') as { device?: unknown; seq?: unknown };
      } catch {
        malformed.push(`${where}: payload is not JSON: ${r.value?.toString()}`);
        continue;
      }
      const seq = body.seq;
      if (body.device !== device.clientId || typeof seq !== 'number' || !Number.isInteger(seq) || seq < 0 || seq >= device.quota) {
        malformed.push(`${where}: unexpected payload ${r.value?.toString()}`);
        continue;
      }
      if (r.headers['mqtt-topic'] !== topicOf(device.clientId)) malformed.push(`${where}: mqtt-topic header ${r.headers['mqtt-topic']}`);
      const id = r.headers['ferry-id'];
      if (id === undefined || !/^[0-9a-f-]{36}$/.test(id)) malformed.push(`${where}: ferry-id header ${String(id)}`);
      if (seen.has(seq)) {
        if (id !== undefined && ids.has(id)) redelivered += 1;
        else republished += 1;
      } else {
        if (seq < highest) violations.push({ device: device.clientId, seq, afterSeq: highest, partition: r.partition, offset: r.offset });
        seen.add(seq);
        highest = Math.max(highest, seq);
      }
      if (id !== undefined) ids.add(id);
    }
    distinct += seen.size;
    for (const seq of [...device.acked].sort((a, b) => a - b)) if (!seen.has(seq)) missing.push({ device: device.clientId, seq });
  }
  return { records: messages.length, distinct, duplicates: redelivered + republished, redelivered, republished, missing, violations, malformed };
}
