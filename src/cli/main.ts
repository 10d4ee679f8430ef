// The `ferry` command's entry (bin/ferry.js imports it); the commands are defined in program.ts.
import { createProgram } from './program.ts';

await createProgram().parseAsync();
