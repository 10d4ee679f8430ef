// `npm run services`: checks the machine's PostgreSQL/Redis/Mosquitto, starts a throwaway Kafka and
// prints the FERRY_TEST_* exports for running single test files by hand. Runs until Ctrl-C.
import { startKafka } from '../test/harness/kafka.ts';
import { checkService, serviceEnvVar, serviceLabel, testEndpoints, type ServiceName } from '../test/harness/services.ts';

const external: ServiceName[] = ['pg', 'redis', 'mqtt'];
const endpoints = testEndpoints();

const checks = await Promise.all(external.map((name) => checkService(name)));
external.forEach((name, i) => {
  const check = checks[i];
  if (check?.ok) console.error(`ok    ${serviceLabel(name).padEnd(10)} ${endpoints[name]}`);
  else console.error(`FAIL  ${check?.error}`);
});

const kafka = await startKafka({ log: (line) => console.error(line) });

let stopping = false;
async function shutdown(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    console.error('stopping Kafka...');
    await kafka.stop();
  }
  process.exit(code);
}
process.on('SIGINT', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));
void kafka.exited.then((code) => {
  if (stopping) return;
  console.error(`Kafka exited unexpectedly (${code})`);
  void shutdown(1);
});

console.log(`FERRY_TEST_KAFKA=${kafka.bootstrap}`);
console.log('\n# paste into another shell:');
console.log(`export ${serviceEnvVar('kafka')}=${kafka.bootstrap}`);
for (const name of external) console.log(`export ${serviceEnvVar(name)}='${endpoints[name]}'`);
console.error('\nKafka keeps running until Ctrl-C.');
