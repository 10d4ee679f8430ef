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

/** The payload for a line of output: the text, or `base64:` and the base64. */
export function payloadForLine(payload: Uint8Array): string {
  const { text, encoding } = payloadText(payload);
  return encoding === 'utf8' ? text : `base64:${text}`;
}

export function base64(payload: Uint8Array): string {
  return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('base64');
}
