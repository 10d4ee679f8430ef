/** What one label of a metric says, and its values when they are a closed list. */
export interface LabelSpec {
  readonly meaning: string;
  /** Every value the label takes, when that list is closed (reasons, results); absent for names. */
  readonly values?: readonly string[];
}

/**
 * One metric, declared once: /metrics takes its HELP text from here, docs/reference/metrics.md
 * is made from it, and test/unit/observability/catalogue.test.ts checks that every name counted
 * in src/ is declared and every declared counter is counted.
 */
export interface MetricSpec {
  /** As counted (`counters.count('mqtt.connections.refused', ...)`); /metrics shows it as `ferry_` + dots made underscores (+ `_total` for counters). */
  readonly name: string;
  readonly type: 'counter' | 'gauge' | 'histogram';
  /** What one unit of the value is: messages, connections, bytes, seconds... */
  readonly unit: string;
  readonly labels: Readonly<Record<string, LabelSpec>>;
  /** One sentence: what it counts or shows. */
  readonly help: string;
  /** A histogram's bucket upper bounds, ascending, in its unit. */
  readonly buckets?: readonly number[];
}

/** Labels most metrics of a bridge carry. */
export const BRIDGE: LabelSpec = { meaning: "the bridge's name" };
export const SINK: LabelSpec = { meaning: "the sink: its kind (`kafka`, `history`...; `kind#index` for a kind used twice), or its name in a TypeScript bridge's `to`" };
