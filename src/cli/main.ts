// The `ferry` command's entry (bin/ferry.js imports it); the commands are defined in program.ts.
import { createProgram } from './program.ts';

// A reader of the output that went away (`ferry history | head`) ends the command quietly, as it
// ends `cat`, rather than with an EPIPE stack trace. `ferry run` logs through a stream of its own.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') throw error;
  process.exit(0);
});

await createProgram().parseAsync();
