import { createProgram } from '../../src/cli/program.ts';
import { componentKinds } from '../../src/runtime/registry.ts';
import { cliPage } from './cli-page.ts';
import { configPages, kindIndex } from './config-pages.ts';
import { generatedHeader } from './header.ts';
import { metricsPage } from './metrics-page.ts';

/**
 * Every page of docs/reference/, by its path there, made from the code: the config schemas
 * and component registry, the metrics catalogue and the CLI's definition.
 */
export function referencePages(): Map<string, string> {
  const pages = new Map<string, string>([['README.md', indexPage()], ...configPages(componentKinds), ['metrics.md', metricsPage()], ['cli.md', cliPage(createProgram())]]);
  return new Map([...pages].sort(([a], [b]) => a.localeCompare(b)));
}

function indexPage(): string {
  return [
    generatedHeader('the schemas, the component registry, the metrics catalogue and the CLI definitions in src/'),
    '# Reference',
    '',
    'Made from the code, so it cannot drift from it. The guides around it are in [docs/](../README.md).',
    '',
    '## Config files',
    '',
    '- [Gateway file](gateway.md) (`config/gateway.yaml`)',
    '- [Bridge files](bridge.md) (`bridges/*.yaml`)',
    '- [Device profiles](device.md) (`devices/*.yaml`)',
    '',
    kindIndex(componentKinds),
    '',
    '## Metrics and commands',
    '',
    '- [Metrics](metrics.md): every metric of `/metrics` and `/api/status`, with its type, unit, labels and meaning',
    '- [CLI](cli.md): every `ferry` command and option',
    '',
  ].join('\n');
}
