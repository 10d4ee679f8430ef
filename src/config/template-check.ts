import { isFerryError } from '../core/errors.ts';
import { compileTemplate, describeField, templateFilterProblem } from '../core/template.ts';
import type { ComponentKinds } from './schema.ts';

export interface TemplateIssue {
  readonly path: readonly (string | number)[];
  readonly message: string;
}

/**
 * Checks every message template a bridge's sinks declare (`templates`) against the topic
 * filters its source declares (`filters`): a `${2}` under a filter with one `+`, or a `${#}`
 * under a filter without `#`, can never render, so it is a config error at its own line.
 */
export function bridgeTemplateIssues(
  bridge: { readonly from: unknown; readonly to: readonly unknown[]; readonly transform?: readonly unknown[] },
  kinds: ComponentKinds,
): TemplateIssue[] {
  // Each entry is a one-key map, kind to config (the schema's union has checked that).
  const [sourceKind, sourceConfig] = Object.entries(bridge.from as object)[0] ?? [];
  const source = kinds.sources.find((s) => s.kind === sourceKind);
  const filters = source?.filters?.(sourceConfig);
  const issues: TemplateIssue[] = [];
  const declared: { at: (string | number)[]; template: string }[] = [];
  bridge.to.forEach((entry, index) => {
    const [kind, config] = Object.entries(entry as object)[0] ?? [];
    const sink = kinds.sinks.find((s) => s.kind === kind);
    for (const { path, template } of sink?.templates?.(config) ?? []) declared.push({ at: ['to', index, kind as string, ...path], template });
  });
  (bridge.transform ?? []).forEach((step, index) => {
    const lookup = (step as { lookup?: { key?: unknown } }).lookup;
    if (typeof lookup?.key === 'string') declared.push({ at: ['transform', index, 'lookup', 'key'], template: lookup.key });
  });
  for (const { at, template } of declared) {
    let compiled: ReturnType<typeof compileTemplate>;
    try {
      compiled = compileTemplate(template);
    } catch (error) {
      if (!isFerryError(error)) throw error;
      issues.push({ path: at, message: error.message });
      continue;
    }
    if (filters === undefined) {
      const capture = compiled.fields.find((f) => f.kind === 'capture' || f.kind === 'rest');
      if (capture !== undefined) {
        issues.push({
          path: at,
          message: `template '${template}': ${describeField(capture)} takes a level of the MQTT topic filter, but the '${sourceKind}' source has no topic filters`,
        });
      }
      continue;
    }
    const problem = templateFilterProblem(compiled, filters);
    if (problem !== undefined) issues.push({ path: at, message: `template '${template}': ${problem} (from.${sourceKind})` });
  }
  return issues;
}
