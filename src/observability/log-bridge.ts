/**
 * What telemetry adds to the gateway's pino logger once it starts (the logger exists before):
 * each line exported over OTLP. Unset while nothing is exported, and the logger is given a
 * bridge only when telemetry is configured, so that a gateway exporting nothing logs as before.
 */
export class LogBridge {
  line: ((text: string) => void) | undefined;
}
