/** pg_type oid of `text`. */
const TEXT_OID = 25;

/**
 * A one-dimensional `text[]` in PostgreSQL's binary format (array_recv): a header, then each
 * element's length and UTF-8 bytes, -1 for NULL. pg sends a Buffer parameter as binary. Against
 * the text form (`{"a","b\\"c"}`) nothing is escaped on either side: pg's array literal escapes
 * every element with two regular expressions and the server parses it back, character by
 * character, while here the strings are written once into one buffer.
 */
export function textArray(values: readonly (string | null)[]): Buffer {
  let size = 20;
  let nulls = 0;
  for (const value of values) {
    if (value === null) nulls = 1;
    else size += Buffer.byteLength(value);
    size += 4;
  }
  const buffer = Buffer.allocUnsafe(size);
  buffer.writeInt32BE(1, 0); // dimensions
  buffer.writeInt32BE(nulls, 4); // has NULLs
  buffer.writeInt32BE(TEXT_OID, 8);
  buffer.writeInt32BE(values.length, 12);
  buffer.writeInt32BE(1, 16); // lower bound
  let at = 20;
  for (const value of values) {
    if (value === null) {
      buffer.writeInt32BE(-1, at);
      at += 4;
      continue;
    }
    const length = buffer.write(value, at + 4);
    buffer.writeInt32BE(length, at);
    at += 4 + length;
  }
  return buffer;
}
