/**
 * What telemetry adds to the gateway's pino logger once it starts (the logger exists before):
 * trace and span ids on lines written inside a span, and each line exported over OTLP. Both
 * unset while nothing is exported, and the logger is given a bridge only when telemetry is
 * configured, so that a gateway exporting nothing logs as before.
 */
export class LogBridge {
  mixin: (() => object) | undefined;
  line: ((text: string) => void) | undefined;
}
