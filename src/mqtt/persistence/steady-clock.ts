export { steadyNow } from '../../core/steady-clock.ts';
