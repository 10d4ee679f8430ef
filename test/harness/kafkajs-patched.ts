// Imported before kafkajs by the harness modules that load it: Ferry's replacements of kafkajs
// internals (src/kafka/kafkajs-patches.ts) are then in place, as in `ferry run`, for the clients
// the tests make and the sinks they run in the same process. Some replace modules kafkajs binds
// at its own load (producer/sendMessages): applied after, they would not be used.
import { patchKafkajs } from '../../src/kafka/kafkajs-patches.ts';

patchKafkajs();
