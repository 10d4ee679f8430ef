/** The first line of every generated page: where it comes from, and that edits belong there. */
export function generatedHeader(source: string): string {
  return `<!-- Made by \`npm run docs\` from ${source}; edit those, not this file (a test fails when it is out of date). -->\n`;
}
