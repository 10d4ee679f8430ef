// The API reference (docs/api/): one page per package entry point, made from the declarations
// `npm run build` writes to dist/, so it shows exactly what a project that installs Ferry gets.
// Names an entry point re-exports are shown with their declaration and its doc comment.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

/** Package entry points with their declaration files, from package.json `exports`. */
export function entryPoints(root: string): { name: string; types: string }[] {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { name: string; exports: Record<string, string | { types?: string }> };
  return Object.entries(pkg.exports)
    .filter(([, target]) => typeof target === 'object' && target.types !== undefined)
    .map(([key, target]) => ({ name: key === '.' ? pkg.name : `${pkg.name}/${key.slice(2)}`, types: join(root, (target as { types: string }).types) }));
}

/** Every page by path under docs/api/. */
export function apiPages(root: string): Map<string, string> {
  const entries = entryPoints(root);
  const pages = new Map<string, string>();
  const page = (name: string) => `${name.replace(/^[^/]+\/?/, '') || 'index'}.md`;
  pages.set(
    'README.md',
    [
      '# API reference',
      '',
      'Made from the declarations in dist/ (`npm run docs:api`; a test fails when a page is out of date). The guide: [Ferry as a library](../library.md).',
      '',
      '| import | page |',
      '|---|---|',
      ...entries.map((e) => `| \`${e.name}\` | [${page(e.name)}](${page(e.name)}) |`),
      '',
    ].join('\n'),
  );
  for (const entry of entries) pages.set(page(entry.name), render(entry.name, entry.types));
  return pages;
}

function render(name: string, file: string): string {
  const text = readFileSync(file, 'utf8');
  const own = text
    .split('\n')
    .filter((line) => !/^import /.test(line) && !/^export (type )?\{[^}]*\} from /.test(line) && line !== 'export {};')
    .join('\n')
    .trim();
  const reexported: string[] = [];
  for (const match of text.matchAll(/^export (?:type )?\{([^}]*)\} from '([^']+)';$/gm)) {
    const from = resolve(dirname(file), (match[2] as string).replace(/\.(ts|js)$/, '.d.ts'));
    for (const part of (match[1] as string).split(',')) {
      const id = part.trim().replace(/^type /, '');
      if (id === '') continue;
      reexported.push(declaration(from, id) ?? `// ${id}: declared in ${(match[2] as string).replace(/^\.\//, '')}`);
    }
  }
  return [
    `# ${name}`,
    '',
    '```ts',
    `import { ... } from '${name}';`,
    '```',
    '',
    ...(own === '' ? [] : ['## Declared here', '', '```ts', own, '```', '']),
    ...(reexported.length === 0 ? [] : ['## Also exported', '', '```ts', reexported.join('\n\n'), '```', '']),
  ].join('\n');
}

/** The declaration of `id` in a declaration file, with its doc comment; undefined when it is not declared there. */
function declaration(file: string, id: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const escaped = id.replace(/[$]/g, '\\$');
  const start = new RegExp(`(?:/\\*\\*(?:(?!\\*/)[\\s\\S])*\\*/\\n)?export (?:declare )?(?:abstract )?(?:interface|type|function|class|const|let|enum) ${escaped}\\b`, 'g');
  const found: string[] = [];
  for (const match of text.matchAll(start)) found.push(text.slice(match.index, statementEnd(text, match.index + match[0].length)));
  return found.length === 0 ? undefined : found.join('\n');
}

/** Where the statement going on at `from` ends: a `;` or a closing brace at depth 0 that ends its line. */
function statementEnd(text: string, from: number): number {
  let depth = 0;
  for (let i = from; i < text.length; i++) {
    const c = text[i];
    if (c === '{' || c === '(' || c === '[') depth++;
    else if (c === '}' || c === ')' || c === ']') {
      depth--;
      if (depth === 0 && c === '}' && text[i + 1] === '\n' && !/^\s*[|&=]/.test(text.slice(i + 1, i + 40).split('\n')[1] ?? '')) {
        if (/^(?:\/\*\*[\s\S]*?\*\/\n)?export (?:declare )?(?:abstract )?(?:interface|class|enum) /.test(text.slice(text.lastIndexOf('\nexport', from) + 1))) return i + 1;
      }
    } else if (c === ';' && depth === 0) return i + 1;
  }
  return text.length;
}
