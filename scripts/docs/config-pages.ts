import { stringify } from 'yaml';
import { type KindReference, fileReferences, kindReferences } from '../../src/config/reference.ts';
import type { ComponentKinds } from '../../src/config/schema.ts';
import { generatedHeader } from './header.ts';

/** The folder of each list's kind pages, under docs/reference/. */
const FOLDERS = { from: 'sources', to: 'sinks', transform: 'transforms' } as const;

/** Guides that explain a kind at length (relative to docs/reference/<folder>/). */
const GUIDES: Readonly<Record<string, string>> = {
  'sources/mqtt': '../../devices-and-security.md',
  'sources/mqttClient': '../../external-brokers.md',
  'sources/kafka': '../../commands.md',
  'sinks/history': '../../configuration.md',
  'sinks/kafka': '../../bridges.md#kafka-bridges',
  'sinks/mqttClient': '../../external-brokers.md',
  'sinks/devices': '../../commands.md',
  'sinks/postgres': '../../bridges.md#postgresql',
  'transforms/decode': '../../bridges.md#transforms',
  'transforms/keep': '../../bridges.md#transforms',
  'transforms/drop': '../../bridges.md#transforms',
  'transforms/validate': '../../bridges.md#transforms',
};

const FILE_INTROS = {
  gateway:
    'One file configures a gateway: its broker and listeners, admin server, logs, buffer and shutdown, and where its bridges and device profiles are. See [Configuration](../configuration.md).',
  bridge:
    'Each file in a bridge directory is one bridge: one source (`from`), one or more sinks (`to`), and optionally a buffer policy, a rate limit and transform steps. Sources, sinks and transform steps have their settings on their own pages. See [Configuration](../configuration.md) and [Bridges](../bridges.md).',
  device:
    'A device profile says who may connect as a kind of device, what it may publish and subscribe to, and what its payloads look like. See [Devices and security](../devices-and-security.md).',
} as const;

/** docs/reference pages of the config files and of every source, sink and transform step, by path. */
export function configPages(kinds: ComponentKinds): Map<string, string> {
  const pages = new Map<string, string>();
  const link = (list: keyof typeof FOLDERS, kind: string) => `${FOLDERS[list]}/${kind}.md`;
  for (const { file, title, table } of fileReferences(kinds, link)) {
    pages.set(`${file}.md`, `${generatedHeader('the schemas in src/')}\n# ${title}\n\n${FILE_INTROS[file]}\n\n${table}`);
  }
  const { sources, sinks, transforms } = kindReferences(kinds);
  for (const source of sources) pages.set(`sources/${source.kind}.md`, kindPage(source, 'source', { from: { [source.kind]: source.example } }, 'sources'));
  for (const sink of sinks) pages.set(`sinks/${sink.kind}.md`, kindPage(sink, 'sink', { to: [{ [sink.kind]: sink.example }] }, 'sinks'));
  for (const step of transforms) pages.set(`transforms/${step.kind}.md`, kindPage(step, 'transform step', { transform: [step.example] }, 'transforms'));
  return pages;
}

/** The index of the kinds, for docs/reference/README.md. */
export function kindIndex(kinds: ComponentKinds): string {
  const { sources, sinks, transforms } = kindReferences(kinds);
  const list = (folder: string, refs: readonly KindReference[]) => refs.map((r) => `- [\`${r.kind}\`](${folder}/${r.kind}.md): ${r.description}`).join('\n');
  return ['## Sources (`from`)', list('sources', sources), '## Sinks (`to`)', list('sinks', sinks), '## Transform steps (`transform`)', list('transforms', transforms)].join(
    '\n\n',
  );
}

function kindPage(ref: KindReference, what: string, usage: unknown, folder: string): string {
  const guide = GUIDES[`${folder}/${ref.kind}`];
  return [
    generatedHeader('the schemas in src/ and the component registry (src/runtime/registry.ts)'),
    `# \`${ref.kind}\` ${what}`,
    '',
    ref.description,
    '',
    "In a bridge file, with its required settings (values from the schema's examples, `...` where it has none):",
    '',
    '```yaml',
    stringify(usage).trimEnd(),
    '```',
    '',
    `Its settings (keys below \`${ref.kind}\`${what === 'transform step' ? ", the step's own key included" : ''}):`,
    '',
    ref.table.trimEnd(),
    '',
    `All settings of a bridge file: [Bridge files](../bridge.md).${guide === undefined ? '' : ` More on it: [the guide](${guide}).`}`,
    '',
  ].join('\n');
}
