import { createRequire } from 'node:module';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';

/** Batch compression a Kafka sink may use; kafkajs has gzip built in, the others are registered here. */
export const COMPRESSIONS = ['none', 'gzip', 'snappy', 'lz4', 'zstd'] as const;
export type Compression = (typeof COMPRESSIONS)[number];

/** kafkajs' codec shape: compress an encoder's buffer, decompress a buffer. */
interface Codec {
  compress(encoder: { buffer: Buffer }): Promise<Buffer>;
  decompress(buffer: Buffer): Promise<Buffer>;
}

const require = createRequire(import.meta.url);
/** kafkajs' table has entries that throw "not implemented" until a codec replaces them. */
const registered = new Set<Compression>();

/**
 * Codec factories, loaded only when a sink is configured with them. snappy: kafkajs-snappy
 * (pure JavaScript, by kafkajs' author); lz4: @2l/kafkajs-lz4 (lz4-napi, prebuilt binaries,
 * no compiler needed); zstd: Node's own zlib (22.15 and later), so no native package at all.
 */
const loaders: Record<Exclude<Compression, 'none' | 'gzip'>, () => () => Codec> = {
  snappy: () => require('kafkajs-snappy') as () => Codec,
  lz4: () => {
    const LZ4Codec = require('@2l/kafkajs-lz4') as new () => { codec: () => Codec };
    return new LZ4Codec().codec;
  },
  zstd: () => {
    if (typeof zlib.zstdCompress !== 'function') throw new Error(`zstd needs Node.js 22.15 or later (this is ${process.version})`);
    const compress = promisify(zlib.zstdCompress);
    const decompress = promisify(zlib.zstdDecompress);
    return () => ({
      compress: async (encoder) => compress(encoder.buffer),
      decompress: async (buffer) => decompress(buffer),
    });
  },
};

/**
 * Returns kafkajs' number for a compression, registering its codec with kafkajs first when
 * kafkajs has none built in. Registration is global to the kafkajs module and done once.
 */
export function useCompression(
  compression: Compression,
  kafkajs: { CompressionTypes: Record<'None' | 'GZIP' | 'Snappy' | 'LZ4' | 'ZSTD', number>; CompressionCodecs: Record<number, () => unknown> },
): number {
  const { CompressionTypes: types, CompressionCodecs: codecs } = kafkajs;
  switch (compression) {
    case 'none':
      return types.None;
    case 'gzip':
      return types.GZIP;
    default: {
      const type = { snappy: types.Snappy, lz4: types.LZ4, zstd: types.ZSTD }[compression];
      if (!registered.has(compression)) {
        try {
          codecs[type] = loaders[compression]();
        } catch (error) {
          throw new Error(
            `compression '${compression}': its codec cannot be loaded (${(error as Error).message}); install Ferry's dependencies again or choose another compression`,
            { cause: error },
          );
        }
        registered.add(compression);
      }
      return type;
    }
  }
}
