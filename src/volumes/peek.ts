import { Readable } from 'node:stream';

/**
 * Read up to `n` bytes from the start of `input` (fewer only at its end)
 * without switching it to flowing mode. Returns them and the stream to read
 * from instead of `input`: `input` with the bytes put back, or (when it
 * already ended) a stream of just those bytes.
 */
export function peekHead(input: Readable, n: number): Promise<{ head: Buffer; stream: Readable }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const done = (ended: boolean): void => {
      input.off('readable', onReadable);
      input.off('end', onEnd);
      input.off('error', onError);
      const head = Buffer.concat(chunks);
      if (ended) {
        resolve({ head, stream: Readable.from(head.length > 0 ? [head] : []) });
        return;
      }
      if (head.length > 0) input.unshift(head);
      resolve({ head, stream: input });
    };
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while (length < n && (chunk = input.read() as Buffer | null) !== null) {
        chunks.push(chunk);
        length += chunk.length;
      }
      if (length >= n) done(false);
    };
    const onEnd = (): void => done(true);
    const onError = (err: Error): void => {
      input.off('readable', onReadable);
      input.off('end', onEnd);
      reject(err);
    };
    input.on('readable', onReadable);
    input.once('end', onEnd);
    input.once('error', onError);
  });
}
