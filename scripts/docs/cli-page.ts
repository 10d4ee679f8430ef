import type { EventEmitter } from 'node:events';
import type { Command, Option } from 'commander';
import { generatedHeader } from './header.ts';

/** docs/reference/cli.md: every command of `ferry`, its usage, options and help text, from its commander definition. */
export function cliPage(program: Command): string {
  const sections: string[] = [];
  const visit = (command: Command, path: string[]) => {
    sections.push(commandSection(command, path));
    for (const sub of subcommands(command)) visit(sub, [...path, sub.name()]);
  };
  visit(program, [program.name()]);
  return [
    generatedHeader('the command definitions (src/cli/program.ts)'),
    '# CLI reference',
    '',
    'Every command also prints this with `--help`. Run it as `./bin/ferry.js ...` in a checkout, or `npm link` once to have `ferry` on your PATH.',
    '',
    sections.join('\n'),
  ].join('\n');
}

function subcommands(command: Command): Command[] {
  return command.commands.filter((c) => !(c as unknown as { _hidden?: boolean })._hidden);
}

function commandSection(command: Command, path: string[]): string {
  const help = command.createHelp();
  const lines = [`## ${path.join(' ')}`, '', `${sentence(command.description())}`, '', '```', help.commandUsage(command), '```', ''];
  const subs = subcommands(command);
  if (subs.length > 0) {
    lines.push('| command | what it does |', '|---|---|');
    for (const sub of subs) lines.push(`| [${[...path, sub.name()].join(' ')}](#${[...path, sub.name()].join('-')}) | ${escapePipes(sentence(sub.description()))} |`);
    lines.push('');
  }
  const options = help.visibleOptions(command);
  if (options.length > 0) {
    lines.push('| option | description | default |', '|---|---|---|');
    for (const option of options) lines.push(`| \`${help.optionTerm(option)}\` | ${escapePipes(optionText(option))} | ${defaultOf(option)} |`);
    lines.push('');
  }
  const after = afterHelp(command);
  if (after !== '') lines.push('```', after, '```', '');
  return lines.join('\n');
}

function optionText(option: Option): string {
  const parts = [sentence(option.description)];
  if (option.argChoices !== undefined) parts.push(`One of: ${option.argChoices.map((c) => `\`${c}\``).join(', ')}.`);
  if (option.mandatory) parts.push('Required.');
  return parts.join(' ');
}

function defaultOf(option: Option): string {
  if (option.defaultValueDescription !== undefined) return `\`${option.defaultValueDescription}\``;
  if (option.defaultValue === undefined || option.negate) return '';
  return `\`${String(option.defaultValue)}\``;
}

/** The text a command adds after its generated help (`addHelpText('after', ...)`): exit codes, examples. */
function afterHelp(command: Command): string {
  let text = '';
  // addHelpText registers a listener of this event that writes its text (commander's outputHelp emits it).
  (command as unknown as EventEmitter).emit('afterHelp', { error: false, command, write: (s: string) => (text += s) });
  return text.trim();
}

function sentence(text: string): string {
  const trimmed = text.trim();
  if (trimmed === '') return '';
  const capital = `${trimmed[0]?.toUpperCase() ?? ''}${trimmed.slice(1)}`;
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

function escapePipes(text: string): string {
  return text.replace(/\|/g, '\\|');
}
