import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/**
 * An onRequest hook that requires `Authorization: Bearer <token>` with one
 * of `tokens`. Compares fixed-length hashes in constant time.
 */
export function bearerAuth(tokens: readonly string[]) {
  const accepted = tokens.map(digest);
  return (request: FastifyRequest, reply: FastifyReply, done: () => void): void => {
    const header = request.headers.authorization ?? '';
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    const given = m?.[1] ? digest(m[1]) : undefined;
    if (given && accepted.some((a) => timingSafeEqual(a, given))) {
      done();
      return;
    }
    void reply
      .status(401)
      .header('www-authenticate', 'Bearer realm="vessel"')
      .send({
        code: 'unauthorized',
        message: m
          ? 'bearer token is not valid'
          : 'missing bearer token (Authorization: Bearer <token>)',
      });
  };
}
