export interface PayloadText {
  readonly text: string;
  readonly encoding: 'utf8' | 'base64';
}

/** A payload as text: itself when it is printable UTF-8, else its base64. */
export function payloadText(payload: Uint8Array): PayloadText {
  const bytes = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const text = bytes.toString('utf8');
  const printable = !/[\u0000-\u0008\u000e-\u001f\ufffd]/.test(text);
  return printable ? { text, encoding: 'utf8' } : { text: bytes.toString('base64'), encoding: 'base64' };
}

/** The payload for a line of output: the text (see `lineText`), or `base64:` and the base64. */
export function payloadForLine(payload: Uint8Array): string {
  const { text, encoding } = payloadText(payload);
  return encoding === 'utf8' ? lineText(text) : `base64:${text}`;
}

/** Control characters (C0, DEL, C1) and the Unicode line and paragraph separators. */
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const SHORT: Readonly<Record<string, string>> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/**
 * Device data (a topic, a client id, a payload) made safe for one line of terminal output:
 * control characters are written as escapes (`\n`, `\u001b`), so a newline cannot forge a
 * line and an escape sequence does not reach the terminal (issue 16, item 8).
 */
export function lineText(text: string): string {
  return text.replace(UNPRINTABLE, (c) => SHORT[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * A JSON line: JSON.stringify escapes C0 control characters but writes DEL, C1 controls (a
 * terminal may take U+009B as CSI) and U+2028/U+2029 as they are; they are escaped here too.
 */
export function jsonLine(value: unknown): string {
  return JSON.stringify(value).replace(UNPRINTABLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export function base64(payload: Uint8Array): string {
  return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('base64');
}
