import type { IClientSubscribeOptions, IConnackPacket, MqttClient } from 'mqtt';
import type { ComponentContext } from '../core/component.ts';
import { describeError } from '../core/errors.ts';
import { describeReasonCode } from './client-connection.ts';

/** The part of the mqttClient source's config that decides what it subscribes to, and when. */
export interface SubscriptionConfig {
  readonly clientId: string;
  readonly topics: readonly string[];
  readonly qos: 0 | 1 | 2;
  readonly protocolVersion: 4 | 5;
  readonly cleanSession: boolean;
  readonly sessionExpiryIntervalSec?: number | undefined;
}

/**
 * What the mqttClient source subscribes to on each connection, and whether a reconnect found
 * the session it had. The first connection of a run subscribes to every filter, so that a
 * changed `topics` list applies. A later one relies on the broker's session for the filters the
 * broker acknowledged (subscribing again would resend retained messages under MQTT 3.1.1), and
 * subscribes again to the others: a SUBSCRIBE lost with its connection, whose session the broker
 * kept without the subscription, or a filter the broker refused. Without a session it
 * subscribes to every filter again.
 */
export class ClientSubscriptions {
  readonly #config: SubscriptionConfig;
  readonly #ctx: ComponentContext;
  readonly #broker: string;
  /** The filters without a SUBACK granting them in the broker's session. */
  readonly #unacknowledged: Set<string>;
  #connectedBefore = false;

  constructor(config: SubscriptionConfig, ctx: ComponentContext, broker: string) {
    this.#config = config;
    this.#ctx = ctx;
    this.#broker = broker;
    this.#unacknowledged = new Set(config.topics);
  }

  /** The session ends with each connection (a clean session, or MQTT 5 with an expiry of 0): nothing to lose at a reconnect. */
  get #sessionEnds(): boolean {
    return this.#config.cleanSession || (this.#config.protocolVersion === 5 && this.#config.sessionExpiryIntervalSec === 0);
  }

  /** Called at each CONNACK of `client`: reports a lost session and subscribes to what the session lacks. */
  connected(client: MqttClient, connack: IConnackPacket, isClosed: () => boolean): void {
    const ctx = this.#ctx;
    const broker = this.#broker;
    const config = this.#config;
    if (this.#connectedBefore && !this.#sessionEnds && !connack.sessionPresent) {
      // The broker restarted without persistence, or the session expired: what it received for
      // this client meanwhile is gone (issue 19).
      ctx.counters.count('mqtt.client.session_lost', { bridge: ctx.bridge });
      ctx.logger.warn(
        { broker, clientId: config.clientId },
        `the external broker lost this client's session (restarted without persistence, or the session expired): messages published while Ferry was away were not kept for it`,
      );
    }
    this.#connectedBefore = true;
    if (!connack.sessionPresent) for (const filter of config.topics) this.#unacknowledged.add(filter);
    if (this.#unacknowledged.size === 0) return;
    const options: IClientSubscribeOptions = { qos: config.qos };
    if (config.protocolVersion === 5) options.rh = 1;
    client.subscribe([...this.#unacknowledged], options, (error, granted, packet) => {
      if (error === null || error === undefined) {
        this.#answered((granted ?? []).map((grant) => [grant.topic, grant.qos]));
        return;
      }
      // mqtt.js fails the whole SUBSCRIBE when the broker refused one filter; its SUBACK says which.
      const codes = packet?.granted;
      if (granted !== undefined && codes?.length === granted.length) this.#answered(granted.map((grant, i) => [grant.topic, codes[i]]));
      else if (!isClosed()) ctx.logger.warn({ err: error, broker }, `subscribe failed (${describeError(error)}); trying again on the next connection`);
    });
  }

  /** The broker's answer to a SUBSCRIBE: each filter with its SUBACK reason code (the granted QoS, or a refusal from 0x80). */
  #answered(answers: readonly (readonly [string, unknown])[]): void {
    const ctx = this.#ctx;
    const broker = this.#broker;
    const config = this.#config;
    for (const [filter, answer] of answers) {
      const code = typeof answer === 'number' ? answer : 0x80;
      if (code >= 0x80) {
        ctx.counters.count('mqtt.client.subscribe_refused', { bridge: ctx.bridge });
        ctx.logger.error(
          { broker, topic: filter, reasonCode: code },
          `the broker refused the subscription to '${filter}' with ${describeReasonCode(code)} (check its ACL): nothing is received for it; trying again on the next connection`,
        );
        continue;
      }
      this.#unacknowledged.delete(filter);
      if (code < config.qos) ctx.logger.warn({ broker, topic: filter, granted: code, asked: config.qos }, `the broker granted QoS ${code} for '${filter}'`);
    }
  }
}

/** A shared subscription on a session that ends with the connection loses messages when the gateway dies: said once at start. */
export function warnOfCleanSharedSession(config: SubscriptionConfig, ctx: ComponentContext): void {
  const shared = config.topics.filter((filter) => filter.startsWith('$share/'));
  const ends = config.cleanSession || (config.protocolVersion === 5 && config.sessionExpiryIntervalSec === 0);
  if (shared.length === 0 || !ends) return;
  ctx.logger.warn(
    { bridge: ctx.bridge, topics: shared },
    `mqttClient source of bridge '${ctx.bridge}': a shared subscription on a session that ends with the connection: if this gateway dies, the broker drops the messages it had sent or queued for it (Mosquitto 2 does not pass them to another member of the group). Keep a persistent session (cleanSession: false), restart the gateway promptly, and size the broker's queue limits for the time it may be down`,
  );
}
