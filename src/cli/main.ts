// The `ferry` command's entry (bin/ferry.js imports it); the commands are defined in program.ts.
import { createProgram } from './program.ts';

// A reader of the output that went away (`ferry history | head`) ends the command quietly, as it
// ends `cat`, rather than with an EPIPE stack trace. `ferry run` logs through a stream of its own.
// Any other failure (a full disk) is one line and exit 1, unless the command listens for it
// itself (`buffer export` names what it was writing).
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  if (process.stdout.listenerCount('error') > 1) return;
  process.stderr.write(`ferry: cannot write standard output: ${error.message}\n`);
  process.exit(1);
});

await createProgram().parseAsync();
